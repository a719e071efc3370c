from __future__ import annotations

import math

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

# The batch endpoints, keyed by OpenAI URL, and the kind of model that serves each.
# A chat model serves /v1/responses too: vLLM builds its Responses handler for
# every generating model, beside the chat handler, from the same chat template.
ENDPOINT_KINDS = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "completions",
    "/v1/embeddings": "embeddings",
    "/v1/responses": "chat",
}


def validate_finite(value: float) -> None:
    # The range validators let NaN through (every comparison with it is false).
    if not math.isfinite(value):
        raise ValidationError("Enter a finite number.", code="invalid")


class RegisteredModelQuerySet(models.QuerySet["RegisteredModel"]):
    def enabled(self) -> RegisteredModelQuerySet:
        return self.filter(enabled=True)


class RegisteredModel(models.Model):
    """A model an operator has made available to batches, under its API name."""

    name = models.CharField(max_length=200, unique=True, help_text="API name clients send as body.model")
    source = models.CharField(max_length=500, help_text="Local path or hub id the engine loads")
    endpoints = models.JSONField(default=list, help_text='Endpoint kinds: any of "chat", "completions", "embeddings"')
    engine_options = models.JSONField(default=dict, blank=True, help_text="Passed to vLLM (max_model_len, dtype, ...)")
    enabled = models.BooleanField(default=True)
    # Priors for the queue's estimates until workers have measured the model
    # (jobs/services/scheduling/estimates.py); measurements replace them.
    expected_requests_per_second = models.FloatField(
        null=True,
        blank=True,
        validators=[validate_finite, MinValueValidator(1e-6), MaxValueValidator(1e7)],
        help_text="Requests/s one worker is expected to run, used for ETAs until measured",
    )
    expected_load_seconds = models.FloatField(
        null=True,
        blank=True,
        validators=[validate_finite, MinValueValidator(0), MaxValueValidator(86400)],
        help_text="Seconds a worker is expected to take to load it, used for ETAs until measured",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = RegisteredModelQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def serves(self, endpoint: str) -> bool:
        return ENDPOINT_KINDS.get(endpoint) in self.endpoints

    @property
    def endpoint_urls(self) -> list[str]:
        """The batch endpoints this model serves, as URLs (what /v1/models lists)."""
        return [url for url, kind in ENDPOINT_KINDS.items() if kind in self.endpoints]
