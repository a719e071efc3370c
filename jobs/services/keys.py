"""API keys as a user manages them: create (the secret shown once), list, revoke."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.utils import timezone

from jobs.errors import InvalidRequest, not_found
from jobs.models import ApiKey

MAX_NAME_LENGTH = 100  # ApiKey.name's column
_MAX_PK = 2**63 - 1  # a larger id in a URL would overflow the database's integer, not miss


def keys_of(user: Any) -> QuerySet[ApiKey]:
    """The user's keys, usable ones first, newest first."""
    return ApiKey.objects.filter(user=user).order_by("revoked_at", "-created_at", "-pk")


def create_key(user: Any, name: str) -> tuple[ApiKey, str]:
    """A new key for ``user``; returns it with its secret, which is never stored or shown again."""
    name = name.strip()
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidRequest(
            f"A key name has at most {MAX_NAME_LENGTH} characters.", param="name", code="invalid_value"
        )
    return ApiKey.generate(user, name)


def revoke_key(user: Any, key_id: int) -> ApiKey:
    """Revoke one of the user's keys; it is refused from the next request on. Idempotent."""
    key = ApiKey.objects.filter(user=user, pk=key_id).first() if 0 < key_id <= _MAX_PK else None
    if key is None:
        raise not_found("API key", str(key_id), "key_id")
    # Guarded so that revoking twice keeps the first time.
    ApiKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
    key.refresh_from_db()
    return key
