"""Template filters for the pages (``{% load web %}``): times, durations, rates, sizes.

Times are rendered as ``<time>`` elements in UTC; static/web/app.js rewrites
them in the viewer's local time zone and puts the absolute time in the
tooltip, so the server never has to guess the viewer's zone.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django import template
from django.utils.html import format_html
from django.utils.safestring import SafeString

register = template.Library()


def _as_datetime(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, tz=UTC)
    return None


@register.filter
def timetag(value: Any, mode: str = "datetime") -> SafeString | str:
    """``<time>`` for a datetime or Unix seconds; ``mode`` is datetime, seconds, relative or time."""
    moment = _as_datetime(value)
    if moment is None:
        return "—"
    utc = moment.astimezone(UTC)
    return format_html(
        '<time datetime="{}" data-mode="{}" title="{}">{}</time>',
        utc.isoformat().replace("+00:00", "Z"),
        mode,
        utc.strftime("%Y-%m-%d %H:%M:%S UTC"),
        utc.strftime("%Y-%m-%d %H:%M UTC"),
    )


@register.filter
def duration(seconds: Any) -> str:
    """2 h 05 min, 3 min 07 s, 12 s."""
    if seconds is None:
        return "—"
    total = max(int(seconds), 0)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"


@register.filter
def rate(per_second: Any) -> str:
    """Requests per second, or per minute when slower than one a second."""
    if per_second is None:
        return "—"
    value = float(per_second)
    if value >= 1:
        return f"{value:,.1f}/s"
    return f"{value * 60:,.1f}/min"


@register.filter
def iec_bytes(value: Any) -> str:
    """Memory sizes: 512 MiB, 7.1 GiB."""
    if value is None or value == "":
        return "—"
    number = int(value)
    if number >= 2**30:
        return f"{number / 2**30:,.1f} GiB"
    return f"{number / 2**20:,.0f} MiB"


@register.filter
def percent(value: Any) -> str:
    if value is None:
        return "—"
    number = float(value)
    return f"{number:.0f}%" if number in (0.0, 100.0) else f"{number:.1f}%"


@register.filter
def get(mapping: Any, key: str) -> Any:
    """``mapping|get:"key"``, for keys a template cannot spell (or may be missing)."""
    if isinstance(mapping, dict):
        return mapping.get(key)
    return None


@register.filter
def words(value: Any) -> str:
    """``in_progress`` → ``in progress``."""
    return str(value).replace("_", " ")
