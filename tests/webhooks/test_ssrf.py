"""The SSRF guard: refused at create with a 400 that says why, and again at send time.

No test here sends anything outside loopback: refused URLs are refused before
any connection, the ones accepted under the operator setting belong to
batches that never end (so no event is ever sent), and the send-time tests
post only to receivers on 127.0.0.1 and 127.0.0.2.
"""

from __future__ import annotations

import io
import ipaddress
import json

import pytest

from jobs.models import Batch, DeliveryStatus, File, WebhookAttempt, WebhookDelivery
from jobs.webhooks.sender import Sender
from tests.conftest import CHAT_MODEL, chat_line, jsonl, stored_files
from tests.webhooks.conftest import Receiver, Reply, create_batch

pytestmark = pytest.mark.django_db

# (URL, what the refusal must say)
HOSTILE = [
    ("http://127.0.0.1/hook", "127.0.0.1 is a loopback address"),
    ("http://127.1:8080/", "resolves to 127.0.0.1, a loopback address"),
    ("http://[::1]/hook", "::1 is a loopback address"),
    ("http://0.0.0.0/", "unspecified address"),
    ("http://[::]:80/", "unspecified address"),
    ("http://2130706433/", "2130706433 resolves to 127.0.0.1"),  # decimal
    ("http://0x7f000001/", "0x7f000001 resolves to 127.0.0.1"),  # hex
    ("http://0177.0.0.1/", "resolves to 127.0.0.1"),  # octal
    ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a link-local address"),
    ("http://10.0.0.8/", "10.0.0.8 is a private address"),
    ("http://172.16.5.4/", "172.16.5.4 is a private address"),
    ("http://172.31.255.254:9000/", "private address"),
    ("https://192.168.1.1/", "192.168.1.1 is a private address"),
    ("http://[fc00::1]/", "unique-local address"),
    ("http://[fd12:3456:789a::1]/", "unique-local address"),
    ("http://[::ffff:127.0.0.1]/", "loopback address (127.0.0.1) in IPv6 form"),
    ("http://[::ffff:a9fe:a9fe]/", "link-local address (169.254.169.254) in IPv6 form"),
    ("http://[64:ff9b::a9fe:a9fe]/", "link-local address (169.254.169.254) in IPv6 form"),  # NAT64
    ("http://[fe80::1]/", "link-local address"),
    ("http://[fe80::1%25eth0]/", "link-local address"),
    ("http://224.0.0.1/", "multicast address"),
    ("http://240.0.0.1/", "reserved address"),
    ("http://100.64.0.1/", "non-global address"),  # carrier-grade NAT
    ("http://localhost:8000/hook", "localhost resolves to 127.0.0.1, a loopback address"),
    ("http://LOCALHOST./hook", "resolves to 127.0.0.1"),
    # Normalised as browsers and the sender read them (UTS #46), then checked: issue 20 item 5.
    ("http://127.0.0.1\u3002/", "127.0.0.1 is a loopback address"),  # ideographic full stop
    ("http://127\uff0e0\uff0e0\uff0e1/", "127.0.0.1 is a loopback address"),  # full-width full stops
    ("http://169.254.169.254\uff61/latest/", "169.254.169.254 is a link-local address"),  # halfwidth
    ("http://127.0.0.1./", "127.0.0.1 is a loopback address"),
    ("http://127.0.0.1../", "127.0.0.1 is a loopback address"),
    ("http://\uff4c\uff4f\uff43\uff41\uff4c\uff48\uff4f\uff53\uff54/", "localhost resolves to 127.0.0.1"),
    ("http://\u2460\u2461\u2466.0.0.1/", "127.0.0.1 is a loopback address"),  # circled digits 1 2 7
    ("http://\uff11\uff10.0.0.1/", "10.0.0.1 is a private address"),  # full-width digits
    ("http://user:pw@127.0.0.1\u3002:8080/", "127.0.0.1 is a loopback address"),
]
# Refused whatever the operator allows: batchsite only ever POSTs over http(s).
BAD_SCHEMES = [
    ("file:///etc/passwd", "scheme is 'file'"),
    ("gopher://127.0.0.1:70/_GET", "scheme is 'gopher'"),
    ("ftp://example.com/hook", "scheme is 'ftp'"),
    ("javascript:alert(1)", "scheme is 'javascript'"),
    ("//example.com/hook", "scheme is none"),
    ("dict://127.0.0.1:11211/stat", "scheme is 'dict'"),
]


