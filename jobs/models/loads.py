from __future__ import annotations

from django.db import models
from django.utils import timezone


class ModelLoad(models.Model):
    """One model made ready on a worker: when, where, how long it took, what it replaced.

    Rows are only ever added, so counting them gives Prometheus counters and
    histograms that never go down (GET /metrics reads them; jobs/services/metrics.py).
    """

    worker_id = models.CharField(max_length=64, help_text="The run_gpu_worker process that loaded it")
    host = models.CharField(max_length=255)
    device = models.CharField(max_length=255, blank=True)
    model = models.CharField(max_length=200, help_text="API name of the registered model")
    replaced = models.CharField(
        max_length=200, blank=True, help_text="The model unloaded to make room (a swap); blank on a first load"
    )
    seconds = models.FloatField(help_text="Unload of the previous model plus load of this one")
    loaded_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-loaded_at"]

    def __str__(self) -> str:
        return f"{self.model} on {self.worker_id} ({self.seconds:.1f}s)"

    @property
    def is_swap(self) -> bool:
        return bool(self.replaced) and self.replaced != self.model
