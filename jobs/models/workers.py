from __future__ import annotations

from django.db import models

from jobs.models.clock import ago


class WorkerState(models.TextChoices):
    IDLE = "idle"
    LOADING = "loading"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


class WorkerQuerySet(models.QuerySet["Worker"]):
    def live(self, stale_after: float) -> WorkerQuerySet:
        """Running and heard from within ``stale_after`` seconds, by the database's clock."""
        return self.filter(stopped_at__isnull=True, heartbeat_at__gte=ago(stale_after))


class Worker(models.Model):
    """One run_gpu_worker process: who it is, where, what it holds, and when it last spoke."""

    id = models.CharField(primary_key=True, max_length=64)
    host = models.CharField(max_length=255)
    pid = models.IntegerField()
    device = models.CharField(max_length=255, blank=True)
    loaded_model = models.CharField(max_length=200, blank=True)
    state = models.CharField(max_length=20, choices=WorkerState.choices, default=WorkerState.IDLE)
    # The scheduling policy it claims by, so the queue plan simulates each
    # worker as it really behaves (BATCHSITE_SCHEDULER, or the policy file).
    scheduler = models.CharField(max_length=32, blank=True)
    started_at = models.DateTimeField(auto_now_add=True)
    heartbeat_at = models.DateTimeField()
    stopped_at = models.DateTimeField(null=True, blank=True)
    # Device status from the last heartbeat (jobs/engine/devices.py): kind gpu/cpu,
    # process memory and, on a GPU, NVML's memory and utilisation.
    stats = models.JSONField(default=dict, blank=True)
    # The Ray node it was placed on ("<node ip> <node id prefix>", as `ray list nodes`
    # shows them) when the Ray fleet (jobs/fleet/) started it; blank for a plain worker.
    ray_node = models.CharField(max_length=128, blank=True)

    objects = WorkerQuerySet.as_manager()

    class Meta:
        ordering = ["-heartbeat_at"]

    def __str__(self) -> str:
        return f"{self.id} on {self.host}"


class ModelLoadFailure(models.Model):
    """A worker's failed loads of one model: it backs off from the model until
    ``retry_at``; the same error again and again (or on every live worker)
    fails the model's batch (jobs.services.loads)."""

    worker = models.ForeignKey(Worker, on_delete=models.CASCADE, related_name="load_failures")
    model = models.CharField(max_length=200, help_text="API name of the registered model")
    failures = models.IntegerField(default=0, help_text="Failures in a row with this message")
    message = models.TextField()
    failed_at = models.DateTimeField()
    retry_at = models.DateTimeField(help_text="Database time before which this worker does not claim the model")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["worker", "model"], name="load_failure_unique_worker_model")]

    def __str__(self) -> str:
        return f"{self.model} on {self.worker_id}: {self.failures}"
