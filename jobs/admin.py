from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db import models
from django.db.models import QuerySet
from django.http import HttpRequest

from jobs import quota_admin  # noqa: F401  # registers Quota and its user and group inlines
from jobs.models import (
    ApiKey,
    Batch,
    Chunk,
    File,
    ModelLoadFailure,
    ModelMeasure,
    RegisteredModel,
    WebhookAttempt,
    WebhookDelivery,
    Worker,
)
from jobs.webhooks import outbox

CHUNK_FIELDS = (
    "index",
    "status",
    "first_line",
    "request_count",
    "worker",
    "attempts",
    "completed",
    "failed",
    "claimed_at",
    "finished_at",
    "last_error",
)


class ChunkInline(admin.TabularInline):
    model = Chunk
    extra = 0
    can_delete = False
    fields = CHUNK_FIELDS
    readonly_fields = CHUNK_FIELDS
    show_change_link = True


class RenderableJSONField(forms.JSONField):
    """Django's JSON form field, which shows a lone surrogate escaped instead of failing.

    SQLite holds JSON such as {"k": "\\ud800"} (stored before metadata with
    lone surrogates was refused); Django renders it as raw text, which has no
    UTF-8 form, and the change page answered 500 for good.
    """

    def prepare_value(self, value: Any) -> Any:
        text = super().prepare_value(value)
        try:
            text.encode()
        except UnicodeEncodeError:
            return json.dumps(value, ensure_ascii=True, cls=self.encoder)
        return text


def _json_text(value: Any) -> str:
    return "-" if value is None else json.dumps(value, ensure_ascii=True)


@admin.register(Batch)
class BatchAdmin(admin.ModelAdmin):
    """Batches seen, not edited: every field is read-only and none can be added here.

    A batch's status, owner and files are its lifecycle's (``services``):
    a terminal status set by hand would skip ``end_batch`` and so its
    webhook, a new owner would hand the batch and its files to someone
    else. State changes are the actions below, which call the same services
    the API does.
    """

    formfield_overrides = {models.JSONField: {"form_class": RenderableJSONField}}
    list_display = [
        "id",
        "status",
        "priority",
        "model",
        "endpoint",
        "total",
        "completed",
        "failed",
        "owner",
        "created_at",
    ]
    list_filter = ["status", "priority", "model", "endpoint"]
    # metadata is JSON: searching its text finds custom keys and values.
    search_fields = ["id", "metadata", "owner__username", "input_file__id"]
    date_hierarchy = "created_at"
    inlines = [ChunkInline]
    actions = ["cancel_batches", "retry_batches"]

    # Every field read-only; JSON ones through the *_shown methods below.
    readonly_fields = [
        f"{field.name}_shown" if isinstance(field, models.JSONField) else field.name for field in Batch._meta.fields
    ]
    fields = tuple(readonly_fields)

    # Django shows a read-only JSONField with json.dumps(ensure_ascii=False): a lone
    # surrogate (stored before they were refused) has no UTF-8 form and the page
    # would answer 500. Shown escaped instead, as RenderableJSONField does in forms.
    @admin.display(description="errors")
    def errors_shown(self, obj: Batch) -> str:
        return _json_text(obj.errors)

    @admin.display(description="metadata")
    def metadata_shown(self, obj: Batch) -> str:
        return _json_text(obj.metadata)

    @admin.display(description="usage")
    def usage_shown(self, obj: Batch) -> str:
        return _json_text(obj.usage)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # batches come from the API and the pages, through validation

    @admin.action(description="Cancel selected batches (as the API's cancel: the webhook is written)")
    def cancel_batches(self, request: HttpRequest, queryset: QuerySet[Batch]) -> None:
        from jobs.services.batches import cancel_batch

        self._each(request, queryset, cancel_batch, "cancelling or cancelled")

    @admin.action(description="Retry the failed lines of selected batches, as new batches of their owners")
    def retry_batches(self, request: HttpRequest, queryset: QuerySet[Batch]) -> None:
        from jobs.services.retry import retry_batch

        self._each(request, queryset, lambda batch: retry_batch(batch.owner, batch.id), "retried")

    def _each(self, request: HttpRequest, queryset: QuerySet[Batch], act: Any, done: str) -> None:
        from jobs.errors import BatchsiteError

        ok = 0
        for batch in queryset:
            try:
                act(batch)
                ok += 1
            except BatchsiteError as exc:
                self.message_user(request, f"{batch.id}: {exc.message}", messages.WARNING)
        if ok:
            self.message_user(request, f"{ok} batch(es) {done}.", messages.SUCCESS)