def refused(response, fragment: str) -> None:
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["param"] == "webhook_url" and error["type"] == "invalid_request_error", error
    assert fragment in error["message"], error["message"]


@pytest.mark.parametrize("url, why", HOSTILE + BAD_SCHEMES)
def test_a_hostile_webhook_url_is_refused_at_create_saying_why_and_nothing_is_stored(client, models, upload, url, why):
    response = create_batch(client, upload, url)
    refused(response, why)
    if url.startswith("http") and why not in dict(BAD_SCHEMES).values():
        assert "BATCHSITE_WEBHOOK_ALLOW_PRIVATE" in response.json()["error"]["message"]
    assert not Batch.objects.exists() and not WebhookDelivery.objects.exists()


@pytest.mark.parametrize("url", [url for url, _ in HOSTILE])
def test_the_same_urls_are_accepted_when_the_operator_allows_private_networks(client, models, upload, settings, url):
    # Only create: these batches never end here, so nothing is ever sent to them.
    import dataclasses

    settings.BATCHSITE_WEBHOOKS = dataclasses.replace(settings.BATCHSITE_WEBHOOKS, allow_private=True)
    response = create_batch(client, upload, url)
    assert response.status_code == 200, response.content
    batch = response.json()
    assert batch["status"] == "in_progress" and batch["webhook_url"] == url
    assert batch["webhook_status"] == "pending"


@pytest.mark.parametrize("url, why", BAD_SCHEMES)
def test_other_schemes_stay_refused_when_private_networks_are_allowed(client, models, upload, allow_private, url, why):
    refused(create_batch(client, upload, url), why)


