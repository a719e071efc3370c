"""The JSON renderer for /v1: every stored string renders, whatever it holds."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rest_framework.renderers import JSONRenderer


class OpenAIJSONRenderer(JSONRenderer):
    """DRF's JSONRenderer (UTF-8, non-ASCII as is) that cannot fail on a lone surrogate.

    A lone surrogate (``"\\ud800"``) has no UTF-8 form, so one stored before
    such text was refused (metadata once was) made every response that
    carried it a 500: the batch list, retrieve, cancel. JSON's ``\\u``
    escapes can carry it, so that one response is rendered all-ASCII instead.
    """

    def render(
        self, data: Any, accepted_media_type: str | None = None, renderer_context: Mapping[str, Any] | None = None
    ) -> bytes:
        try:
            return super().render(data, accepted_media_type, renderer_context)
        except UnicodeEncodeError:
            return _AsciiJSONRenderer().render(data, accepted_media_type, renderer_context)


class _AsciiJSONRenderer(JSONRenderer):
    ensure_ascii = True
