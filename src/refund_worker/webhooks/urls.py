"""The SSRF guard: where a webhook may be sent.

An endpoint's URL is ``https`` at a public address. Hosts named in
``REFUND_WORKER_WEBHOOK_ALLOWED_HOSTS`` (tests, development) may also use plain ``http`` and
private, loopback or link-local addresses. The check runs when an endpoint is registered and again
before every delivery (a name may have been pointed elsewhere since), on every address the name
resolves to, and the delivery connects to an address so checked (``pinning``). No redirect is
ever followed, so a receiver cannot bounce a delivery inside.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

__all__ = [
    "MAX_URL_LENGTH",
    "Resolver",
    "UnsafeDestination",
    "check_destination",
    "check_url",
    "resolve_host",
]

MAX_URL_LENGTH = 2048

Resolver = Callable[[str, int], list[str]]


class UnsafeDestination(ValueError):
    """The URL is not one a webhook may be sent to (the message says why)."""


def resolve_host(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (``UnsafeDestination`` when it does not)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UnsafeDestination(f"cannot resolve {host!r}: {exc}") from None
    return sorted({str(info[4][0]) for info in infos})


def _allowed(host: str, allowed_hosts: Iterable[str]) -> bool:
    return host.lower() in {name.lower().strip("[]") for name in allowed_hosts}


def check_url(url: str, allowed_hosts: Iterable[str]) -> str:
    """``url`` if it is well-formed and its scheme is allowed for its host, else
    ``UnsafeDestination`` naming the problem (no resolution: see ``check_destination``)."""
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeDestination(f"longer than {MAX_URL_LENGTH} characters")
    if any(ord(char) <= 32 or ord(char) == 127 for char in url):
        raise UnsafeDestination("contains spaces or control characters")
    parts = urlsplit(url)
    if parts.scheme not in {"https", "http"}:
        raise UnsafeDestination("must be an https:// URL")
    if not parts.hostname:
        raise UnsafeDestination("has no host")
    if parts.username is not None or parts.password is not None:
        raise UnsafeDestination("must not carry a user or password")
    if parts.fragment:
        raise UnsafeDestination("must not have a #fragment")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise UnsafeDestination("has an invalid port") from None
    if parts.scheme == "http" and not _allowed(parts.hostname, allowed_hosts):
        raise UnsafeDestination(
            "must be https:// (plain http only for hosts in REFUND_WORKER_WEBHOOK_ALLOWED_HOSTS)"
        )
    return url


def check_destination(
    url: str, allowed_hosts: Iterable[str], *, resolve: Resolver = resolve_host
) -> list[str]:
    """The addresses ``url``'s host resolves to, when every one is public (or the host is
    allowed); ``UnsafeDestination`` otherwise."""
    allowed = list(allowed_hosts)
    check_url(url, allowed)
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        addresses = [str(ipaddress.ip_address(host))]
    except ValueError:
        addresses = resolve(host, port)
    if _allowed(host, allowed):
        return addresses
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if not ip.is_global or ip.is_multicast:
            raise UnsafeDestination(
                f"{host} resolves to {address}, a private, loopback or reserved address "
                "(allowed only for hosts in REFUND_WORKER_WEBHOOK_ALLOWED_HOSTS)"
            )
    return addresses
