"""The API's RabbitMQ publisher against a RabbitMQ that does not answer (no real RabbitMQ needed)."""

from __future__ import annotations

import gc
import socket
import threading
from collections.abc import Iterator

import pytest

from bridge.amqp import publisher as publisher_module
from bridge.amqp.publisher import Publisher
from bridge.amqp.topology import Topology
from core.errors import IngressUnavailable


@pytest.fixture
def silent_server() -> Iterator[tuple[int, list[socket.socket]]]:
    """A TCP server that accepts connections and never says a word (a frozen RabbitMQ, or a broken proxy)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                accepted.append(server.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield server.getsockname()[1], accepted
    server.close()
    for connection in accepted:
        connection.close()


def test_a_publish_to_a_rabbitmq_that_does_not_answer_tries_one_connection_only(silent_server, monkeypatch):
    port, accepted = silent_server
    monkeypatch.setattr(publisher_module, "CONNECT_TIMEOUT_S", 0.3)  # bounds the AMQP handshake
    publisher = Publisher(f"amqp://guest:guest@127.0.0.1:{port}/%2F", Topology("taskrelay.unused"))
    try:
        with pytest.raises(IngressUnavailable, match=r"not answering.*connect: no answer within 0\.3 s"):
            publisher.publish(b"{}", "normal", "m-1")
        assert len(accepted) == 1  # a connection it had just opened failed: no second try, no second wait
    finally:
        publisher.close()
    gc.collect()  # its socket was closed, not left to the GC (a ResourceWarning, an error here)
