"""Small helpers shared by the API views."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db.models import Q, QuerySet
from rest_framework import serializers

from jobs.api.errors import ApiError
from jobs.models.ids import could_be_id
from jobs.services.objects import unix
from jobs.services.safe_json import shown


class UnixTimeField(serializers.Field):
    """Datetimes as integer Unix seconds, as OpenAI's objects carry them."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("read_only", True)
        super().__init__(**kwargs)

    def to_representation(self, value: datetime | None) -> int | None:
        return unix(value)


def bracketed(data: Any, name: str) -> Any:
    """An object field from JSON (``name: {...}``) or from a form, where the openai SDK
    sends it as ``name[key]=value`` fields; None when absent."""
    if name in data:
        return data.get(name)
    prefix = name + "["
    fields = {key[len(prefix) : -1]: data.get(key) for key in data if key.startswith(prefix) and key.endswith("]")}
    return fields or None


def int_param(params: Any, name: str, default: int, low: int, high: int) -> int:
    raw = params.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(
            f"Invalid '{name}': expected an integer, got {shown(raw)}.", param=name, code="invalid_value"
        ) from None
    if not low <= value <= high:
        raise ApiError(
            f"Invalid '{name}': must be between {low} and {high}, got {value}.", param=name, code="invalid_value"
        )
    return value


def cursor_page(
    queryset: QuerySet[Any], after: str | None, limit: int, descending: bool, kind: str
) -> tuple[list[Any], bool]:
    """Cursor pagination by (created_at, id), as OpenAI's list endpoints page.

    The cursor is an object id from the previous page; an unknown cursor is a
    400, not an empty page that would end an SDK's auto-pagination early.
    """
    order = ("-created_at", "-id") if descending else ("created_at", "id")
    queryset = queryset.order_by(*order)
    if after:
        anchor = queryset.filter(pk=after).values("created_at", "id").first() if could_be_id(after) else None
        if anchor is None:
            raise ApiError(f"Invalid 'after': no {kind} with id {shown(after)}.", param="after", code="invalid_value")
        lookup = "lt" if descending else "gt"
        queryset = queryset.filter(
            Q(**{f"created_at__{lookup}": anchor["created_at"]})
            | Q(created_at=anchor["created_at"], **{f"id__{lookup}": anchor["id"]})
        )
    rows = list(queryset[: limit + 1])
    return rows[:limit], len(rows) > limit


def list_body(data: Any, has_more: bool) -> dict[str, Any]:
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    }
