"""Which webhook URLs batchsite will POST to: the SSRF guard.

A webhook is a request that batchsite makes on a user's behalf from inside
the operator's network (the GPU hosts), so a URL must not be a way to reach
that network: the cloud metadata service at 169.254.169.254, a database on
10.x, the worker's own loopback. A URL's host is resolved and refused when
any of its addresses is not a global unicast address, whatever form it was
written in (``2130706433``, ``0x7f000001`` and ``127.1`` are all 127.0.0.1 to
the resolver, and ``::ffff:127.0.0.1`` is too, once unwrapped).

A URL is normalised once, by ``normalize``, the same way at create and at
send: the host mapped as browsers map it (UTS #46: full-width letters and
dots such as ``127.0.0.1。``, circled digits, upper case), trailing dots
dropped, then read by httpx, the sender's own URL parser. The check looks at
that host and the sender POSTs to that URL, so what was checked is what is
contacted, and nothing accepted at create is refused only at send.

The same rule runs twice: here when a batch is created (a 400 that says why),
and in the sender against each address it actually connects to, because a
name can resolve elsewhere by then (DNS rebinding). Receivers inside the
network are the operator's call: ``BATCHSITE_WEBHOOK_ALLOW_PRIVATE=1``, or
``BATCHSITE_WEBHOOK_ALLOWED_NETWORKS`` for some networks only.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any
from urllib.parse import SplitResult, urlsplit, urlunsplit

import httpx
import idna
from django.conf import settings

from jobs.errors import InvalidRequest

MAX_URL_LENGTH = 2048
SCHEMES = ("http", "https")
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_UNIQUE_LOCAL = ipaddress.ip_network("fc00::/7")


def _refuse(message: str) -> InvalidRequest:
    return InvalidRequest(message, param="webhook_url", code="invalid_webhook_url")


def parse_address(text: str) -> IPAddress:
    """An address as getaddrinfo gives it (an IPv6 zone such as ``%eth0`` dropped)."""
    return ipaddress.ip_address(text.split("%", 1)[0])


def _embedded(address: IPAddress) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 address carries and can reach: mapped, 6to4, NAT64."""
    if not isinstance(address, ipaddress.IPv6Address):
        return []
    found = [a for a in (address.ipv4_mapped, address.sixtofour) if a is not None]
    if address in _NAT64:
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return found


def kind_of(address: IPAddress) -> str | None:
    """Why this is not a global unicast address ("loopback address", ...), or None if it is one."""
    for inner in _embedded(address):
        inner_kind = kind_of(inner)
        if inner_kind is not None:
            return f"{inner_kind} ({inner}) in IPv6 form"
    if address.is_unspecified:
        return "unspecified address"
    if address.is_loopback:
        return "loopback address"
    if address.is_link_local:
        return "link-local address"
    if address.is_multicast:
        return "multicast address"
    if isinstance(address, ipaddress.IPv6Address) and address in _UNIQUE_LOCAL:
        return "IPv6 unique-local address"
    if address.is_reserved:
        return "reserved address"
    if address.is_private:
        return "private address"
    if isinstance(address, ipaddress.IPv6Address) and address.is_site_local:
        return "IPv6 site-local address"
    if not address.is_global:
        return "non-global address"
    return None


def refusal(address: IPAddress) -> str | None:
    """Why batchsite will not send to ``address`` under the operator's settings ("loopback", ...), or None."""
    conf = settings.BATCHSITE_WEBHOOKS
    if conf.allow_private:
        return None
    kind = kind_of(address)
    if kind is None:
        return None
    candidates: list[IPAddress] = [address, *_embedded(address)]
    if any(c.version == net.version and c in net for c in candidates for net in conf.allowed_networks):
        return None
    return kind


def refusal_message(host: str, address: IPAddress, kind: str) -> str:
    """Why webhook_url is refused, naming the address when the host is a name that resolved to it."""
    article = "an" if kind[0] in "aeiouI" else "a"
    literal = host.strip("[]").split("%", 1)[0]
    if _same_address(literal, address):
        what = f"{host} is {article} {kind}"
    else:
        what = f"{host} resolves to {address}, {article} {kind}"
    return (
        f"webhook_url must point to the public internet, but {what}. "
        "Webhooks to other networks must be allowed by the operator "
        "(BATCHSITE_WEBHOOK_ALLOW_PRIVATE or BATCHSITE_WEBHOOK_ALLOWED_NETWORKS)."
    )


