"""The dashboard: running batches, the queue, the workers and the throughput, refreshed by htmx."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone

from jobs.services import overview, scheduling, share_report
from jobs.web.charts import throughput_chart
from jobs.web.decorators import login_required_live

DEFAULT_HOURS = 3
REFRESH_SECONDS = 3


def _hours(request: HttpRequest) -> int:
    raw = request.GET.get("hours", "")
    return int(raw) if raw.isdigit() and int(raw) in overview.CHART_HOURS else DEFAULT_HOURS


def dashboard_context(request: HttpRequest) -> dict[str, Any]:
    now = timezone.now()
    hours = _hours(request)
    plan = scheduling.queue_plan()
    return {
        "queue": overview.queue_view(request.user, now),
        # The scheduler's view: the policy in force and the model loads it expects (per worker).
        "plan": plan,
        "next_loads": {w.id: w.loads for w in plan.workers},
        "workers": overview.worker_rows(request.user, now),
        "sharing": share_report.report(request.user),
        "plan_fair_share": settings.BATCHSITE_SCHEDULER.fair_share,
        "chart": throughput_chart(overview.throughput(hours, now)),
        "hours": hours,
        "hour_choices": overview.CHART_HOURS,
        "refresh_seconds": REFRESH_SECONDS,
        "now": now,
    }


@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    return render(request, "web/dashboard.html", dashboard_context(request))


@login_required_live("dashboard")
def dashboard_live(request: HttpRequest) -> HttpResponse:
    """The dashboard's content alone, which the page fetches every few seconds."""
    return render(request, "web/_dashboard_live.html", dashboard_context(request))
