"""The pages' forms. They check shapes and sizes; the services decide everything else."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django import forms
from django.conf import settings
from django.core.validators import URLValidator

from jobs.errors import BatchsiteError, LimitReached, TooLarge
from jobs.models import ENDPOINT_KINDS, BatchStatus, RegisteredModel
from jobs.services import batches as batch_service
from jobs.services.batches import BatchRequest
from jobs.services.webhook_urls import MAX_URL_LENGTH

METADATA_PAIRS = 16  # OpenAI's limit on metadata keys

# Which form field a service error is about, by its OpenAI ``param``.
_PARAM_FIELDS = {
    "model": "model",
    "body.model": "model",
    "endpoint": "endpoint",
    "completion_window": "completion_window",
    "webhook_url": "webhook_url",
    "file": "file",
    "input_file_id": "file",
    "purpose": "file",
    "priority": "priority",
}


_ENDPOINT_LABELS = {
    "/v1/chat/completions": "Chat completions",
    "/v1/completions": "Completions",
    "/v1/embeddings": "Embeddings",
    "/v1/responses": "Responses",
}


def endpoint_label(url: str) -> str:
    return _ENDPOINT_LABELS.get(url, url)


def model_groups(entries: Iterable[RegisteredModel]) -> list[tuple[str, list[tuple[str, str]]]]:
    """Models grouped by the endpoints they serve, for the dropdown's <optgroup>s."""
    groups: dict[str, list[tuple[str, str]]] = {}
    for entry in entries:
        kinds = [kind for kind in ("chat", "completions", "embeddings") if kind in entry.endpoints]
        label = " and ".join(kind.capitalize() for kind in kinds) or "No endpoint"
        groups.setdefault(label, []).append((entry.name, entry.name))
    return sorted(groups.items())


class SubmitForm(forms.Form):
    # One of the two: a file chosen now, or the one an estimate stored (the confirm step).
    file = forms.FileField(label="JSONL file", allow_empty_file=True, required=False)
    input_file_id = forms.CharField(required=False, max_length=64, widget=forms.HiddenInput)
    model = forms.ChoiceField(label="Model")
    endpoint = forms.ChoiceField(label="Endpoint", required=False)
    completion_window = forms.ChoiceField(label="Completion window")
    webhook_url = forms.URLField(
        label="Webhook URL",
        required=False,
        max_length=MAX_URL_LENGTH,
        assume_scheme="https",
        validators=[URLValidator(schemes=["http", "https"])],
        help_text="Optional: we POST the batch there when it ends.",
    )
    priority = forms.ChoiceField(
        label="Priority", required=False, help_text="Orders your own batches: higher first, then in submit order."
    )

    skip_invalid = forms.BooleanField(
        label="Run the valid lines",
        required=False,
        help_text="Bad lines go to the error file (counted as failed) instead of failing the whole batch.",
    )

    def __init__(self, *args: Any, models: list[RegisteredModel], high: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # high only for staff and jobs.high_priority (quotas.may_use_high_priority).
        self._choices("priority", [("low", "Low"), ("normal", "Normal"), *([("high", "High")] if high else [])])
        self.fields["priority"].initial = "normal"
        self.models = {entry.name: entry for entry in models}
        self._choices("model", [("", "Choose a model…"), *model_groups(models)])
        endpoints = [(url, endpoint_label(url)) for url in ENDPOINT_KINDS]
        self._choices("endpoint", [("", "From the file's lines"), *endpoints])
        windows = settings.BATCHSITE.completion_windows
        self._choices("completion_window", [(w, w) for w in windows])
        self.fields["completion_window"].initial = windows[0]
        for i in range(METADATA_PAIRS):
            self.fields[f"meta_key_{i}"] = forms.CharField(required=False, max_length=64, label=f"Key {i + 1}")
            self.fields[f"meta_value_{i}"] = forms.CharField(
                required=False, max_length=512, strip=False, label=f"Value {i + 1}"
            )

    def _choices(self, name: str, choices: list[Any]) -> None:
        field = self.fields[name]
        assert isinstance(field, forms.ChoiceField)
        field.choices = choices

    def model_endpoints(self) -> dict[str, list[str]]:
        """For the page's script: which endpoint URLs each model serves."""
        return {name: entry.endpoint_urls for name, entry in self.models.items()}

    def metadata_rows(self) -> list[tuple[Any, Any, bool]]:
        """(key field, value field, shown) per pair: the filled ones and one empty, at least three."""
        rows = [(self[f"meta_key_{i}"], self[f"meta_value_{i}"]) for i in range(METADATA_PAIRS)]
        filled = [i for i, (k, v) in enumerate(rows) if (k.value() or "") or (v.value() or "")]
        shown = max(3, (filled[-1] + 2) if filled else 0)
        return [(k, v, i < shown) for i, (k, v) in enumerate(rows)]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if not data.get("file") and not data.get("input_file_id"):
            # Django's own wording, as when the field was required.
            self.add_error("file", forms.Field.default_error_messages["required"])
        metadata: dict[str, str] = {}
        for i in range(METADATA_PAIRS):
            key, value = data.get(f"meta_key_{i}") or "", data.get(f"meta_value_{i}") or ""
            if not key and not value:
                continue
            if not key:
                self.add_error(f"meta_key_{i}", "A metadata value needs a key.")
            elif key in metadata:
                self.add_error(f"meta_key_{i}", f"The key {key!r} is used twice.")
            else:
                metadata[key] = value
        try:
            data["metadata"] = batch_service.check_metadata(metadata or None)
        except BatchsiteError as exc:
            self.add_error(None, exc.message)
        return data

    def batch_request(self) -> BatchRequest:
        data = self.cleaned_data
        return BatchRequest(
            endpoint=data["endpoint"] or None,
            completion_window=data["completion_window"],
            metadata=data["metadata"],
            model=data["model"],
            webhook_url=data["webhook_url"] or "",
            invalid_lines="skip" if data.get("skip_invalid") else "fail",
        )

    def add_service_error(self, exc: BatchsiteError) -> int:
        """Show a service's refusal next to the field it names, else above the form; the page's status."""
        self.add_error(_PARAM_FIELDS.get(exc.param or ""), exc.message)
        return 413 if isinstance(exc, TooLarge) else 429 if isinstance(exc, LimitReached) else 400


class KeyForm(forms.Form):
    name = forms.CharField(label="Name", max_length=100, required=False, help_text="To tell your keys apart.")


STATUS_CHOICES = [("", "Any status"), *BatchStatus.choices]


class BatchFilterForm(forms.Form):
    status = forms.ChoiceField(choices=STATUS_CHOICES, required=False)
    everyone = forms.BooleanField(required=False, label="All users' batches")
