"""Sending due deliveries: sign (Standard Webhooks), POST once, record what came back.

Headers per Standard Webhooks, which is what the openai SDK's
``client.webhooks.unwrap`` verifies: ``webhook-id`` (the delivery's id, the
same on every retry, so receivers can drop duplicates), ``webhook-timestamp``
(this attempt's time: receivers refuse stale ones) and ``webhook-signature``,
``v1,<base64 HMAC-SHA256 of "id.timestamp.body">`` once per signing secret,
space-separated (two during a rotation's overlap).
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime

import httpx
from django.conf import settings
from standardwebhooks import Webhook

from jobs.errors import InvalidRequest
from jobs.models.clock import db_now
from jobs.services import webhook_secrets, webhook_urls
from jobs.webhooks import outbox, transport
from jobs.webhooks.outbox import Claim, Outcome

log = logging.getLogger("batchsite.webhooks")

USER_AGENT = "batchsite-webhooks/1"
# The most bytes of a response read (and kept, in part): a receiver's answer
# only matters by its status, the rest is for an operator's eyes.
RESPONSE_READ_BYTES = 4096
# Deliveries sent per pass of the loop before it lets other jobs run.
MAX_PER_PASS = 50


def signature_headers(webhook_id: str, body: str, secrets: list[str], at: datetime) -> dict[str, str]:
    signatures = " ".join(Webhook(secret).sign(webhook_id, at, body) for secret in secrets)
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signatures,
    }


def read_head(response: httpx.Response) -> tuple[bytes, bool]:
    """The start of the body, and whether it stopped short because time ran out.

    The status line is the answer; a body still trickling in at the deadline
    does not undo it.
    """
    head = bytearray()
    try:
        for piece in response.iter_raw():
            head += piece
            if len(head) >= RESPONSE_READ_BYTES:
                break
    except httpx.TimeoutException:
        return bytes(head[:RESPONSE_READ_BYTES]), True
    return bytes(head[:RESPONSE_READ_BYTES]), False


class Sender:
    """Sends due deliveries for one process (``name`` marks its leases and attempts)."""

    def __init__(self, name: str, stopping: threading.Event | None = None) -> None:
        self.name = name
        self.stopping = stopping or threading.Event()
        self.ssl_context = httpx.create_ssl_context(trust_env=False)

    def send_due(self) -> int:
        """Send what is due, one claim at a time, until nothing is; the number of attempts made."""
        made = 0
        while made < MAX_PER_PASS and not self.stopping.is_set():
            claim = outbox.claim_next(self.name)
            if claim is None:
                break
            self.send(claim)
            made += 1
        return made

    def send(self, claim: Claim) -> None:
        delivery = claim.delivery
        outcome = self.post(delivery.id, delivery.url, delivery.body, delivery.batch.owner_id)
        if outbox.record(claim, outcome) is None:
            log.warning("webhook %s: lease lost while sending; its result was not recorded", delivery.id)
            return
        if outcome.ok:
            log.info(
                "webhook %s %s for %s delivered (HTTP %s)",
                delivery.id,
                delivery.event_type,
                delivery.batch_id,
                outcome.status_code,
            )
        else:
            log.warning(
                "webhook %s %s for %s to %s failed (attempt %d): %s",
                delivery.id,
                delivery.event_type,
                delivery.batch_id,
                delivery.url,
                delivery.attempts + 1,
                outcome.error or f"HTTP {outcome.status_code}",
            )

    def post(self, webhook_id: str, url: str, body: str, owner_id: int) -> Outcome:
        """One attempt, never raising: what the receiver answered, or what went wrong."""
        # The database's clock, not this host's: the timestamp is signed, and
        # receivers refuse one too far from their own (well-kept) clocks.
        started_at = db_now()
        began = time.monotonic()
        timeout = settings.BATCHSITE_WEBHOOKS.timeout_seconds

        def failed(error: str) -> Outcome:
            return Outcome(started_at, int((time.monotonic() - began) * 1000), error=error[:1000])

        # The same normal form, and so the same host, that the create-time check saw.
        try:
            url = webhook_urls.normalize(url)
        except InvalidRequest as exc:
            return failed(f"refused by the SSRF guard: {exc}")
        # Outside the try: a database error is not a failed attempt (nothing
        # was sent); it reaches the housekeeper, and the lease runs out.
        secrets = webhook_secrets.signing_secrets(owner_id)
        try:
            headers = {
                "content-type": "application/json",
                "user-agent": USER_AGENT,
                # The excerpt kept is of the bytes as sent: nothing to inflate.
                "accept-encoding": "identity",
                **signature_headers(webhook_id, body, secrets, started_at),
            }
            with (
                transport.client(timeout, self.ssl_context) as client,
                client.stream("POST", url, content=body.encode("ascii"), headers=headers) as response,
            ):
                head, cut_off = read_head(response)
        except transport.BlockedAddress as exc:
            return failed(f"refused by the SSRF guard: {exc}")
        except httpx.TimeoutException:
            return failed(f"no answer within {timeout:g}s")
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            return failed(f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # one bad row must not stop the loop for every other event
            log.exception("webhook %s: unexpected error", webhook_id)
            return failed(f"{type(exc).__name__}: {exc}")
        error = ""
        if response.is_redirect:
            error = f"redirect to {response.headers.get('location', '?')!r} not followed"
        elif cut_off:
            error = "the response body was cut off at the timeout (the status counts)"
        return Outcome(
            started_at,
            int((time.monotonic() - began) * 1000),
            status_code=response.status_code,
            response=head.decode("utf-8", errors="replace"),
            error=error,
            retry_after=outbox.parse_retry_after(response.headers.get("retry-after"), db_now()),
        )
