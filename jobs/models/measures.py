from __future__ import annotations

from django.db import models


class ModelMeasure(models.Model):
    """What one model does on one GPU slot (a host's device), measured by the workers running it.

    Keyed by host and device rather than worker id: a worker's id changes at
    every start, the hardware does not. The rates are exponentially weighted
    over chunk completions, so they follow a model's recent work.
    """

    model = models.CharField(max_length=200, help_text="API name of the registered model")
    host = models.CharField(max_length=255)
    device = models.CharField(max_length=255, blank=True)
    requests_per_second = models.FloatField(null=True, blank=True)
    output_tokens_per_second = models.FloatField(null=True, blank=True)
    # The exponentially decayed sums the two rates are the ratios of (see
    # jobs/services/scheduling/estimates.py): work done, and the engine time it took.
    decayed_requests = models.FloatField(default=0)
    decayed_output_tokens = models.FloatField(default=0)
    decayed_seconds = models.FloatField(default=0)
    load_seconds = models.FloatField(null=True, blank=True, help_text="Time to make the model ready, unload included")
    chunks = models.IntegerField(default=0, help_text="Chunk completions measured")
    loads = models.IntegerField(default=0, help_text="Loads measured")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["model", "host", "device"]
        constraints = [models.UniqueConstraint(fields=["model", "host", "device"], name="measure_unique_slot")]

    def __str__(self) -> str:
        return f"{self.model} on {self.host}{':' + self.device if self.device else ''}"
