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
        if html.is_html_input(dictionary):
            pairs = bracket_pairs(dictionary, self.field_name or "metadata")
            if pairs is not None:
                if self.field_name in dictionary:
                    raise _refused(f"give {self.field_name} as JSON text or as {self.field_name}[key] fields, not both")
                return pairs  # checked as any metadata object is (batches.check_metadata)
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
            raise _refused(exc.message) from None

    def to_representation(self, value: Any) -> Any:
        return value


def _refused(message: str) -> ApiError:
    return ApiError(f"metadata {message}.", code="invalid_metadata", param="metadata")


def bracket_pairs(form: Any, name: str) -> dict[str, str] | None:
    """``name[key]=value`` form fields as a dict (None without any): how the openai
    SDKs and ``curl -F 'metadata[project]=alpha'`` send an object in multipart.

    A key sent twice, or nested (``name[a][b]``, an object where metadata holds
    strings), is refused rather than silently narrowed to one value.
    """
    prefix = name + "["
    pairs: dict[str, str] = {}
    for field in form:
        if not (field.startswith(prefix) and field.endswith("]")):
            continue
        key = field[len(prefix) : -1]
        if "[" in key or "]" in key:
            raise _refused(f"field {safe_json.shown(field)} is nested; metadata values are strings")
        values = form.getlist(field) if hasattr(form, "getlist") else [form[field]]
        if len(values) != 1:
            raise _refused(f"key {safe_json.shown(key)} is sent {len(values)} times")
        pairs[key] = values[0]
    return pairs or None
