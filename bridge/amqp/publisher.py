"""Publish task envelopes to the ingress with publisher confirms, a whole group-committed batch at a time."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import pika

from bridge.amqp import CONNECT_TIMEOUT_S, TRANSPORT_ERRORS, parameters, redact
from bridge.amqp.topology import AMQP_PRIORITY, ROUTING_KEY, Topology
from bridge.message import IN_REDIS_HEADER, Outgoing
from core.errors import IngressUnavailable

log = logging.getLogger("taskrelay.amqp")

CONFIRM_TIMEOUT_S = 10.0
"""Longest a publisher waits for RabbitMQ to answer (connect, declare, confirm), in seconds."""
PUBLISH_TRIES = 2
"""A publish that fails on a broken connection is retried once on a fresh one (not one that failed on a connection
it had just opened: RabbitMQ is then down or not answering, and a second try would only double the wait)."""

REFUSED = "RabbitMQ refused the message (nack: the ingress queue may be at a length limit, e.g. a max-length policy)"
"""A message RabbitMQ nacked: a queue at its length limit with `overflow: reject-publish`, or an internal error."""
UNROUTABLE = "RabbitMQ could not route the message"
"""A confirmed message that RabbitMQ returned: no queue was bound to take it (the ingress queue was deleted)."""

T = TypeVar("T")


class _Link:
    """One SelectConnection and confirm-mode channel, driven by whichever thread holds the Publisher's lock.

    pika's SelectConnection is its asynchronous API; here the caller turns its
    I/O loop (`poll`, `process_timeouts`) until what it waits for has happened,
    so a whole batch is written at once and its confirms are awaited together.
    """

    def __init__(self, url: str) -> None:
        self.failure: str | None = None
        self.confirmed: dict[int, str | None] = {}  # delivery tag -> None (acked) or why it was refused
        self.returned: set[str] = set()  # message ids RabbitMQ could not route
        self.next_tag = 1
        self.closing = False  # close() asked for it: the close callbacks are no failure
        self._opened: list[Any] = []
        self.connection = pika.SelectConnection(
            parameters(url),
            on_open_callback=self._opened.append,
            on_open_error_callback=lambda _c, exc: self._fail(f"cannot connect ({exc.__class__.__name__})"),
            on_close_callback=lambda _c, exc: self._fail(f"connection closed ({exc.__class__.__name__})"),
        )
        self.blocked: str | None = None
        """Why RabbitMQ blocks this connection (a memory or disk alarm: it reads nothing from it), or None."""
        self.connection.add_on_connection_blocked_callback(self._on_blocked)
        self.connection.add_on_connection_unblocked_callback(lambda _c, _frame: setattr(self, "blocked", None))
        self.ioloop = self.connection.ioloop
        self.ioloop.activate_poller()  # what IOLoop.start() would do; this loop is turned by run_until instead
        self.channel: Any = None

    def open(self, topology: Topology) -> None:
        """Finish connecting, open a channel, declare `topology` and turn on confirms; raise _LinkBroken."""
        self.run_until(lambda: bool(self._opened), "connect", timeout_s=CONNECT_TIMEOUT_S)
        self.connection.channel(on_open_callback=self._opened.append)
        self.run_until(lambda: len(self._opened) == 2, "open a channel")
        self.channel = self._opened[1]
        self.channel.add_on_close_callback(lambda _ch, exc: self._fail(f"channel closed: {exc}"))
        for method, kwargs in topology.declarations():
            self.call(method, **kwargs)
        self.call("confirm_delivery", ack_nack_callback=self._on_confirm)
        self.channel.add_on_return_callback(self._on_return)

    def _fail(self, reason: str) -> None:
        if self.failure is None and not self.closing:
            self.failure = reason

    def _on_blocked(self, _connection: Any, frame: Any) -> None:
        self.blocked = getattr(frame.method, "reason", "") or "a resource alarm"

    def check_blocked(self) -> None:
        """Raise _Blocked if RabbitMQ blocks this connection, after reading whether it has ended meanwhile.

        RabbitMQ tells a connection that has published when an alarm starts (read while waiting for a confirm)
        and when it ends; while blocked it reads nothing from it, so a publish would only wait out its confirm
        timeout and be taken in later. Only a blocked link reads ahead (a poll that does not wait): an unblocked
        one pays nothing here."""
        if self.blocked is None:
            return
        wake = self.ioloop.call_later(0, lambda: None)
        try:
            self.ioloop.poll()
            self.ioloop.process_timeouts()
        finally:
            self.ioloop.remove_timeout(wake)
        if self.failure is not None:
            raise _LinkBroken(self.failure)
        if self.blocked is not None:
            raise _Blocked(self.blocked)

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        outcome = None if isinstance(method, pika.spec.Basic.Ack) else REFUSED
        tags = range(min(self.confirmed, default=method.delivery_tag), method.delivery_tag + 1)
        for tag in tags if method.multiple else (method.delivery_tag,):
            if tag in self.confirmed and self.confirmed[tag] == "":
                self.confirmed[tag] = outcome

    def _on_return(self, _channel: Any, _method: Any, properties: Any, _body: bytes) -> None:
        self.returned.add(properties.message_id)

    @property
    def usable(self) -> bool:
        return self.failure is None and self.channel is not None and self.channel.is_open

    def run_until(self, done: Callable[[], bool], what: str, timeout_s: float = CONFIRM_TIMEOUT_S) -> None:
        """Turn the I/O loop until `done()`; raise _LinkBroken on failure or after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        wake = self.ioloop.call_later(timeout_s, lambda: None)  # bounds the poll below
        try:
            while not done():
                if self.failure is not None:
                    raise _LinkBroken(f"{what}: {self.failure}")
                if self.blocked is not None:
                    raise _Blocked(self.blocked, after_send=True)
                if time.monotonic() >= deadline:
                    raise _LinkBroken(f"{what}: no answer within {timeout_s:g} s")
                self.ioloop.poll()
                self.ioloop.process_timeouts()
        finally:
            self.ioloop.remove_timeout(wake)

    def call(self, method: str, **kwargs: Any) -> Any:
        """Call the channel's asynchronous `method` (one that takes a `callback`), wait and return its answer."""
        answers: list[Any] = []
        getattr(self.channel, method)(**kwargs, callback=answers.append)
        self.run_until(lambda: bool(answers), method)
        return answers[0]

    def publish(self, messages: Sequence[Outgoing], exchange: str) -> list[str | None]:
        """Publish `messages` at once and wait for all their confirms; return None or a refusal reason for each."""
        self.confirmed.clear()
        self.returned.clear()
        tags = []
        for message in messages:
            properties = pika.BasicProperties(
                delivery_mode=pika.DeliveryMode.Persistent,
                priority=AMQP_PRIORITY[message.priority],
                message_id=message.message_id,
                content_type="application/json",
                headers={IN_REDIS_HEADER: 1} if message.in_redis else None,
            )
            self.channel.basic_publish(exchange, ROUTING_KEY, message.body, properties, mandatory=True)
            self.confirmed[self.next_tag] = ""  # "" = not confirmed yet
            tags.append(self.next_tag)
            self.next_tag += 1
        self._coalesce_output()
        self.run_until(lambda: all(self.confirmed[tag] != "" for tag in tags), "publish")
        outcomes = [self.confirmed[tag] for tag in tags]
        return [
            UNROUTABLE if message.message_id in self.returned else outcome
            for message, outcome in zip(messages, outcomes, strict=True)
        ]

    def _coalesce_output(self) -> None:
        """Join the frames waiting in pika's send buffer, so the batch goes out in one send().

        pika sends each buffered frame with its own send() once the socket is
        writable: three per message (method, header, body). One joined chunk is
        one system call for the API and one TCP read for RabbitMQ. The bytes and
        their order are unchanged. This reaches into pika's transport (pinned
        pika 1.4.4, checked by a test); if that changes, frames go out as before.
        """
        buffers = getattr(getattr(self.connection, "_transport", None), "_tx_buffers", None)
        if buffers is not None and len(buffers) > 1:
            joined = b"".join(buffers)
            buffers.clear()
            buffers.append(joined)

    def close(self) -> None:
        """Close the connection (briefly waiting for RabbitMQ's close-ok) and release the loop's descriptors."""
        with contextlib.suppress(*TRANSPORT_ERRORS, _LinkBroken):
            if self.connection.is_open:
                self.closing, self.failure = True, None  # what failed before no longer stops the close
                self.connection.close()
                self.run_until(lambda: self.connection.is_closed, "close", timeout_s=1.0)
        self.ioloop.deactivate_poller()
        self.ioloop.close()
        if not (self.connection.is_open or self.connection.is_closed):
            # Still in its AMQP handshake (RabbitMQ did not answer it): pika 1.4's close() cannot cut that cleanly
            # (its connection workflow trips an assertion), so its socket is closed here, not later by the GC.
            sock = getattr(getattr(self.connection, "_transport", None), "_sock", None)
            if sock is not None:
                sock.close()


