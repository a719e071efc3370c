from __future__ import annotations

from django.db import models


class Counter(models.Model):
    """A number that only ever rises (Prometheus counters on GET /metrics that no rerun,
    send-back or deleted row can make fall): added to with ``value = value + n`` in one
    UPDATE (jobs/services/counters.py), never recomputed from other rows."""

    name = models.CharField(max_length=300, primary_key=True, help_text="metric|label|label")
    value = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.name} = {self.value}"
