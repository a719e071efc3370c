from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from jobs.models.files import File
from jobs.models.ids import new_batch_id


class BatchStatus(models.TextChoices):
    # OpenAI's values only, so SDK polling loops (which test for these) behave.
    VALIDATING = "validating"
    FAILED = "failed"
    IN_PROGRESS = "in_progress"
    FINALIZING = "finalizing"
    COMPLETED = "completed"
    EXPIRED = "expired"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"


ACTIVE_STATUSES = (
    BatchStatus.VALIDATING,
    BatchStatus.IN_PROGRESS,
    BatchStatus.FINALIZING,
    BatchStatus.CANCELLING,
)
TERMINAL_STATUSES = (
    BatchStatus.FAILED,
    BatchStatus.COMPLETED,
    BatchStatus.EXPIRED,
    BatchStatus.CANCELLED,
)


class Priority(models.IntegerChoices):
    # An extension: orders a user's own batches (higher first, then FIFO).
    LOW = -1, "low"
    NORMAL = 0, "normal"
    HIGH = 1, "high"


class BatchQuerySet(models.QuerySet["Batch"]):
    def owned_by(self, user: object) -> BatchQuerySet:
        return self.filter(owner=user)

    def shown_as(self, status: str) -> BatchQuerySet:
        """The batches whose ``shown_status`` is ``status`` (a cancelled batch being finalized
        shows ``cancelling``)."""
        cancelled_finalizing = Q(status=BatchStatus.FINALIZING, cancelling_at__isnull=False)
        if status == BatchStatus.CANCELLING:
            return self.filter(Q(status=status) | cancelled_finalizing)
        if status == BatchStatus.FINALIZING:
            return self.filter(status=status).exclude(cancelled_finalizing)
        return self.filter(status=status)

    def active(self) -> BatchQuerySet:
        """Accepted and not yet finished: what counts against the queue limits."""
        return self.filter(status__in=ACTIVE_STATUSES)

    def terminal(self) -> BatchQuerySet:
        return self.filter(status__in=TERMINAL_STATUSES)

    def in_queue_order(self) -> BatchQuerySet:
        return self.order_by("created_at", "id")


