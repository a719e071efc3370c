"""The models users may run: one list for GET /v1/models and the submit page's dropdown."""

from __future__ import annotations

from jobs.models import RegisteredModel


def enabled_models() -> list[RegisteredModel]:
    """Every model an operator enabled, by name: exactly what /v1/models lists."""
    return list(RegisteredModel.objects.enabled().order_by("name"))
