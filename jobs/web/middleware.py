"""Reading a page's form body safely, before CSRF checking reads it.

CsrfViewMiddleware reads ``request.POST`` to find its token, which parses the
whole body, files included, through the upload handler that enforces
BATCHSITE_MAX_UPLOAD_BYTES. An error raised there (a file past the limit, a
malformed multipart body) escapes every view and becomes a 500. Reading the
body one step earlier turns those into a 413 or 400 page.

Views that parse their own body (``parses_own_body``: the submit page, which
shows a too-large file as a form error) and CSRF-exempt views (the API, whose
errors are OpenAI JSON) are left alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.http import HttpRequest, HttpResponse
from django.http.multipartparser import MultiPartParserError
from django.middleware.csrf import CsrfViewMiddleware
from django.shortcuts import render

from jobs.errors import BatchsiteError, TooLarge

# What Django raises while parsing a body it will not accept. The first three
# are SuspiciousOperations that Django itself would answer with a bare 400.
BODY_ERRORS = (RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent, MultiPartParserError)


def body_error_message(exc: Exception) -> tuple[str, int]:
    """A refusal of the request body in plain words, with its HTTP status."""
    if isinstance(exc, BatchsiteError):
        return exc.message, 413 if isinstance(exc, TooLarge) else 400
    if isinstance(exc, RequestDataTooBig):
        return "The form's fields are too large; the server accepts at most 2.5 MB besides the file.", 413
    if isinstance(exc, TooManyFieldsSent):
        return "The form has too many fields.", 400
    if isinstance(exc, TooManyFilesSent):
        return "The form has too many files; send one JSONL file.", 400
    return f"The form could not be read: {exc}", 400


def read_body(request: HttpRequest) -> tuple[str, int] | None:
    """Parse the form body now; on refusal, the message and status to answer with."""
    try:
        request.POST  # noqa: B018 - parses the body (files too) into request.POST/FILES
    except (BatchsiteError, *BODY_ERRORS) as exc:
        return body_error_message(exc)
    return None


def parses_own_body(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Mark a view that reads its body itself and then calls ``csrf_rejection``.

    It is CSRF-exempt only in the sense that CsrfViewMiddleware (and this
    module's middleware) leave it alone: the view itself must check CSRF
    (``csrf_rejection``) before it acts on the form.
    """
    view.csrf_exempt = True  # type: ignore[attr-defined]
    return view


def _no_response(request: HttpRequest) -> HttpResponse:
    raise AssertionError("CsrfViewMiddleware used for its check only")


def csrf_rejection(request: HttpRequest) -> HttpResponse | None:
    """Django's own CSRF check for a view whose body was read first: None, or the 403 to send."""
    return CsrfViewMiddleware(_no_response).process_view(request, None, (), {})  # type: ignore[arg-type]


class FormBodyMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_view(
        self, request: HttpRequest, view: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> HttpResponse | None:
        if request.method != "POST" or getattr(view, "csrf_exempt", False):
            return None
        refused = read_body(request)
        if refused is None:
            return None
        message, status = refused
        return render(request, "web/error.html", {"title": "Request refused", "message": message}, status=status)
