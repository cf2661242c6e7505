"""Outbound requests refuse internal addresses: literals, names that resolve inside, redirects, other schemes."""

from __future__ import annotations

import ipaddress
import re
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from jobs import outbound


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.9",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "::1",
        "fe80::1",
        "fd00::1",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
        "224.0.0.1",
    ],
)
def test_internal_addresses_are_refused(address):
    assert outbound.is_internal(ipaddress.ip_address(address))
    with pytest.raises(outbound.BlockedURL, match="an internal address; set ALLOW_PRIVATE_URLS=true"):
        outbound.open_url(f"http://[{address}]/" if ":" in address else f"http://{address}/", False, 2)


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses_pass_the_check(address):
    assert not outbound.is_internal(ipaddress.ip_address(address))


def test_a_name_is_checked_on_what_it_resolves_to(monkeypatch):
    def fake(host, port, *args, **kwargs):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("169.254.169.254", port))]

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    with pytest.raises(outbound.BlockedURL, match=re.escape("'metadata.example' resolves to 169.254.169.254")):
        outbound.open_url("http://metadata.example/latest/meta-data/", False, 2)


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/x", "gopher://example.com"])
def test_only_http_and_https(url):
    with pytest.raises(outbound.BlockedURL, match="only http and https"):
        outbound.open_url(url, False, 2)


@pytest.fixture
def redirector() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/ok":
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"fine")
                return
            self.send_response(302)
            self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_a_redirect_to_an_internal_address_is_refused(redirector):
    only_metadata = lambda address: address in ipaddress.ip_network("169.254.0.0/16")  # noqa: E731
    opener = outbound.opener(allow_private=False, blocked=only_metadata)  # the test server itself is on loopback
    assert opener.open(f"{redirector}/ok", timeout=5).read() == b"fine"
    with pytest.raises(outbound.BlockedURL, match=re.escape("169.254.169.254")):
        opener.open(f"{redirector}/go", timeout=5)


def test_allow_private_urls_lets_loopback_through(redirector):
    assert outbound.open_url(f"{redirector}/ok", True, 5).read() == b"fine"