@admin.register(Chunk)
class ChunkAdmin(admin.ModelAdmin):
    list_display = ["__str__", "status", "request_count", "worker", "attempts", "claimed_at", "finished_at"]
    list_filter = ["status"]
    search_fields = ["batch__id"]
    raw_id_fields = ["batch", "worker"]


@admin.register(File)
class FileAdmin(admin.ModelAdmin):
    list_display = ["id", "filename", "purpose", "bytes", "owner", "created_at", "expires_at"]
    list_filter = ["purpose"]
    search_fields = ["id", "filename", "owner__username"]
    readonly_fields = ["id", "storage_name", "bytes", "created_at"]


@admin.register(RegisteredModel)
class RegisteredModelAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "source",
        "endpoints",
        "enabled",
        "expected_requests_per_second",
        "expected_load_seconds",
        "created_at",
    ]
    list_filter = ["enabled"]
    search_fields = ["name", "source"]


@admin.register(Worker)
class WorkerAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "host",
        "ray_node",
        "pid",
        "device",
        "state",
        "loaded_model",
        "scheduler",
        "heartbeat_at",
        "started_at",
    ]
    list_filter = ["state", "host"]
    search_fields = ["id", "host", "ray_node"]


@admin.register(ModelLoadFailure)
class ModelLoadFailureAdmin(admin.ModelAdmin):
    """Which worker is backing off from which model, and why (jobs/services/loads.py)."""

    list_display = ["model", "worker", "failures", "failed_at", "retry_at"]
    list_filter = ["model"]
    search_fields = ["model", "worker__id", "message"]
    raw_id_fields = ["worker"]


MEASURE_FIELDS = (
    "model",
    "host",
    "device",
    "requests_per_second",
    "output_tokens_per_second",
    "load_seconds",
    "chunks",
    "loads",
    "updated_at",
)


@admin.register(ModelMeasure)
class ModelMeasureAdmin(admin.ModelAdmin):
    """What the workers measured (the queue plan's rates); deleting a row makes the plan fall back to priors."""

    list_display = MEASURE_FIELDS
    list_filter = ["model", "host"]
    readonly_fields = MEASURE_FIELDS

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ["prefix", "name", "user", "created_at", "last_used_at", "revoked_at"]
    list_filter = ["revoked_at"]
    search_fields = ["prefix", "name", "user__username"]
    readonly_fields = ["prefix", "created_at", "last_used_at"]
    fields = ["user", "name", "prefix", "created_at", "last_used_at", "revoked_at"]

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        if not change:
            raw = obj.set_new_key()
            super().save_model(request, obj, form, change)
            self.message_user(request, f"New API key (shown once, copy it now): {raw}", messages.SUCCESS)
            return
        super().save_model(request, obj, form, change)


ATTEMPT_FIELDS = ("number", "started_at", "duration_ms", "status_code", "error", "response", "sender")


class WebhookAttemptInline(admin.TabularInline):
    model = WebhookAttempt
    extra = 0
    can_delete = False
    fields = ATTEMPT_FIELDS
    readonly_fields = ATTEMPT_FIELDS

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    """The outbox: every event, where it goes, how its attempts went. Nothing to edit; "redeliver now" acts."""

    list_display = ["id", "event_type", "batch", "status", "attempts", "last_status_code", "next_attempt_at", "url"]
    list_filter = ["status", "event_type"]
    search_fields = ["id", "event_id", "batch__id", "url", "batch__owner__username"]
    date_hierarchy = "created_at"
    inlines = [WebhookAttemptInline]
    actions = ["redeliver_now"]
    fields = (
        "id",
        "event_id",
        "event_type",
        "batch",
        "url",
        "status",
        "attempts",
        "created_at",
        "next_attempt_at",
        "give_up_at",
        "delivered_at",
        "last_status_code",
        "last_error",
        "leased_by",
        "leased_until",
        "body",
    )
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # events come from batches ending, never by hand

    @admin.action(description="Redeliver now", permissions=["change"])
    def redeliver_now(self, request: HttpRequest, queryset: QuerySet[WebhookDelivery]) -> None:
        count = outbox.redeliver(list(queryset.values_list("pk", flat=True)))
        self.message_user(request, f"{count} event(s) will be sent again within seconds.", messages.SUCCESS)
