from jobs.models.batches import (
    ACTIVE_STATUSES,
    TERMINAL_STATUSES,
    Batch,
    BatchStatus,
    Chunk,
    ChunkStatus,
    Priority,
)
from jobs.models.counters import Counter
from jobs.models.files import File, FilePurpose
from jobs.models.keys import ApiKey
from jobs.models.loads import ModelLoad
from jobs.models.measures import ModelMeasure
from jobs.models.quotas import Quota, ShareUsage, WorkerTime
from jobs.models.registry import ENDPOINT_KINDS, RegisteredModel
from jobs.models.webhooks import DeliveryStatus, WebhookAttempt, WebhookDelivery, WebhookSecret
from jobs.models.workers import ModelLoadFailure, Worker, WorkerState

__all__ = [
    "ACTIVE_STATUSES",
    "ENDPOINT_KINDS",
    "TERMINAL_STATUSES",
    "ApiKey",
    "Batch",
    "BatchStatus",
    "Chunk",
    "ChunkStatus",
    "Counter",
    "DeliveryStatus",
    "File",
    "FilePurpose",
    "ModelLoad",
    "ModelLoadFailure",
    "ModelMeasure",
    "Priority",
    "Quota",
    "RegisteredModel",
    "ShareUsage",
    "WebhookAttempt",
    "WebhookDelivery",
    "WebhookSecret",
    "Worker",
    "WorkerState",
    "WorkerTime",
]