def test_an_allow_list_lets_in_its_networks_only(client, models, upload, webhook_settings):
    webhook_settings(allowed_networks=(ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8")))
    for url in ("http://10.1.2.3/hook", "http://[::ffff:10.9.9.9]/hook", "http://[fd00::5]/"):
        assert create_batch(client, upload, url).status_code == 200, url
    refused(create_batch(client, upload, "http://192.168.1.1/"), "192.168.1.1 is a private address")
    refused(create_batch(client, upload, "http://127.0.0.1/"), "loopback")
    refused(create_batch(client, upload, "http://169.254.169.254/"), "link-local")


def test_public_addresses_and_names_that_do_not_resolve_yet_are_accepted(client, models, upload):
    # A name that does not resolve now is checked again when each attempt connects.
    for url in ("https://93.184.215.14/hook", "http://[2606:4700:4700::1111]:8443/x", "https://hooks.example.test/b"):
        response = create_batch(client, upload, url)
        assert response.status_code == 200 and response.json()["webhook_url"] == url, response.content


@pytest.mark.parametrize(
    "value, why",
    [
        (["http://example.com/"], "Not a valid string"),
        ({"url": "http://example.com/"}, "Not a valid string"),
        (12345, "scheme is none"),
        (True, "Not a valid string"),
        (None, "may not be null"),
        ("https://example.com/" + "a" * 2029, "2049 characters long; at most 2048"),
        ("https://example.com/" + "a" * 10**6, "at most 2048"),
        ("https://ex\ud800ample.com/hook", "Surrogate characters are not allowed"),
        ("https://example.com/a b", "spaces or control characters"),
        ("https://example.com/\r\nX-Injected: 1", "spaces or control characters"),
        ("https://example.com/\x00", "Null characters are not allowed"),
        ("http://[::1/hook", "not a valid URL"),
        ("http://example.com:99999/", "not a valid URL"),
        ("http:///hook", "no host name"),
        ("https://[zz::1]/", "not a valid URL"),
        (json.loads("[" * 50 + "]" * 50), "Not a valid string"),
    ],
)
def test_hostile_values_get_a_400_naming_webhook_url(client, models, upload, value, why):
    response = create_batch(client, upload, value)
    refused(response, why)
    assert not Batch.objects.exists()


def test_the_one_call_shortcut_refuses_too_and_keeps_no_file(client, models, settings):
    f = io.BytesIO(jsonl([chat_line(i) for i in range(2)]))
    f.name = "in.jsonl"
    response = client.post(
        "/v1/batches",
        {"file": f, "model": CHAT_MODEL, "webhook_url": "http://169.254.169.254/latest/meta-data/"},
        format="multipart",
    )
    refused(response, "link-local")
    assert not File.objects.exists() and stored_files(settings) == []


def failed_at_create(client, upload, url: str) -> WebhookDelivery:
    """A batch that fails validation at create: its event is written at once."""
    response = create_batch(client, upload, url, lines=[b"not json"])
    assert response.status_code == 200 and response.json()["status"] == "failed", response.content
    return WebhookDelivery.objects.get(batch_id=response.json()["id"])


def test_a_name_that_resolves_inside_the_network_at_send_time_is_not_contacted(
    client, models, upload, receiver, webhook_settings
):
    # Accepted at create (the operator allowed it then); by the time of the
    # send the rule is back, and "localhost" resolves to 127.0.0.1, as a
    # rebinding name would: the sender's connection itself is refused.
    webhook_settings(allow_private=True)
    delivery = failed_at_create(client, upload, f"http://localhost:{receiver.port}/hook")
    webhook_settings(allow_private=False)
    assert Sender("t").send_due() == 1
    attempt = WebhookAttempt.objects.get(delivery=delivery)
    assert attempt.status_code is None
    assert "refused by the SSRF guard" in attempt.error and "127.0.0.1, a loopback address" in attempt.error
    assert receiver.received == []
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.FAILING and delivery.attempts == 1


def test_a_redirect_to_a_private_address_is_not_followed(client, models, upload, webhook_settings):
    # The receiver on 127.0.0.1 is allowed; 127.0.0.2 is not. The first
    # redirects to the second, which must never see a request.
    webhook_settings(allowed_networks=(ipaddress.ip_network("127.0.0.1/32"),))
    inside = Receiver(host="127.0.0.2").start()
    outside = Receiver().start()
    try:
        outside.default = Reply(302, {"Location": f"http://127.0.0.2:{inside.port}/steal"})
        delivery = failed_at_create(client, upload, outside.url)
        assert Sender("t").send_due() == 1
        assert len(outside.received) == 1
        assert inside.received == []
    finally:
        inside.stop()
        outside.stop()
    attempt = WebhookAttempt.objects.get(delivery=delivery)
    assert attempt.status_code == 302
    assert attempt.error == f"redirect to 'http://127.0.0.2:{inside.port}/steal' not followed"
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.FAILING


def test_a_url_in_another_form_is_sent_to_the_host_that_was_checked(client, models, upload, receiver, allow_private):
    # Full-width letters and dots: accepted (the operator allows loopback),
    # and delivered to the same host at send (httpx alone refuses this host).
    url = f"http://\uff4c\uff4f\uff43\uff41\uff4c\uff48\uff4f\uff53\uff54\u3002:{receiver.port}/hook"
    delivery = failed_at_create(client, upload, url)
    assert Batch.objects.get(pk=delivery.batch_id).webhook_url == url  # shown as the user wrote it
    assert Sender("t").send_due() == 1
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.DELIVERED, delivery.last_error
    assert [r.path for r in receiver.received] == ["/hook"]


def test_a_stored_url_in_another_form_is_refused_at_send_by_the_same_rule(client, models, upload, receiver):
    # A row written before the create check normalised (or by hand): the sender
    # reads it the same way and refuses it without connecting.
    delivery = failed_at_create(client, upload, "https://hooks.example.test/b")
    WebhookDelivery.objects.filter(pk=delivery.pk).update(url=f"http://127.0.0.1\u3002:{receiver.port}/")
    assert Sender("t").send_due() == 1
    attempt = WebhookAttempt.objects.get(delivery=delivery)
    assert attempt.status_code is None and "refused by the SSRF guard" in attempt.error
    assert "127.0.0.1 is a loopback address" in attempt.error
    assert receiver.received == []


@pytest.mark.parametrize(
    "value, why",
    [
        ("https://ex\ud800ample.com/hook", "not valid Unicode"),
        (b"https://example.com/", "must be a string"),
        ("https://example.com/\t", "spaces or control characters"),
        ("http://10.0.0.1/", "10.0.0.1 is a private address"),
    ],
)
def test_the_service_check_shared_with_the_web_form_refuses_on_its_own(value, why):
    from jobs.errors import InvalidRequest
    from jobs.services.webhook_urls import check_webhook_url

    with pytest.raises(InvalidRequest) as caught:
        check_webhook_url(value)
    assert caught.value.param == "webhook_url" and why in caught.value.message
