from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from jobs.models import ApiKey, Batch, Chunk, File, ModelMeasure, RegisteredModel, Worker

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


@admin.register(Batch)
class BatchAdmin(admin.ModelAdmin):
    list_display = ["id", "status", "model", "endpoint", "total", "completed", "failed", "owner", "created_at"]
    list_filter = ["status", "model", "endpoint"]
    # metadata is JSON: searching its text finds custom keys and values.
    search_fields = ["id", "metadata", "owner__username", "input_file__id"]
    readonly_fields = ["id", "created_at"]
    raw_id_fields = ["input_file", "output_file", "error_file"]
    date_hierarchy = "created_at"
    inlines = [ChunkInline]
    actions = ["cancel_batches"]

    @admin.action(description="Cancel selected batches")
    def cancel_batches(self, request: HttpRequest, queryset: QuerySet[Batch]) -> None:
        from jobs.errors import BatchsiteError
        from jobs.services.batches import cancel_batch

        for batch in queryset:
            try:
                cancel_batch(batch)
            except BatchsiteError as exc:
                self.message_user(request, f"{batch.id}: {exc.message}", messages.WARNING)


@admin.register(Chunk)
class ChunkAdmin(admin.ModelAdmin):
    list_display = ["__str__", "status", "request_count", "worker", "attempts", "claimed_at", "finished_at"]
    list_filter = ["status"]
    search_fields = ["batch__id"]
    raw_id_fields = ["batch", "worker"]


@admin.register(File)
class FileAdmin(admin.ModelAdmin):
    list_display = ["id", "filename", "purpose", "bytes", "owner", "created_at"]
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
    list_display = ["id", "host", "pid", "device", "state", "loaded_model", "scheduler", "heartbeat_at", "started_at"]
    list_filter = ["state", "host"]
    search_fields = ["id", "host"]


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
