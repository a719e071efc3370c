"""Request ids, one log line per request, and the SDKs' retry hint.

A Django middleware rather than the WSGI server's access log, so it works the same
under waitress (``bin/start`` and the tests' live server), gunicorn and behind nginx.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, JsonResponse

from jobs.api.errors import error_body
from jobs.chunked import REFUSED
from jobs.services.safe_json import shown

log = logging.getLogger("batchsite.requests")

# The SDKs retry 408, 409, 429 and 5xx unless told not to. These may pass if tried again
# later (a full queue, an overloaded server); every other 4xx is final: the same request
# gets the same refusal, so retrying it only delays the error the user must read.
RETRYABLE_4XX = frozenset({408, 429})


def new_request_id() -> str:
    """``req_`` and 32 hex digits, as OpenAI's ids look: unique per request, quotable by the user."""
    return "req_" + secrets.token_hex(16)


def _is_api(request: HttpRequest) -> bool:
    return request.path == "/v1" or request.path.startswith("/v1/")


class RequestIdMiddleware:
    """Outermost: every response, including Django's own refusals and errors, gets an
    ``x-request-id``, and the log line for the request names it, so an id a user quotes
    from ``response._request_id`` or ``APIStatusError.request_id`` finds the line.

    The id is always ours: one a client sent is not trusted, as it could collide with
    or imitate another request's.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request_id = new_request_id()
        request.request_id = request_id  # type: ignore[attr-defined]
        started = time.monotonic()
        response = self.get_response(request)
        response["x-request-id"] = request_id
        status = response.status_code
        if _is_api(request) and 400 <= status < 500 and status not in RETRYABLE_4XX:
            response.setdefault("x-should-retry", "false")
        user = getattr(request, "user", None)
        # Until the view returns: a streamed download's bytes are sent after this line.
        log.info(
            "%s %s %s %d %.1fms user=%s",
            request_id,
            request.method,
            # shown(): a path is the client's text; escaped, so it cannot forge log lines.
            shown(request.path, 300),
            status,
            (time.monotonic() - started) * 1000,
            getattr(user, "pk", None) if user is not None and user.is_authenticated else "-",
        )
        return response


class ChunkedRefusalMiddleware:
    """Answers a chunked body that ``jobs.chunked`` refused (past its limit, or broken)
    before any view or CSRF check reads it: OpenAI's error under /v1, plain text elsewhere."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        refused = request.META.get(REFUSED)
        if refused is None:
            return self.get_response(request)
        status, code, message = refused
        if _is_api(request):
            param = "file" if code == "file_too_large" else None
            return JsonResponse(error_body(message, status, code, param), status=status)
        return HttpResponse(message, status=status, content_type="text/plain; charset=utf-8")
