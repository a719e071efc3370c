from __future__ import annotations

import hashlib
import secrets
from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone

KEY_PREFIX = "bs-"


def hash_key(raw: str) -> str:
    # Keys are 256 random bits, so a fast hash is enough: there is nothing to
    # brute-force, and a slow KDF would cost every API request.
    return hashlib.sha256(raw.encode()).hexdigest()


class ApiKeyQuerySet(models.QuerySet["ApiKey"]):
    def active(self) -> ApiKeyQuerySet:
        return self.filter(revoked_at__isnull=True, user__is_active=True)


class ApiKey(models.Model):
    """A user's API key. Only its hash is stored; the key is shown once."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100, blank=True)
    prefix = models.CharField(max_length=16, editable=False, help_text="First characters, to tell keys apart")
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = ApiKeyQuerySet.as_manager()

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.user})"

    @classmethod
    def generate(cls, user: Any, name: str = "") -> tuple[ApiKey, str]:
        key = cls(user=user, name=name)
        raw = key.set_new_key()
        key.save()
        return key, raw

    def set_new_key(self) -> str:
        """Give this (unsaved) key a fresh secret; returns it, the only time it is seen."""
        raw = KEY_PREFIX + secrets.token_urlsafe(32)
        self.prefix, self.key_hash = raw[:10], hash_key(raw)
        return raw

    def revoke(self) -> None:
        self.revoked_at = timezone.now()
        self.save(update_fields=["revoked_at"])
