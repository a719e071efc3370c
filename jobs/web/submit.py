"""The submit page: a JSONL file, a model, an endpoint; the batch is created by the API's own service."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from jobs.errors import BatchsiteError
from jobs.models import Batch, BatchStatus
from jobs.services import batches as batch_service
from jobs.services import quotas
from jobs.services.registry import enabled_models
from jobs.web.estimate import estimate_page
from jobs.web.forms import SubmitForm
from jobs.web.middleware import csrf_rejection, parses_own_body, read_body

LINE_ERRORS_SHOWN = 20
# validation.ValidationResult.errors_object ends a capped list with this entry,
# whose message starts with how many errors it leaves out.
_HIDDEN = re.compile(r"^(\d+) more errors")


def line_errors(errors: Any, shown: int = LINE_ERRORS_SHOWN) -> tuple[list[dict[str, Any]], int]:
    """The first ``shown`` validation errors of a failed batch, and how many there are in all."""
    data = [e for e in (errors or {}).get("data") or [] if isinstance(e, dict)]
    listed = [e for e in data if e.get("code") != "too_many_errors"]
    total = len(listed)
    for entry in data:
        match = _HIDDEN.match(str(entry.get("message", ""))) if entry.get("code") == "too_many_errors" else None
        if match:
            total += int(match.group(1))
    return listed[:shown], total


def _page(request: HttpRequest, form: SubmitForm, status: int = 200, **extra: Any) -> HttpResponse:
    context = {
        "form": form,
        "max_upload_bytes": settings.BATCHSITE.max_upload_bytes,
        "max_requests": settings.BATCHSITE.max_requests_per_batch,
        "model_endpoints": form.model_endpoints(),
        "quota_rows": quotas.usage_rows(request.user),
        **extra,
    }
    return render(request, "web/submit.html", context, status=status)


def _high(request: HttpRequest) -> bool:
    return quotas.may_use_high_priority(request.user)


def _initial(request: HttpRequest, models: list[Any]) -> dict[str, Any]:
    """A model named in the query (?model=...) or the only one there is, pre-selected."""
    names = [m.name for m in models]
    wanted = request.GET.get("model", "")
    if wanted in names:
        return {"model": wanted}
    return {"model": names[0]} if len(names) == 1 else {}


@parses_own_body
@login_required
def submit(request: HttpRequest) -> HttpResponse:
    models = enabled_models()
    if request.method != "POST":
        return _page(request, SubmitForm(models=models, high=_high(request), initial=_initial(request, models)))
    # The body is read here rather than by CsrfViewMiddleware, so that a file
    # past the upload limit is shown on this page; CSRF is checked right after.
    refused = read_body(request)
    if refused is not None:
        message, status = refused
        form = SubmitForm(models=models, high=_high(request))
        return _page(request, form, status=status, refusal=message)
    rejection = csrf_rejection(request)
    if rejection is not None:
        return rejection
    form = SubmitForm(request.POST, request.FILES, models=models, high=_high(request))
    if not form.is_valid():
        return _page(request, form, status=400)
    if request.POST.get("action") == "estimate":
        return estimate_page(request, form, _page)
    data, req = form.cleaned_data, form.batch_request()
    try:
        # The form offers high only to those allowed; the service decides all the same.
        priority = quotas.parse_priority(data["priority"] or None, request.user)
        req = replace(req, priority=priority)
        if data["file"]:
            batch = batch_service.create_batch_from_upload(request.user, data["file"], req)
        else:  # confirmed after an estimate: the file it stored
            batch = batch_service.create_batch(request.user, data["input_file_id"], req)
    except BatchsiteError as exc:
        status = form.add_service_error(exc)
        return _page(request, form, status=status)
    if batch.status == BatchStatus.FAILED:
        return _failed(request, form, batch)
    return redirect("batch", batch_id=batch.id)


def _failed(request: HttpRequest, form: SubmitForm, batch: Batch) -> HttpResponse:
    """Validation refused the file: the lines named on the form, which keeps the user's choices."""
    shown, total = line_errors(batch.errors)
    return _page(request, form, status=400, failed_batch=batch, line_errors=shown, error_total=total)
