from __future__ import annotations

from django.db import models


class WorkerState(models.TextChoices):
    IDLE = "idle"
    LOADING = "loading"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


class Worker(models.Model):
    """One run_gpu_worker process: who it is, where, what it holds, and when it last spoke."""

    id = models.CharField(primary_key=True, max_length=64)
    host = models.CharField(max_length=255)
    pid = models.IntegerField()
    device = models.CharField(max_length=255, blank=True)
    loaded_model = models.CharField(max_length=200, blank=True)
    state = models.CharField(max_length=20, choices=WorkerState.choices, default=WorkerState.IDLE)
    started_at = models.DateTimeField(auto_now_add=True)
    heartbeat_at = models.DateTimeField()
    stopped_at = models.DateTimeField(null=True, blank=True)
    # Device status from the last heartbeat (jobs/engine/devices.py): kind gpu/cpu,
    # process memory and, on a GPU, NVML's memory and utilisation.
    stats = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-heartbeat_at"]

    def __str__(self) -> str:
        return f"{self.id} on {self.host}"
