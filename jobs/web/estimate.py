"""The submit page's "Estimate first": store the file, estimate it, and show the numbers
with a confirm button that creates the batch from the stored file (no second upload)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from django.http import HttpRequest, HttpResponse

from jobs.errors import BatchsiteError
from jobs.services import estimate as estimate_service
from jobs.services import files as file_service
from jobs.web.forms import SubmitForm


def _when(ts: int | None) -> datetime | None:
    return datetime.fromtimestamp(ts, tz=UTC) if ts is not None else None


def estimate_page(request: HttpRequest, form: SubmitForm, page: Callable[..., HttpResponse]) -> HttpResponse:
    data = form.cleaned_data
    try:
        if data["file"]:
            stored = file_service.store_upload(request.user, data["file"], "batch")
            file_id, filename = stored.id, stored.filename
        else:
            file_id = data["input_file_id"]
            filename = file_service.get_owned_file(request.user, file_id, "input_file_id").filename
        estimate: dict[str, Any] = estimate_service.estimate(
            request.user,
            file_id,
            data["endpoint"] or None,
            data["model"] or None,
            "skip" if data.get("skip_invalid") else "fail",
        )
    except BatchsiteError as exc:
        status = form.add_service_error(exc)
        return page(request, form, status=status)
    # The confirm form carries the user's choices and the stored file, not the upload.
    confirm = SubmitForm({**request.POST.dict(), "input_file_id": file_id}, models=list(form.models.values()))
    confirm.is_valid()
    return page(
        request,
        confirm,
        estimate=estimate,
        estimate_file=filename,
        estimate_start=_when(estimate["estimated_start_time"]),
        estimate_end=_when(estimate["estimated_completion_time"]),
    )
