"""Every error under /v1/ in OpenAI's shape: {"error": {message, type, param, code}}.

The openai SDK builds its exception from this body (``e.code``, ``e.param``,
``e.message``), so DRF's own errors, Django's 404/500 pages and unexpected
exceptions are all translated, not only the ones our views raise.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

from django.conf import settings
from django.core.exceptions import (
    DisallowedHost,
    RequestDataTooBig,
    SuspiciousOperation,
    TooManyFieldsSent,
    TooManyFilesSent,
)
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse, UnreadablePostError
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler

from jobs import errors as domain

log = logging.getLogger(__name__)

# Each kind of domain error (jobs/errors.py) and the HTTP status it answers with.
DOMAIN_STATUS: dict[type[domain.BatchsiteError], int] = {
    domain.InvalidRequest: status.HTTP_400_BAD_REQUEST,
    domain.NotFound: status.HTTP_404_NOT_FOUND,
    domain.Conflict: status.HTTP_409_CONFLICT,
    domain.TooLarge: status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
    domain.LimitReached: status.HTTP_429_TOO_MANY_REQUESTS,
}


class ApiError(exceptions.APIException):
    """An error with OpenAI's fields, raised by the views themselves (query
    parameters and the like); services raise jobs.errors instead."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int = status.HTTP_400_BAD_REQUEST,
        code: str | None = None,
        param: str | None = None,
        type: str | None = None,
    ) -> None:
        super().__init__(detail=message)
        self.status_code = status_code
        self.message = message
        self.error_code = code
        self.param = param
        self.error_type = type or _type_for(status_code)


def _type_for(status_code: int) -> str:
    if status_code == 401:
        return "authentication_error"
    if status_code == 429:
        return "rate_limit_error"
    if status_code >= 500:
        return "server_error"
    return "invalid_request_error"


def error_body(
    message: str, status_code: int, code: str | None = None, param: str | None = None, type: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type or _type_for(status_code), "param": param, "code": code}}


def from_domain(exc: domain.BatchsiteError) -> ApiError:
    status_code = next(
        (code for kind, code in DOMAIN_STATUS.items() if isinstance(exc, kind)), status.HTTP_400_BAD_REQUEST
    )
    return ApiError(exc.message, status_code=status_code, code=exc.code, param=exc.param)


class NulInUrl(SuspiciousOperation):
    pass


def from_django(exc: Exception) -> ApiError | None:
    """Django's refusals of a request, as OpenAI errors (None for any other exception).

    Django raises these past its DATA_UPLOAD_* limits while DRF reads a body,
    and for a bad Host or a NUL in the URL before any view; in a view they
    were 500s, though nothing is wrong with the server.
    """
    if isinstance(exc, RequestDataTooBig):
        return ApiError(
            f"The request body is too large: the limit is {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes "
            "(files uploaded as multipart have their own limit, BATCHSITE_MAX_UPLOAD_BYTES).",
            status_code=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
            code="request_too_large",
        )
    if isinstance(exc, TooManyFieldsSent):
        return ApiError(
            f"The request has more than {settings.DATA_UPLOAD_MAX_NUMBER_FIELDS} fields.", code="too_many_fields"
        )
    if isinstance(exc, TooManyFilesSent):
        return ApiError(
            f"The request has more than {settings.DATA_UPLOAD_MAX_NUMBER_FILES} files; upload one file per request.",
            code="too_many_files",
            param="file",
        )
    if isinstance(exc, NulInUrl):
        return ApiError("The URL holds a NUL character (%00), which no path or parameter may.", code="invalid_url")
    if isinstance(exc, DisallowedHost):
        return ApiError("This server does not answer to that Host header (ALLOWED_HOSTS).", code="invalid_host")
    if isinstance(exc, SuspiciousOperation):
        return ApiError("The request is malformed.", code="invalid_request")
    if isinstance(exc, UnreadablePostError):
        return ApiError("The request body could not be read to its end.", code="invalid_request_body")
    return None


def _first_validation_message(detail: Any, prefix: str = "") -> tuple[str, str | None]:
    """The first field error of a DRF ValidationError, as (message, param)."""
    if isinstance(detail, dict):
        for key, value in detail.items():
            param = key if key != "non_field_errors" else None
            name = f"{prefix}.{key}" if prefix and param else (param or prefix)
            message, inner = _first_validation_message(value, name or "")
            return message, inner or name or None
    if isinstance(detail, list) and detail:
        return _first_validation_message(detail[0], prefix)
    text = str(detail)
    if prefix:
        return f"Invalid '{prefix}': {text}", prefix
    return text, None


