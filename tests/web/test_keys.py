"""The API keys page (Django's test client): create (shown once), list, revoke (refused at once)."""

from __future__ import annotations

import re

import pytest
from rest_framework.test import APIClient

from jobs.models import ApiKey
from jobs.models.keys import hash_key

pytestmark = pytest.mark.django_db


def api(secret: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


def create(browser, name: str) -> str:
    response = browser.post("/keys", {"name": name})
    assert response.status_code == 200
    return re.search(r'value="(bs-[^"]+)" id="secret"', response.content.decode()).group(1)


def test_a_new_key_is_shown_once_works_and_is_stored_only_as_a_hash(web, user):
    response = web.post("/keys", {"name": "laptop"})
    page = response.content.decode()
    secret = re.search(r'value="(bs-[^"]+)" id="secret"', page).group(1)
    assert "shown only this once" in page and 'data-copy="#secret"' in page
    assert response["Cache-Control"] == "no-store"
    key = ApiKey.objects.get(user=user)
    assert key.name == "laptop" and key.key_hash == hash_key(secret) and secret not in key.prefix + key.name
    assert api(secret).get("/v1/batches").status_code == 200
    again = web.get("/keys").content.decode()
    assert secret not in again and "laptop" in again and f"{key.prefix}…" in again


def test_the_list_shows_names_prefixes_and_times(web, user):
    first = create(web, "nightly-eval")
    create(web, "")
    page = web.get("/keys").content.decode()
    assert page.count('<tr data-key="') == 2 and "nightly-eval" in page and "never" in page
    api(first).get("/v1/batches")
    page = web.get("/keys").content.decode()
    row = re.search(r'<tr data-key="\d+">\s*<td data-label="Name">nightly-eval</td>.*?</tr>', page, re.S).group(0)
    assert "never" not in row and 'data-mode="relative"' in row


def test_a_revoked_key_is_refused_at_once_and_listed_as_revoked(web, user):
    secret = create(web, "ci")
    key = ApiKey.objects.get()
    assert api(secret).get("/v1/batches").status_code == 200
    response = web.post(f"/keys/{key.pk}/revoke", follow=True)
    assert b"is revoked" in response.content
    refused = api(secret).get("/v1/batches")
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
    page = web.get("/keys").content.decode()
    assert "revoked" in page and "Revoke…" not in page
    first = ApiKey.objects.get().revoked_at
    assert web.post(f"/keys/{key.pk}/revoke").status_code == 302  # again: harmless, keeps the first time
    assert ApiKey.objects.get().revoked_at == first


def test_another_users_key_cannot_be_revoked_or_seen(web, bob_web, user):
    secret = create(web, "alice-key")
    key = ApiKey.objects.get()
    assert "alice-key" not in bob_web.get("/keys").content.decode()
    assert bob_web.post(f"/keys/{key.pk}/revoke").status_code == 404
    assert api(secret).get("/v1/batches").status_code == 200


@pytest.mark.parametrize("key_id", ["99999999999999999999999", "9223372036854775808", "0"])
def test_hostile_key_ids_are_not_found(web, key_id):
    assert web.post(f"/keys/{key_id}/revoke").status_code == 404


def test_revoking_needs_a_post(web, user):
    create(web, "k")
    key = ApiKey.objects.get()
    assert web.get(f"/keys/{key.pk}/revoke").status_code == 405
    assert ApiKey.objects.get().revoked_at is None


@pytest.mark.parametrize(("name", "message"), [("n" * 101, "at most 100 characters"), ("a\x00b", "Null characters")])
def test_bad_names_are_refused_and_no_key_is_made(web, name, message):
    response = web.post("/keys", {"name": name})
    assert response.status_code == 400 and message in response.content.decode()
    assert not ApiKey.objects.exists()


def test_the_webhook_secret_is_shown_and_rotation_keeps_the_old_one_signing(web, user):
    from jobs.services import webhook_secrets

    page = web.get("/keys").content.decode()
    first = re.search(r'value="(whsec_[^"]+)" id="whsec"', page).group(1)
    assert first == webhook_secrets.get_or_create(user).secret
    assert web.get("/keys/webhook-secret/rotate").status_code == 405
    response = web.post("/keys/webhook-secret/rotate", follow=True)
    page = response.content.decode()
    second = re.search(r'value="(whsec_[^"]+)" id="whsec"', page).group(1)
    assert second != first and 'id="previous-secret"' in page and "switch your receivers" in page
    assert webhook_secrets.signing_secrets(user) == [second, first]


def test_each_user_sees_only_their_own_webhook_secret(web, bob_web, user, bob):
    from jobs.services import webhook_secrets

    bob_page = bob_web.get("/keys").content.decode()
    assert webhook_secrets.get_or_create(bob).secret in bob_page
    assert webhook_secrets.get_or_create(user).secret not in bob_page
