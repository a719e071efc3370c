"""The client's address, for django-axes' lockouts: the peer, or the one a trusted proxy names.

Behind the TLS proxy the README recommends, ``REMOTE_ADDR`` is the proxy's
for every client. ``X-Forwarded-For`` says who the client was, but anyone
can send that header, so it is read only when the peer is one of
``BATCHSITE_TRUSTED_PROXIES``, and then from the right: each trusted proxy
appends the address it saw, so the first address from the right that is not
a trusted proxy is the client (what lies to its left the client wrote
itself). Hand-rolled rather than django-ipware because the rule is these
dozen lines and ipware's proxy-count/trusted-prefix model does not say
"only when the peer is a proxy".
"""

from __future__ import annotations

import ipaddress

from django.conf import settings
from django.http import HttpRequest


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip().strip("[]").split("%", 1)[0])
    except ValueError:
        return None


def _trusted(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return any(address.version == net.version and address in net for net in settings.BATCHSITE_TRUSTED_PROXIES)


def client_ip(request: HttpRequest) -> str | None:
    peer_text = request.META.get("REMOTE_ADDR", "")
    peer = _address(peer_text)
    if peer is None:
        return peer_text or None
    if not _trusted(peer):
        return str(peer)  # a header from a client that is not a proxy is ignored
    client = peer
    for hop in reversed(request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")):
        address = _address(hop)
        if address is None:
            break  # unreadable: the nearest address read so far is the best known
        client = address
        if not _trusted(address):
            break
    return str(client)
