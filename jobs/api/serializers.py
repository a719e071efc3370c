"""Serializer fields shared by the /v1 views."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rest_framework import serializers
from rest_framework.utils import html

from jobs.api.errors import ApiError
from jobs.services import safe_json


class _FormText(str):
    """A value that came from a form field, where JSON arrives as text."""


class MetadataField(serializers.Field):
    """``metadata`` as sent: an object in a JSON body, JSON text in a form.

    Only parsing happens here (with safe_json's rules, so deep or odd text
    cannot crash it); what metadata may hold is the service's rule
    (``batches.check_metadata``), the same for the API and the pages.
    """

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("required", False)
        kwargs.setdefault("allow_null", True)
        super().__init__(**kwargs)

    def get_value(self, dictionary: Mapping[Any, Any]) -> Any:
        value = super().get_value(dictionary)
        if html.is_html_input(dictionary) and isinstance(value, str):
            return _FormText(value)
        return value

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, _FormText):
            return data
        if not data.strip():
            return None
        try:
            return safe_json.loads(data)
        except safe_json.JsonRefused as exc:
            raise ApiError(f"metadata {exc.message}.", code="invalid_metadata", param="metadata") from None

    def to_representation(self, value: Any) -> Any:
        return value