_CODES = {
    exceptions.NotAuthenticated: "missing_api_key",
    exceptions.AuthenticationFailed: "invalid_api_key",
    exceptions.NotFound: "not_found",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
    exceptions.ParseError: "invalid_request_body",
    exceptions.PermissionDenied: "permission_denied",
    exceptions.Throttled: "rate_limit_exceeded",
    exceptions.NotAcceptable: "not_acceptable",
}


def openai_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, domain.BatchsiteError):
        exc = from_domain(exc)
    else:
        exc = from_django(exc) or exc
    response = exception_handler(exc, context)
    if response is None:
        return None  # not an API exception: ApiErrorMiddleware answers with a 500
    if isinstance(exc, ApiError):
        body = error_body(exc.message, exc.status_code, exc.error_code, exc.param, exc.error_type)
    elif isinstance(exc, exceptions.ValidationError):
        message, param = _first_validation_message(exc.detail)
        body = error_body(message, response.status_code, "invalid_value", param)
    else:
        if isinstance(exc, exceptions.NotAuthenticated):
            message = (
                "You didn't provide an API key. Send it in the Authorization header "
                "as 'Authorization: Bearer YOUR_KEY'."
            )
        else:
            message = str(getattr(exc, "detail", exc))
        code = next((c for cls, c in _CODES.items() if isinstance(exc, cls)), None)
        body = error_body(message, response.status_code, code)
    response.data = body
    return response


def _is_api(request: HttpRequest) -> bool:
    return request.path.startswith("/v1/") or request.path == "/v1"


# OpenAI's online endpoints, which clients point here by mistake: this server runs them as batch lines.
ONLINE_PATHS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses")


def _not_found_message(request: HttpRequest) -> str:
    path = request.path.rstrip("/")
    if path in ONLINE_PATHS:
        return (
            f"Unknown request URL: {request.method} {request.path}. This server runs {path} requests as lines "
            "of a batch, not online: upload a JSONL file of them (POST /v1/files, purpose 'batch') and create "
            f"a batch with POST /v1/batches (endpoint '{path}')."
        )
    return f"Unknown request URL: {request.method} {request.path}."


@csrf_exempt  # every method gets the JSON 404, not Django's HTML CSRF page (no API request carries a token)
def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _is_api(request):
        return JsonResponse(error_body(_not_found_message(request), 404, "unknown_url"), status=404)
    from django.views.defaults import page_not_found

    return page_not_found(request, exception or Http404())


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """Django's 400 for what middleware refused before any view ran (a Host not in ALLOWED_HOSTS)."""
    if _is_api(request):
        error = (from_django(exception) if exception is not None else None) or ApiError("The request is malformed.")
        return JsonResponse(
            error_body(error.message, error.status_code, error.error_code, error.param), status=error.status_code
        )
    from django.views.defaults import bad_request as django_bad_request

    return django_bad_request(request, exception or SuspiciousOperation())


def server_error(request: HttpRequest) -> HttpResponse:
    if _is_api(request):
        return JsonResponse(
            error_body("The server had an error while processing your request.", 500, "server_error"),
            status=500,
        )
    from django.views.defaults import server_error as django_server_error

    return django_server_error(request)


class RefuseNulMiddleware:
    """A NUL (%00) in the path or the query string is a 400 before any view runs.

    No URL needs one, and PostgreSQL text cannot hold one: every query that
    used it failed, a 500 on API lookups, admin pages and filters alike.
    Django turns the SuspiciousOperation into handler400's answer (JSON under /v1/).
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if "\x00" in request.path or any("\x00" in key or "\x00" in value for key, value in _query_items(request)):
            raise NulInUrl("NUL in the URL")
        return self.get_response(request)


def _query_items(request: HttpRequest) -> Iterator[tuple[str, str]]:
    for key, values in request.GET.lists():
        for value in values:
            yield key, value


class ApiErrorMiddleware:
    """Unexpected exceptions under /v1/ become an OpenAI-shaped 500, even with DEBUG on."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not _is_api(request) or isinstance(exception, Http404):
            return None
        # Raised outside a DRF view (an upload handler while Django parses
        # the body, say): the same OpenAI answer a view would give.
        error = from_domain(exception) if isinstance(exception, domain.BatchsiteError) else from_django(exception)
        if error is not None:
            return JsonResponse(
                error_body(error.message, error.status_code, error.error_code, error.param), status=error.status_code
            )
        log.exception("unhandled error on %s %s", request.method, request.path, exc_info=exception)
        return server_error(request)
