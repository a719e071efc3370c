"""Quotas in the admin: their own list, and inline on each user and group (a group is a team);
what fair share has counted (ShareUsage, WorkerTime), to read.

Loaded by jobs.admin. An empty field falls back to the group's, then to the
BATCHSITE_USER_* setting (jobs.services.quotas resolves them).
"""

from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group
from django.http import HttpRequest

from jobs.models import Quota, ShareUsage, WorkerTime

QUOTA_FIELDS = ("max_queued_batches", "max_queued_requests", "max_stored_bytes", "weight")


@admin.register(Quota)
class QuotaAdmin(admin.ModelAdmin):
    list_display = ["__str__", "user", "group", *QUOTA_FIELDS]
    list_select_related = ["user", "group"]
    search_fields = ["user__username", "group__name"]
    autocomplete_fields = ["user", "group"]
    fields = ("user", "group", *QUOTA_FIELDS)


class _ReadOnly(admin.ModelAdmin):
    """Records the claim path writes and fair share reads: an edit here would change whose
    chunk runs next behind the scheduler's back, and a deleted WorkerTime row would make
    /metrics' batchsite_user_worker_seconds_total go down (it is a counter)."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(ShareUsage)
class ShareUsageAdmin(_ReadOnly):
    # seconds: decayed as of updated_at (half-life BATCHSITE_FAIR_HALF_LIFE_SECONDS).
    list_display = ["user", "seconds", "updated_at"]
    list_select_related = ["user"]
    search_fields = ["user__username"]
    ordering = ["-seconds"]


@admin.register(WorkerTime)
class WorkerTimeAdmin(_ReadOnly):
    list_display = ["user", "seconds", "started_at", "ended_at"]
    list_select_related = ["user"]
    search_fields = ["user__username"]
    list_filter = ["ended_at"]
    date_hierarchy = "ended_at"
    ordering = ["-ended_at"]


class _QuotaInline(admin.StackedInline):
    model = Quota
    max_num = 1
    can_delete = True
    fields = QUOTA_FIELDS
    verbose_name_plural = "quota (empty fields: the group's, then the server's setting)"


class UserQuotaInline(_QuotaInline):
    fk_name = "user"


class GroupQuotaInline(_QuotaInline):
    fk_name = "group"


User = get_user_model()


def _with_inline(model: type, base: type[admin.ModelAdmin], inline: type) -> None:
    """Re-register Django's own admin for ``model`` with the quota inline added."""
    registered = admin.site._registry.get(model)
    parent = type(registered) if registered is not None else base
    if registered is not None:
        admin.site.unregister(model)
    admin.site.register(model, type(parent.__name__, (parent,), {"inlines": [*parent.inlines, inline]}))


_with_inline(User, UserAdmin, UserQuotaInline)
_with_inline(Group, GroupAdmin, GroupQuotaInline)
