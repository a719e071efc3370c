from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.utils import timezone
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from jobs.models import ApiKey
from jobs.models.keys import hash_key

# last_used_at is informational; writing it on every request would make every
# read a write (and contend with workers for SQLite's lock), so it is coarse.
LAST_USED_RESOLUTION = timedelta(minutes=1)


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """``Authorization: Bearer <key>``, what the openai SDK sends."""

    keyword = "bearer"

    def authenticate(self, request: Request) -> tuple[Any, ApiKey] | None:
        header = authentication.get_authorization_header(request).decode("latin-1").strip()
        if not header:
            return None
        scheme, _, raw = header.partition(" ")
        if scheme.lower() != self.keyword:
            return None
        raw = raw.strip()
        if not raw:
            raise exceptions.AuthenticationFailed("Incorrect API key provided: the key is empty.")
        key = ApiKey.objects.active().select_related("user").filter(key_hash=hash_key(raw)).first()
        if key is None:
            shown = raw[:6] + "*" * 4 if len(raw) > 6 else "****"
            raise exceptions.AuthenticationFailed(f"Incorrect API key provided: {shown}.")
        now = timezone.now()
        if key.last_used_at is None or now - key.last_used_at > LAST_USED_RESOLUTION:
            ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
        return key.user, key

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="batchsite"'
