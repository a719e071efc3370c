"""Request body parsers for /v1: bounded, and strict about what JSON may carry.

The body itself is bounded before any parser runs: DRF reads JSON and form
bodies through Django's ``request.body``, which refuses more than
``DATA_UPLOAD_MAX_MEMORY_SIZE`` (2.5 MB) by Content-Length before reading a
byte (``RequestDataTooBig``, a 413 in jobs.api.errors); multipart bodies
stream, their files to disk under ``BATCHSITE_MAX_UPLOAD_BYTES``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import IO, Any

from rest_framework import parsers as drf_parsers
from rest_framework.exceptions import ParseError
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser

from jobs.services import safe_json

# DRF's form parsers need nothing more (Django bounds their bodies); views take all three from here.
__all__ = ["StrictJSONParser", "FormParser", "MultiPartParser"]


class StrictJSONParser(JSONParser):
    """DRF's JSONParser with safe_json's rules: no NaN or Infinity, no overflowing
    numbers, nesting at most safe_json.MAX_DEPTH deep (deeper bodies once
    crashed the decoder with a RecursionError, a 500)."""

    def parse(
        self, stream: IO[Any], media_type: str | None = None, parser_context: Mapping[str, Any] | None = None
    ) -> Any:
        # DRF's own check: it refuses bytes-to-bytes codecs (bz2_codec) that
        # would inflate a small body past the size limit. Not in the stubs yet.
        encoding = drf_parsers.get_encoding(parser_context or {})  # type: ignore[attr-defined]
        try:
            text = stream.read().decode(encoding)
        except UnicodeDecodeError as exc:
            raise ParseError(f"The request body is not valid {encoding} (byte {exc.start}).") from None
        try:
            return safe_json.loads(text)
        except safe_json.JsonRefused as exc:
            raise ParseError(f"The request body {exc.message}.") from None
