"""GET /metrics: Prometheus's text format, for a bearer token or a staff session.

The values come from the database at scrape time (jobs/services/metrics.py
says why), so any of gunicorn's processes, on any host, answers the same.
Each scrape builds its own registry holding only batchsite's collector:
prometheus_client's default registry would add this one process's CPU and
memory, which differ between gunicorn's processes and mean nothing for the
service as a whole.

Every scrape it answers is staff's (the token is the operator's secret; a
session must be staff), which is why the per-user series may carry user ids.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterator

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_GET
from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from jobs.services import metrics

REALM = 'Bearer realm="batchsite metrics"'


class DatabaseCollector(Collector):
    def collect(self) -> Iterator[Metric]:
        return metrics.collect()


def _refusal(status: int, message: str, code: str, challenge: str | None = None) -> JsonResponse:
    kind = "authentication_error" if status == 401 else "permission_error"
    response = JsonResponse({"error": {"message": message, "type": kind, "param": None, "code": code}}, status=status)
    if challenge:
        response["WWW-Authenticate"] = challenge
    return response


def _bearer(request: HttpRequest) -> str | None:
    """The token of an ``Authorization: Bearer`` header; None without one."""
    header = request.META.get("HTTP_AUTHORIZATION", "")
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip()


def refusal(request: HttpRequest) -> JsonResponse | None:
    """Why this request may not read the metrics; None if it may."""
    token = _bearer(request)
    expected = settings.BATCHSITE_METRICS_TOKEN
    if token is not None:
        # Compared as bytes in constant time; the header arrives as latin-1 text.
        if expected and hmac.compare_digest(token.encode("latin-1", "replace"), expected.encode()):
            return None
        return _refusal(
            401,
            "Incorrect metrics token." if expected else "No metrics token is configured (BATCHSITE_METRICS_TOKEN).",
            "invalid_token",
            REALM + ', error="invalid_token"',
        )
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        if user.is_active and user.is_staff:
            return None
        return _refusal(403, "Only staff accounts can read the metrics.", "not_staff")
    return _refusal(
        401,
        "Send the metrics token (BATCHSITE_METRICS_TOKEN) as 'Authorization: Bearer <token>', or sign in as staff.",
        "missing_token",
        REALM,
    )


@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    refused = refusal(request)
    if refused is not None:
        return refused
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector())
    encoder, content_type = choose_encoder(request.META.get("HTTP_ACCEPT", ""))
    response = HttpResponse(encoder(registry), content_type=content_type)
    response["Cache-Control"] = "no-store"
    return response
