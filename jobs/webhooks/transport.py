"""An httpx client that can only connect where the SSRF guard allows, and only for so long.

The create-time check (``jobs.services.webhook_urls``) saw what the host
resolved to then; a name can resolve elsewhere by the time an event is sent
(DNS rebinding), and redirects could lead anywhere. So the guard runs again
where it cannot be dodged: in the network backend, which resolves the host
itself, refuses the connection if any address is refused, connects to the
checked address (never resolving again) and checks the socket's peer once
connected. Redirects are not followed and proxies from the environment are
ignored, so nothing else decides where a request goes.

httpx's timeouts bound each read and write, not an attempt: a receiver that
drips a byte at a time could hold a sender for hours. Every stream here
carries the attempt's deadline and shortens each operation's timeout to it.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx

from jobs.services import webhook_urls

# Addresses of one host tried before giving up (each gets the connect timeout).
MAX_ADDRESSES = 3


class BlockedAddress(Exception):
    """The host is, or resolved to, an address webhooks may not be sent to."""


class DeadlineStream(httpcore.NetworkStream):
    """A stream whose every operation ends by the attempt's deadline."""

    def __init__(self, inner: httpcore.NetworkStream, deadline: float) -> None:
        self.inner = inner
        self.deadline = deadline

    def _left(self, timeout: float | None, error: type[Exception]) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise error("the attempt ran out of time")
        return left if timeout is None else min(timeout, left)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self.inner.read(max_bytes, self._left(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self.inner.write(buffer, self._left(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self.inner.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        left = self._left(timeout, httpcore.ConnectTimeout)
        return DeadlineStream(self.inner.start_tls(ssl_context, server_hostname, left), self.deadline)

    def get_extra_info(self, info: str) -> Any:
        return self.inner.get_extra_info(info)


class GuardedBackend(httpcore.NetworkBackend):
    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.plain = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        try:
            addresses = webhook_urls.resolve(host, port)
        except (OSError, UnicodeError) as exc:
            raise httpcore.ConnectError(f"could not resolve {host}: {exc}") from None
        for address in addresses:
            _check(host, address)
        error: Exception = httpcore.ConnectError(f"{host} has no address")
        for address in addresses[:MAX_ADDRESSES]:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise httpcore.ConnectTimeout("the attempt ran out of time")
            wait = left if timeout is None else min(timeout, left)
            try:
                # The checked address itself, so nothing resolves the name again.
                stream = self.plain.connect_tcp(str(address), port, wait, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
                continue
            try:
                _check(host, webhook_urls.parse_address(str(stream.get_extra_info("server_addr")[0])))
            except BaseException:
                stream.close()
                raise
            return DeadlineStream(stream, self.deadline)
        raise error

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None
    ) -> httpcore.NetworkStream:
        raise BlockedAddress("webhooks are not sent over unix sockets")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


def _check(host: str, address: webhook_urls.IPAddress) -> None:
    kind = webhook_urls.refusal(address)
    if kind is not None:
        raise BlockedAddress(webhook_urls.refusal_message(host, address, kind))


class GuardedTransport(httpx.HTTPTransport):
    def __init__(self, deadline: float, ssl_context: ssl.SSLContext) -> None:
        super().__init__(verify=ssl_context, trust_env=False)
        # httpx builds its connection pool without a way to pass a network
        # backend; the same pool, with ours, replaces it.
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context, max_connections=1, network_backend=GuardedBackend(deadline)
        )


def client(timeout: float, ssl_context: ssl.SSLContext) -> httpx.Client:
    """A client for one attempt, which ends within ``timeout`` seconds from now, whatever the receiver does."""
    deadline = time.monotonic() + timeout
    return httpx.Client(
        transport=GuardedTransport(deadline, ssl_context),
        timeout=timeout,
        follow_redirects=False,
        trust_env=False,
    )
