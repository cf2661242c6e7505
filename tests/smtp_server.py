"""A pytest fixture running a real SMTP server (aiosmtpd) on 127.0.0.1 that keeps what it receives.

Import it into a test module: `from tests.smtp_server import smtp_server  # noqa: F401`.
"""

from __future__ import annotations

import email
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import default as default_policy
from typing import Any

import pytest
from aiosmtpd.controller import Controller

HOST = "127.0.0.1"


@dataclass(frozen=True)
class ReceivedMessage:
    """One message as the server accepted it: envelope, raw bytes, and parsed content.

    `message` is parsed with line endings turned from CRLF (the wire's) into LF.
    """

    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    message: EmailMessage


@dataclass
class SmtpServer:
    """Where the fixture's server listens, what it received, and which recipients it refuses."""

    host: str
    port: int
    messages: list[ReceivedMessage] = field(default_factory=list)
    refuse: dict[str, str] = field(default_factory=dict)
    """Recipient address -> SMTP reply to RCPT TO, e.g. "550 5.1.1 No such user"."""


class _StoringHandler:
    def __init__(self, server: SmtpServer) -> None:
        self.server = server

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any) -> str:
        reply = self.server.refuse.get(address)
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        content = bytes(envelope.content)
        message = email.message_from_bytes(content.replace(b"\r\n", b"\n"), policy=default_policy)
        assert isinstance(message, EmailMessage)
        self.server.messages.append(ReceivedMessage(envelope.mail_from, list(envelope.rcpt_tos), content, message))
        return "250 Message accepted for delivery"


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    # Controller(port=0) cannot report the port it got in every aiosmtpd version.
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    """Run an SMTP server for one test and stop it afterwards."""
    server = SmtpServer(host=HOST, port=free_port())
    controller = Controller(_StoringHandler(server), hostname=HOST, port=server.port)
    controller.start()
    try:
        yield server
    finally:
        controller.stop()
