"""Engine-refused lines in OpenAI's error vocabulary.

vLLM's server answers an error with ``{"error": {"message", "type": "BadRequestError",
"param", "code": 400}}``: the exception class as ``type`` and the HTTP status as an
integer ``code``. OpenAI's batch error lines (and the openai SDKs' ``ErrorObject``,
whose ``code`` is a string or null) carry ``type`` such as ``invalid_request_error``
and a string ``code``. The engine keeps vLLM's message and param and turns the rest
into OpenAI's words here, once, for every engine, so an error file validates against
the SDK's own types. The line's ``response.status_code`` keeps the HTTP status.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import orjson


def error_type(status: int) -> str:
    """OpenAI's ``type`` for an HTTP status: the client's fault or the server's."""
    return "invalid_request_error" if 400 <= status < 500 else "server_error"


def openai_error(status: int, payload: dict[str, Any] | bytes | str) -> dict[str, Any]:
    """``{"error": {message, type, param, code}}`` for an engine's error answer with ``status``.

    ``payload`` is vLLM's body (a dict or its JSON), or a plain message. ``code`` stays
    a string when the engine gave one (OpenAI's codes are words), else null: vLLM's
    integer code only repeats the status, which the line already carries.
    """
    error: Any = payload
    if isinstance(payload, bytes):
        try:
            error = orjson.loads(payload)
        except orjson.JSONDecodeError:
            error = payload.decode("utf-8", "replace")
    if isinstance(error, dict):
        error = error.get("error", error)
    if not isinstance(error, dict):
        error = {"message": error}
    message = error.get("message")
    if not isinstance(message, str) or not message:
        message = _phrase(status)
    param = error.get("param")
    code = error.get("code")
    return {
        "error": {
            "message": message,
            "type": error_type(status),
            "param": param if isinstance(param, str) else None,
            "code": code if isinstance(code, str) and code else None,
        }
    }


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"The engine answered with status {status}."
