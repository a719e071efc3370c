"""The batch page (live while the batch runs), its cancel and downloads, and the list of batches."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from jobs.errors import BatchsiteError, NotFound
from jobs.models import Batch, BatchStatus, ChunkStatus
from jobs.services import access, partial, scheduling
from jobs.services import files as file_service
from jobs.services import retry as retry_service
from jobs.services.objects import batch_object
from jobs.web.decorators import login_required_live
from jobs.web.forms import BatchFilterForm
from jobs.web.submit import line_errors

log = logging.getLogger(__name__)

PAGE_SIZE = 25
CANCELLABLE = (BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS)

# The timeline, in the order things happen, with the words the page uses.
TIMELINE = (
    ("created_at", "Created"),
    ("in_progress_at", "Queued"),
    ("started_at", "Started by a worker"),
    ("cancelling_at", "Cancel requested"),
    ("finalizing_at", "Finalizing"),
    ("completed_at", "Completed"),
    ("failed_at", "Failed"),
    ("expired_at", "Expired"),
    ("cancelled_at", "Cancelled"),
)


def _visible(request: HttpRequest, batch_id: str) -> Batch:
    try:
        return access.get_visible_batch(request.user, batch_id)
    except NotFound as exc:
        raise Http404(exc.message) from None


def _moment(unix: int | None) -> datetime | None:
    return datetime.fromtimestamp(unix, tz=UTC) if unix is not None else None


def batch_context(request: HttpRequest, batch: Batch) -> dict[str, Any]:
    obj = batch_object(batch)
    timeline = [(label, _moment(obj.get(name))) for name, label in TIMELINE if obj.get(name) is not None]
    shown, total = line_errors(batch.errors)
    return {
        "batch": batch,
        "obj": obj,
        "timeline": timeline,
        "expires_at": _moment(obj["expires_at"]),
        "eta": _moment(obj["estimated_completion_time"]),
        "line_errors": shown,
        "error_total": total,
        "can_cancel": batch.status in CANCELLABLE,
        # Retrying makes a batch of the owner's: offered to the owner, on a batch with lines to rerun.
        "can_retry": batch.is_terminal and batch.error_file_id is not None and batch.owner_id == request.user.pk,
        "retry_filters": retry_service.FILTERS,
        "is_other_users": batch.owner_id != request.user.pk,
        "live": not batch.is_terminal,
        # The event is sent after the batch ends: keep following it until it has gone out.
        "poll": not batch.is_terminal or obj.get("webhook_status") == "pending",
        "webhook_status": obj.get("webhook_status"),
    }


@login_required
def batch_detail(request: HttpRequest, batch_id: str) -> HttpResponse:
    batch = _visible(request, batch_id)
    return render(request, "web/batch.html", batch_context(request, batch))


@login_required_live("batch")
def batch_live(request: HttpRequest, batch_id: str) -> HttpResponse:
    """The part of the batch page that changes, for its periodic refresh (htmx)."""
    batch = _visible(request, batch_id)
    return render(request, "web/_batch_live.html", batch_context(request, batch))


@require_POST
@login_required
def batch_cancel(request: HttpRequest, batch_id: str) -> HttpResponse:
    try:
        batch = access.cancel_visible_batch(request.user, batch_id)
    except NotFound as exc:
        raise Http404(exc.message) from None
    except BatchsiteError as exc:
        messages.error(request, exc.message)
    else:
        if batch.status == BatchStatus.CANCELLED:
            messages.success(request, "The batch is cancelled.")
        elif batch.chunks.filter(status=ChunkStatus.RUNNING).exists():
            messages.success(request, "Cancelling: the requests already running finish, the rest are skipped.")
        else:
            # Nothing was running: no request finishes, the batch ends on the housekeeper's next pass.
            messages.success(request, "Cancelling: none of its requests had started; it ends in a moment.")
    return redirect("batch", batch_id=batch_id)


@require_POST
@login_required
def batch_retry(request: HttpRequest, batch_id: str) -> HttpResponse:
    """A new batch of the lines in this batch's error file (the same service as POST /v1/batches/{id}/retry)."""
    try:
        retried = retry_service.retry_batch(request.user, batch_id, request.POST.get("filter", "all"))
    except NotFound as exc:
        raise Http404(exc.message) from None
    except BatchsiteError as exc:
        messages.error(request, exc.message)
        return redirect("batch", batch_id=batch_id)
    messages.success(request, f"Retrying {retried.total} lines of {batch_id} in this new batch.")
    return redirect("batch", batch_id=retried.id)


@login_required
def batch_download(request: HttpRequest, batch_id: str, kind: str) -> FileResponse:
    try:
        file = access.batch_file(request.user, batch_id, kind)
        content = file_service.open_content(file)
    except BatchsiteError as exc:
        raise Http404(exc.message) from None
    except FileNotFoundError:
        # The row outlived its bytes (storage lost or cleaned by hand): say so, do not crash.
        log.warning("file %s of batch %s has no stored content at %s", file.id, batch_id, file.storage_name)
        raise Http404(f"The contents of {file.id} are no longer stored.") from None
    return FileResponse(
        content,
        content_type="application/jsonl",
        as_attachment=True,
        filename=file.filename,
    )


@login_required
def batch_results(request: HttpRequest, batch_id: str, kind: str) -> StreamingHttpResponse:
    """Results so far while the batch runs (the same service as GET /v1/batches/{id}/results)."""
    if kind not in partial.FILES:
        raise Http404("No such results.")
    batch = _visible(request, batch_id)
    response = StreamingHttpResponse(partial.lines(batch, kind), content_type="application/jsonl")
    response["Content-Disposition"] = f'attachment; filename="{partial.download_name(batch, kind)}"'
    return response


@login_required
def batch_list(request: HttpRequest) -> HttpResponse:
    form = BatchFilterForm(request.GET or None)
    status, everyone = "", False
    if form.is_bound and form.is_valid():
        status, everyone = form.cleaned_data["status"], form.cleaned_data["everyone"]
    rows = access.visible_batches(request.user, everyone=everyone).select_related("owner")
    if status:
        rows = rows.shown_as(status)
    page = Paginator(rows.order_by("-created_at", "-id"), PAGE_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return render(
        request,
        "web/batch_list.html",
        {
            "form": form,
            "page": page,
            "positions": scheduling.queue_positions(),
            "everyone": everyone and request.user.is_staff,
            "query": query.urlencode(),
        },
    )