def _same_address(text: str, address: IPAddress) -> bool:
    try:
        return ipaddress.ip_address(text) == address
    except ValueError:
        return False


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to (an IP literal in any form resolves to itself).

    A trailing dot (``localhost.``) names the same host, and is dropped: some
    resolvers skip the hosts file for it, and the check must see what a
    connection would reach.
    """
    infos = socket.getaddrinfo(host[:-1] if host.endswith(".") else host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(parse_address(str(info[4][0])) for info in infos))


def _split(url: str) -> tuple[SplitResult, str, int]:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise _refuse(f"webhook_url is not a valid URL ({exc}).") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        shown = f"'{scheme}'" if scheme else "none"
        raise _refuse(f"webhook_url must be an http:// or https:// URL; its scheme is {shown}.")
    host = parts.hostname
    if not host:
        raise _refuse("webhook_url has no host name.")
    return parts, host, port or (443 if scheme == "https" else 80)


def _mapped_host(host: str) -> str:
    """The host as a connection would name it: UTS #46-mapped (as browsers do), without trailing dots."""
    if ":" not in host:  # an IPv6 literal is left as written
        try:
            host = idna.uts46_remap(host, std3_rules=False, transitional=False)
        except (idna.IDNAError, UnicodeError, ValueError):
            raise _refuse(f"webhook_url has an invalid host name: {host!r}.") from None
    host = host.rstrip(".")
    if not host:
        raise _refuse("webhook_url has no host name.")
    return host


def _prepared(url: Any) -> tuple[SplitResult, str, int]:
    """``url`` split, with its mapped host and its port; InvalidRequest if it is not a URL with a host."""
    if not isinstance(url, str):
        raise _refuse("webhook_url must be a string.")
    if len(url) > MAX_URL_LENGTH:
        raise _refuse(f"webhook_url is {len(url)} characters long; at most {MAX_URL_LENGTH} are allowed.")
    try:
        url.encode("utf-8")
    except UnicodeEncodeError:
        raise _refuse("webhook_url contains characters that are not valid Unicode.") from None
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in url):
        raise _refuse("webhook_url must not contain spaces or control characters.")
    parts, host, port = _split(url)
    return parts, _mapped_host(host), port


def _canonical(parts: SplitResult, host: str) -> str:
    if ":" not in host:
        try:
            # Legacy IPv4 forms (0177.0.0.1, 127.1, 0x7f.1, 2130706433) as the
            # resolver reads them: httpx refuses some of them as they are written.
            host = socket.inet_ntoa(socket.inet_aton(host))
        except OSError:
            pass
    userinfo, _, _ = parts.netloc.rpartition("@")
    netloc = (userinfo + "@" if userinfo else "") + (f"[{host}]" if ":" in host else host)
    if parts.port is not None:
        netloc += f":{parts.port}"
    try:
        normal = str(httpx.URL(urlunsplit(parts._replace(scheme=parts.scheme.lower(), netloc=netloc))))
    except httpx.InvalidURL as exc:
        raise _refuse(f"webhook_url has an invalid host name: {host!r} ({exc}).") from None
    return normal


def normalize(url: Any) -> str:
    """The one form of a webhook URL that is checked and sent to (see the module's docstring)."""
    parts, host, _ = _prepared(url)
    return _canonical(parts, host)


def check_webhook_url(url: Any) -> str:
    """``url`` if batchsite may POST events to it, else InvalidRequest (param ``webhook_url``) saying why.

    The check is on the normal form (``normalize``), which the sender POSTs
    to. A name that does not resolve now is accepted: the sender resolves it
    again at each attempt and applies the same rule then, so nothing gets
    through that way, and a receiver whose DNS record is not up yet still
    gets events.
    """
    parts, host, port = _prepared(url)
    if settings.BATCHSITE_WEBHOOKS.allow_private:
        _canonical(parts, host)  # a URL the sender could not read is refused here, not at send
        return url
    try:
        # An IP literal is checked as written (a zone such as %eth0 cannot make it resolve elsewhere).
        addresses = [parse_address(host)]
    except ValueError:
        if "%" in host or ":" in host:
            raise _refuse(f"webhook_url has an invalid host: {host!r}.") from None
        try:
            addresses = resolve(host, port)
        except UnicodeError:
            raise _refuse(f"webhook_url has an invalid host name: {host!r}.") from None
        except OSError:
            addresses = []
    for address in addresses:
        kind = refusal(address)
        if kind is not None:
            raise _refuse(refusal_message(host, address, kind))
    _canonical(parts, host)
    return url
