"""Domain errors: what services refuse, and why, with no HTTP in sight.

Services, the worker and the upload handler raise these; the API
(``jobs.api.errors``) turns each kind into OpenAI's error JSON with its HTTP
status, and the web pages show ``message`` in a form. Keeping them here, below
both, is what lets services be called from a command or a page without
importing the API.

``code`` and ``param`` are OpenAI's fields (``invalid_metadata``, ``metadata``):
they travel unchanged to the client, so SDK users can branch on ``e.code``.
"""

from __future__ import annotations


class BatchsiteError(Exception):
    """Base of every refusal a user can be shown. ``message`` is fit to show them."""

    def __init__(self, message: str, *, code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.param = param


class InvalidRequest(BatchsiteError):
    """The request is malformed or names something that cannot be used (400)."""


class NotFound(BatchsiteError):
    """No such object for this user; another user's ids are not found either (404)."""


class Conflict(BatchsiteError):
    """The object exists but is in a state that does not allow this (409)."""


class TooLarge(BatchsiteError):
    """A body or file past a size limit (413)."""


class LimitReached(BatchsiteError):
    """The queue has no room for this now; trying again later can work (429)."""


def not_found(kind: str, object_id: str, param: str = "id") -> NotFound:
    return NotFound(f"No such {kind}: '{object_id}'", code="not_found", param=param)