class _LinkBroken(Exception):
    """The connection or channel failed, or RabbitMQ did not answer in time."""


class _Blocked(Exception):
    """RabbitMQ blocks the connection (a memory or disk alarm); `after_send`: what was sent may still be taken in."""

    def __init__(self, reason: str, after_send: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.after_send = after_send


class Publisher:
    """Publish task envelopes with publisher confirms over one connection per process.

    Thread-safe: callers take turns under a lock. `publish_many` writes a whole
    batch before waiting, so its confirms come back together (RabbitMQ acks
    them with `multiple`): per message, that costs the API and RabbitMQ a
    fraction of one publish-and-wait each (see the README's ingress benchmark).
    The connection is opened on first use and reopened when found broken, so it
    survives RabbitMQ restarts and frozen Lambda containers; messages caught in
    a broken connection are published once more on the new one (the bridge
    de-duplicates by task id).
    """

    def __init__(self, url: str, topology: Topology) -> None:
        self.url = url
        self.topology = topology
        self._lock = threading.Lock()
        self._link: _Link | None = None

    def _open(self) -> _Link:
        if self._link is not None and self._link.usable:
            return self._link
        self._close()
        self.topology, link = self.topology.declare_with(self._connect, _LinkBroken)
        self._link = link
        return link

    def _connect(self, topology: Topology) -> _Link:
        link = _Link(self.url)
        try:
            link.open(topology)
        except BaseException:
            link.close()
            raise
        return link

    def _close(self) -> None:
        link, self._link = self._link, None
        if link is not None:
            link.close()

    def _call(self, action: Callable[[_Link], T], what: str) -> T:
        """Run `action` on an open link, reconnecting once if it broke; raise IngressUnavailable.

        While RabbitMQ blocks the connection (an alarm), nothing is sent: the link is kept (it is told when the
        alarm ends) and the call fails at once, instead of waiting out CONFIRM_TIMEOUT_S on each of two
        connections."""
        for attempt in range(1, PUBLISH_TRIES + 1):
            fresh = self._link is None or not self._link.usable
            try:
                link = self._open()
                link.check_blocked()
                return action(link)
            except _Blocked as exc:
                later = "; what was just sent may still be queued once it ends" if exc.after_send else ""
                raise IngressUnavailable(
                    f"RabbitMQ at {redact(self.url)} blocks publishing ({exc.reason}: a memory or disk alarm){later}"
                ) from exc
            except (_LinkBroken, *TRANSPORT_ERRORS) as exc:
                self._close()
                if attempt == PUBLISH_TRIES or fresh:
                    raise IngressUnavailable(f"RabbitMQ is not answering at {redact(self.url)} ({exc})") from exc
                log.warning("RabbitMQ connection broken during %s (%s); reconnecting", what, exc)
        raise AssertionError("unreachable")

    def publish_many(self, messages: Sequence[Outgoing]) -> list[str | None]:
        """Publish persistent messages and wait for RabbitMQ's confirms.

        Returns, per message, None once confirmed or the reason RabbitMQ
        refused it; raises IngressUnavailable when RabbitMQ cannot be reached.
        """
        with self._lock:
            outcomes = self._call(lambda link: link.publish(messages, self.topology.exchange), "publish")
            unroutable = [n for n, outcome in enumerate(outcomes) if outcome == UNROUTABLE]
            if unroutable:  # the queue is gone (an operator deleted it): declare it again, as at start, and retry
                log.warning("RabbitMQ could not route %d messages: declaring the ingress again", len(unroutable))
                self._close()
                again = [messages[n] for n in unroutable]
                retried = self._call(lambda link: link.publish(again, self.topology.exchange), "publish")
                for n, outcome in zip(unroutable, retried, strict=True):
                    outcomes[n] = outcome
            return outcomes

    def publish(self, body: bytes, priority: str, message_id: str) -> None:
        """Publish one persistent message and return once RabbitMQ confirmed it; raise IngressUnavailable."""
        (refused,) = self.publish_many([Outgoing(body, priority, message_id)])
        if refused is not None:
            raise IngressUnavailable(refused)

    def purge(self) -> int:
        """Drop every message waiting in the ingress queue; return how many."""

        def purge(link: _Link) -> int:
            frame = link.call("queue_purge", queue=self.topology.queue)
            return int(frame.method.message_count)

        with self._lock:
            return self._call(purge, "purge")

    def message_counts(self) -> dict[str, int]:
        """Return how many messages are ready in the ingress queue and its dead-letter queue, by queue name.

        Passive declares on the publishing connection (no connection of its own); raises IngressUnavailable.
        Unacked messages (a bridge's prefetched batch) are not counted: RabbitMQ reports only ready ones.
        """

        def count(link: _Link) -> dict[str, int]:
            queues = (self.topology.queue, self.topology.dead_letter_queue)
            return {q: int(link.call("queue_declare", queue=q, passive=True).method.message_count) for q in queues}

        with self._lock:
            return self._call(count, "count messages")

    def close(self) -> None:
        """Close the connection, if open."""
        with self._lock:
            self._close()
