"""Outbound HTTP from workers (the failure webhook, and any task that fetches a URL): never to an address
inside the network unless ALLOW_PRIVATE_URLS=true.

A URL is refused when its host resolves to a loopback, link-local (169.254.0.0/16 and fe80::/10, which hold
the cloud metadata endpoints), private (10/8, 172.16/12, 192.168/16, fc00::/7), shared (100.64/10),
multicast, reserved or unspecified address, IPv4-mapped IPv6 forms included. The check is made on the
addresses the connection then uses (the connection resolves once, checks, and connects to the checked
address, so a DNS answer that changes between check and connect cannot slip through), and again on every
redirect, which goes through the same connection classes. Only http and https are opened.

Task code that fetches URLs should use `open_url` rather than urllib directly.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import urllib.request
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from core.errors import TaskInputError

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class BlockedURL(TaskInputError):
    """An outbound URL that points inside the network (or is not http/https) and was not allowed."""


def is_internal(address: Address) -> bool:
    """Whether `address` is one outbound requests must not reach without ALLOW_PRIVATE_URLS."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or address in ipaddress.ip_network("100.64.0.0/10")
    )


def resolve(host: str, port: int, blocked: Callable[[Address], bool]) -> tuple[Any, ...]:
    """Return one getaddrinfo entry for `host`:`port` after checking every address it resolves to."""
    try:
        entries = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise OSError(f"cannot resolve {host!r}: {exc}") from None
    for *_, sockaddr in entries:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%")[0])
        if blocked(address):
            raise BlockedURL(
                f"{host!r} resolves to {address}, an internal address; set ALLOW_PRIVATE_URLS=true to allow it"
            )
    return entries[0]


def _connect(host: str, port: int, timeout: float, blocked: Callable[[Address], bool]) -> socket.socket:
    family, kind, proto, _, sockaddr = resolve(host, port, blocked)
    sock = socket.socket(family, kind, proto)
    sock.settimeout(timeout)
    try:
        sock.connect(sockaddr)
    except OSError:
        sock.close()
        raise
    return sock


def opener(allow_private: bool, blocked: Callable[[Address], bool] = is_internal) -> urllib.request.OpenerDirector:
    """Return a urllib opener for http and https whose every connection (redirects too) is checked."""
    check: Callable[[Address], bool] = (lambda _address: False) if allow_private else blocked

    class CheckedHTTPConnection(http.client.HTTPConnection):
        def connect(self) -> None:
            self.sock = _connect(self.host, self.port, self.timeout, check)  # type: ignore[arg-type]

    class CheckedHTTPSConnection(http.client.HTTPSConnection):
        def connect(self) -> None:
            sock = _connect(self.host, self.port, self.timeout, check)  # type: ignore[arg-type]
            self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]

    class HTTP(urllib.request.HTTPHandler):
        def http_open(self, req: urllib.request.Request) -> Any:
            return self.do_open(CheckedHTTPConnection, req)

    class HTTPS(urllib.request.HTTPSHandler):
        def https_open(self, req: urllib.request.Request) -> Any:
            return self.do_open(CheckedHTTPSConnection, req, context=ssl.create_default_context())

    director = urllib.request.OpenerDirector()
    for handler in (HTTP(), HTTPS(), urllib.request.HTTPRedirectHandler(), urllib.request.HTTPErrorProcessor()):
        director.add_handler(handler)
    director.add_handler(urllib.request.HTTPDefaultErrorHandler())
    return director


def check_scheme(url: str) -> None:
    """Refuse a URL that is not http or https, naming it."""
    scheme = urlsplit(url).scheme
    if scheme not in ("http", "https"):
        raise BlockedURL(f"only http and https URLs may be fetched, got {scheme or 'no scheme'!r}")


def open_url(request: urllib.request.Request | str, allow_private: bool, timeout: float) -> Any:
    """Open `request` like urllib.request.urlopen, refusing internal addresses (BlockedURL) at every hop."""
    url = request.full_url if isinstance(request, urllib.request.Request) else request
    check_scheme(url)
    return opener(allow_private).open(request, timeout=timeout)