class Batch(models.Model):
    id = models.CharField(primary_key=True, max_length=64, default=new_batch_id, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="batches")
    endpoint = models.CharField(max_length=64)
    model = models.CharField(max_length=200, help_text="API name of the registered model")
    # Files keep their ids on the batch after a user deletes them, as OpenAI's
    # batches do, hence no database constraint and no cascade.
    input_file = models.ForeignKey(File, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+")
    output_file = models.ForeignKey(
        File, on_delete=models.DO_NOTHING, db_constraint=False, null=True, blank=True, related_name="+"
    )
    error_file = models.ForeignKey(
        File, on_delete=models.DO_NOTHING, db_constraint=False, null=True, blank=True, related_name="+"
    )
    completion_window = models.CharField(max_length=16, default="24h")
    # high: staff, or the jobs.high_priority permission (jobs.services.quotas).
    priority = models.SmallIntegerField(choices=Priority.choices, default=Priority.NORMAL)
    status = models.CharField(max_length=20, choices=BatchStatus.choices, default=BatchStatus.VALIDATING)
    # Set on a batch that has not ended yet, it is failing (its model will not
    # load): nothing more of it is claimed, and its finalize ends it failed.
    errors = models.JSONField(null=True, blank=True)
    metadata = models.JSONField(null=True, blank=True)
    # The batch this one retries (POST /v1/batches/{id}/retry): kept here, not only in
    # metadata, so a batch whose owner used all 16 metadata keys can still be retried.
    retry_of = models.CharField(max_length=64, null=True, blank=True)
    usage = models.JSONField(null=True, blank=True)
    webhook_url = models.URLField(max_length=2048, blank=True)
    # OpenAI's output_expires_after: the output and error files expire this many
    # seconds after they are created. None: they are kept until deleted.
    output_expires_after = models.IntegerField(null=True, blank=True)
    # The worker assembling the output; another takes over if it goes silent.
    # Null while the API assembles it (a cancel of a batch that never ran, or
    # an expiry with no worker): then ``finalize_started_at`` is its lease.
    finalizer = models.ForeignKey("jobs.Worker", on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    finalize_started_at = models.DateTimeField(null=True, blank=True, help_text="Database time the last finalize began")
    finalize_attempts = models.IntegerField(default=0, help_text="Finalizes that raised; at the limit the batch fails")
    finalize_error = models.TextField(blank=True)

    total = models.IntegerField(default=0)
    completed = models.IntegerField(default=0)
    failed = models.IntegerField(default=0)

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    in_progress_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True, help_text="When a worker first claimed it")
    expires_at = models.DateTimeField(null=True, blank=True)
    finalizing_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    failed_at = models.DateTimeField(null=True, blank=True)
    expired_at = models.DateTimeField(null=True, blank=True)
    cancelling_at = models.DateTimeField(null=True, blank=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)

    objects = BatchQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "batches"
        permissions = [("high_priority", "Can submit batches with priority high")]
        indexes = [
            models.Index(fields=["owner", "created_at"]),
            models.Index(fields=["status", "created_at"]),
        ]

    def __str__(self) -> str:
        return self.id

    @property
    def shown_status(self) -> str:
        """The status users see. A cancelled batch's results are assembled under ``finalizing``
        (the same finalize as any batch), but OpenAI's lifecycle goes from ``cancelling``
        straight to ``cancelled``, so that is what the API and the pages show meanwhile."""
        if self.status == BatchStatus.FINALIZING and self.cancelling_at is not None:
            return str(BatchStatus.CANCELLING)
        return str(self.status)

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def progress_percent(self) -> float:
        if not self.total:
            return 100.0 if self.status == BatchStatus.COMPLETED else 0.0
        return round(100.0 * (self.completed + self.failed) / self.total, 2)

    def mark_cancelling(self) -> None:
        self.status = BatchStatus.CANCELLING
        self.cancelling_at = timezone.now()
        self.save(update_fields=["status", "cancelling_at"])


class ChunkStatus(models.TextChoices):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


class ChunkQuerySet(models.QuerySet["Chunk"]):
    def pending(self) -> ChunkQuerySet:
        return self.filter(status=ChunkStatus.PENDING)

    def running(self) -> ChunkQuerySet:
        return self.filter(status=ChunkStatus.RUNNING)

    def unfinished(self) -> ChunkQuerySet:
        return self.filter(status__in=(ChunkStatus.PENDING, ChunkStatus.RUNNING))

    def in_queue_order(self) -> ChunkQuerySet:
        return self.order_by("batch__created_at", "batch_id", "index")


class Chunk(models.Model):
    """A contiguous run of a batch's input lines: the unit a worker claims.

    The byte range lets a worker seek straight to its lines instead of reading
    the input file from the start.
    """

    batch = models.ForeignKey(Batch, on_delete=models.CASCADE, related_name="chunks")
    index = models.IntegerField()
    first_line = models.IntegerField(help_text="1-based line number of the chunk's first line in the input")
    start_byte = models.BigIntegerField()
    end_byte = models.BigIntegerField()
    request_count = models.IntegerField()
    status = models.CharField(max_length=20, choices=ChunkStatus.choices, default=ChunkStatus.PENDING)
    worker = models.ForeignKey("jobs.Worker", on_delete=models.SET_NULL, null=True, blank=True)
    attempts = models.IntegerField(default=0)
    claimed_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    completed = models.IntegerField(default=0)
    failed = models.IntegerField(default=0)
    usage = models.JSONField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    # The code its unrun lines get in the error file when it FAILED (blank:
    # request_failed), e.g. model_load_failed.
    error_code = models.CharField(max_length=64, blank=True)
    # Fencing token: raised by every claim, never lowered, and part of the name
    # of the part a claim writes, so a worker that lost the chunk can neither
    # overwrite the winner's part nor mark the chunk as its own.
    fence = models.IntegerField(default=0)
    # The parts that hold this chunk's results, as jobs.services.parts.Part
    # dicts: one per claim that finished lines (a chunk handed back on SIGTERM
    # keeps the part of the lines it finished, the next claim runs the rest).
    parts = models.JSONField(default=list, blank=True)
    # What /metrics counted for this chunk when it first ended (services/counters.ended_figures),
    # kept once finalize changed it (a lost part sent it back): from then on /metrics counts
    # these instead of its current counts, so the counters never fall and a rerun's lines are
    # not counted a second time (issue 20 item 4). NULL for a chunk never sent back.
    counted = models.JSONField(null=True, blank=True)

    objects = ChunkQuerySet.as_manager()

    class Meta:
        ordering = ["batch", "index"]
        constraints = [models.UniqueConstraint(fields=["batch", "index"], name="chunk_unique_index")]
        indexes = [models.Index(fields=["status", "batch", "index"])]

    def __str__(self) -> str:
        return f"{self.batch_id}#{self.index}"
