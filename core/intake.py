"""The intake: what happens to a received message between the socket and its PUBACK.

The network thread only calls `Intake.accept`, which takes an acknowledgement
ticket (QoS 1) and queues the message on a `LanePool` keyed by topic; it never
runs user code and never waits for a backend. Handler threads take the waiting
messages in batches (messages of one topic in arrival order, different topics
in parallel on MQTT_HANDLER_CONCURRENCY threads) and, for each message:

- route it (middleware and handler run here, `def` or `async def`);
- on a `PayloadError`, dead-letter it at once;
- on any other exception, retry up to MQTT_HANDLER_RETRIES attempts with a
  jittered backoff, then dead-letter it;
- on a backend outage (`support.errors.BackendUnavailable` anywhere in the
  exception chain: Redis or SQL unreachable, a lock wait), hold it: it stays
  unacknowledged and is retried with jittered backoff until the backend
  answers, however long that takes. One line is logged when an outage starts
  and one when it ends; an outage never produces a dead letter.

With an `Outbox` (the queues' dispatch outbox, wired by the command line), what
a handler dispatches is recorded, not written at once; the records of the whole
batch are stored together (one round trip, one transaction: group commit), and
only then are the batch's messages acknowledged, in arrival order
(`AckSequencer`). A handler attempt that raises leaves nothing behind, so a
retried or dead-lettered message never queues a job twice or half. If storing
fails for an outage the batch is held as above; a record the backend refuses
for another reason dead-letters just the message it came from.

QoS 0 messages have no broker window bounding them, so at most
`QOS0_BACKLOG_LIMIT` wait at once; more are dropped with a warning (QoS 0 is at
most once).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from core.acks import AckSequencer, Ticket
from core.dead_letter import build_dead_letter
from core.lanes import LanePool
from core.message import Message, MessageProperties, PayloadError, PublishFunction
from support.backoff import full_jitter
from support.errors import caused_by_outage

log = logging.getLogger("core.mqtt")

#: Seconds of the first handler retry's backoff ceiling; doubles per attempt.
HANDLER_RETRY_BASE = 0.05
#: Largest backoff between two attempts of a failing handler, seconds.
HANDLER_RETRY_CAP = 2.0
#: Seconds of the first retry's backoff ceiling during a backend outage.
OUTAGE_RETRY_BASE = 0.1
#: Largest backoff between two tries of a held message during an outage, seconds.
OUTAGE_RETRY_CAP = 5.0
#: Most QoS 0 messages waiting for a handler; more are dropped (QoS 0 is at most once).
QOS0_BACKLOG_LIMIT = 10_000
#: QoS of dead-letter publications: at least once, so a poison message is not lost twice.
DEAD_LETTER_QOS = 1
#: Seconds between two warnings about dropped QoS 0 messages.
DROP_WARNING_INTERVAL = 10.0
#: A batch is at most this fraction of the in-flight window, so the broker keeps
#: sending the next messages while a batch is handled (a batch as large as the
#: window would stall the stream at every batch).
BATCH_SHARE_OF_WINDOW = 0.25
#: Seconds of handler time one batch aims at: quick handlers come in large batches
#: (one write for many messages), and acks wait at most about this long for a batch.
BATCH_SECONDS = 0.005


class Dispatcher(Protocol):
    """What the intake needs from the router: route one message."""

    def dispatch(self, message: Message) -> bool:
        """Run the matching route; False if none matched; raise what the handler raised."""


class Outbox(Protocol):
    """Side effects that handlers record instead of writing, stored before the acks.

    `begin`/`end` bracket one handler attempt on the calling thread; `flush`
    makes the records of many finished messages durable together and raises
    when it could not (nothing of a failed backend call is half-stored).
    """

    def begin(self) -> None:
        """Start recording what this thread's handler attempt dispatches."""

    def end(self) -> Any:
        """Stop recording; return the attempt's records (None when there are none)."""

    def flush(self, records: Sequence[Any]) -> None:
        """Store the records durably, in order; raise what the backend raised."""


@dataclass(slots=True)
class Inbound:
    """One received message on its way to a handler."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: Any  #: paho's `Properties` (MQTT 5) or None; typed on a handler thread
    ticket: Ticket | None


class IntakeStats:
    """Counters of the intake (read them for tests, metrics and logs)."""

    def __init__(self) -> None:
        self.received = 0  #: messages accepted from the network thread
        self.handled = 0  #: messages whose route returned
        self.unmatched = 0  #: messages no route matched (acknowledged)
        self.dead_lettered = 0  #: messages published to the dead-letter topic
        self.dead_letter_failures = 0  #: dead letters that could not be published (logged)
        self.handler_failures = 0  #: failed handler attempts, retries included
        self.outage_retries = 0  #: tries of held messages during backend outages
        self.qos0_dropped = 0  #: QoS 0 messages dropped because the backlog was full


class _Outage:
    """Whether the queue backend is down, logging only the start and the end."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.since: float | None = None

    def start(self, exc: BaseException) -> None:
        with self._lock:
            if self.since is not None:
                return
            self.since = time.monotonic()
        log.warning(
            "queue backend unavailable (%s); holding messages unacknowledged and retrying", exc
        )

    def end(self) -> None:
        if self.since is None:
            return
        with self._lock:
            if self.since is None:
                return
            lasted = time.monotonic() - self.since
            self.since = None
        log.warning("queue backend is back after %.1f s; intake resumed", lasted)


class Intake:
    """Handles received messages beside the network thread; see the module docstring."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        publish: PublishFunction,
        sequencer: AckSequencer,
        concurrency: int,
        window: int,
        attempts: int,
        dead_letter_prefix: str,
        dead_letter_max_bytes: int,
        outbox: Outbox | None = None,
    ) -> None:
        self._dispatcher = dispatcher
        self._publish = publish
        self._sequencer = sequencer
        self._attempts = attempts
        self._dead_letter_prefix = dead_letter_prefix
        #: Most bytes of a dead letter's topic plus body (the runtime lowers it to the
        #: broker's Maximum Packet Size when an MQTT 5 broker announces one).
        self.dead_letter_max_bytes = dead_letter_max_bytes
        self._halt = threading.Event()
        self._outage = _Outage()
        self._last_drop_warning = 0.0
        self.stats = IntakeStats()
        self._outbox = outbox
        self._pool: LanePool[Inbound] = LanePool(
            self._handle_batch,
            concurrency,
            max(1, int(window * BATCH_SHARE_OF_WINDOW)),
            BATCH_SECONDS,
            "mqtt-handler",
        )

    # -- network thread -------------------------------------------------------

    def accept(
        self, topic: str, payload: bytes, qos: int, retain: bool, props: Any, mid: int
    ) -> None:
        """Queue one received message for a handler; returns at once (network thread)."""
        stats = self.stats
        stats.received += 1
        if qos:
            ticket: Ticket | None = self._sequencer.take(mid, qos)
        else:
            if self._pool.backlog >= QOS0_BACKLOG_LIMIT:
                self._drop_qos0(topic)
                return
            ticket = None
        self._pool.submit(topic, Inbound(topic, payload, qos, retain, props, ticket))

    def _drop_qos0(self, topic: str) -> None:
        self.stats.qos0_dropped += 1
        now = time.monotonic()
        if now - self._last_drop_warning >= DROP_WARNING_INTERVAL:
            self._last_drop_warning = now
            log.warning(
                "intake backlog full (%d messages): dropping QoS 0 messages, e.g. on %r "
                "(%d dropped so far); handlers are too slow for the incoming rate",
                QOS0_BACKLOG_LIMIT,
                topic,
                self.stats.qos0_dropped,
            )

    # -- lifecycle ------------------------------------------------------------

    @property
    def backlog(self) -> int:
        """Messages accepted and not yet finished."""
        return self._pool.backlog

    @property
    def in_outage(self) -> bool:
        """True while the queue backend is reported unavailable."""
        return self._outage.since is not None

    def stop(self, timeout: float) -> bool:
        """Handle what was accepted (held messages give up at once), then end the threads.

        Returns False if handlers were still running after `timeout` seconds;
        their messages, and any not started, stay unacknowledged.
        """
        self._halt.set()
        return self._pool.close(timeout)

    # -- handler threads ------------------------------------------------------

    def _handle_batch(self, batch: Sequence[Inbound]) -> int:
        """Route messages of a batch, store what their handlers recorded, ack them.

        Stops early when the batch runs past twice `BATCH_SECONDS` (handlers
        slower than expected): the messages not started go back to their lanes
        for other threads. Returns how many it finished; never raises.
        """
        finished: list[tuple[Inbound, Message, Any]] = []
        deadline = time.monotonic() + 2 * BATCH_SECONDS
        for inbound in batch:
            outcome = self._route(inbound)
            if outcome is None:
                return len(batch)  # stopping: this message and the rest stay unacked
            finished.append((inbound, *outcome))
            if len(finished) < len(batch) and time.monotonic() > deadline:
                break
        if any(records is not None for _, _, records in finished) and not self._store(finished):
            return len(batch)  # stopping during an outage: nothing acked, all redelivered
        for inbound, _, _ in finished:
            if inbound.ticket is not None:
                self._sequencer.done(inbound.ticket)
        return len(finished)

    def _route(self, inbound: Inbound) -> tuple[Message, Any] | None:
        """Run one message's route under the retry, outage and dead-letter rules.

        Returns `(message, records)` once it is finished (records to store before
        its ack, or None), or None when the intake is stopping (leave it unacked).
        """
        attempt = 1
        held = 0
        stats = self.stats
        outbox = self._outbox
        properties = MessageProperties.from_paho(inbound.properties)
        while True:
            message = Message(
                inbound.topic,
                inbound.payload,
                inbound.qos,
                inbound.retain,
                properties,
                publish=self._publish,
            )
            if outbox is not None:
                outbox.begin()
            try:
                routed = self._dispatcher.dispatch(message)
            except PayloadError as exc:
                self._discard()
                log.error(
                    "rejected payload on topic %r (route %s): %s",
                    inbound.topic[:200],
                    route_pattern(message),
                    exc,
                )
                self._dead_letter(message, exc, attempt)
                return message, None
            except BaseException as exc:  # SystemExit from a handler must not end the thread
                self._discard()
                if caused_by_outage(exc):
                    held += 1
                    stats.outage_retries += 1
                    self._outage.start(exc)
                    if self._halt.wait(full_jitter(held, OUTAGE_RETRY_BASE, OUTAGE_RETRY_CAP)):
                        return None
                    continue
                stats.handler_failures += 1
                if attempt < self._attempts:
                    log.warning(
                        "handler for topic %r (route %s) failed on attempt %d/%d: %s; retrying",
                        inbound.topic[:200],
                        route_pattern(message),
                        attempt,
                        self._attempts,
                        error_text(exc),
                    )
                    attempt += 1
                    if self._halt.wait(full_jitter(attempt, HANDLER_RETRY_BASE, HANDLER_RETRY_CAP)):
                        return None
                    continue
                log.error(
                    "handler for topic %r (route %s) failed %d time(s); dead-lettering it",
                    inbound.topic[:200],
                    route_pattern(message),
                    attempt,
                    exc_info=exc,
                )
                self._dead_letter(message, exc, attempt)
                return message, None
            records = outbox.end() if outbox is not None else None
            if routed:
                stats.handled += 1
            else:
                stats.unmatched += 1  # the router logs it at DEBUG; we still ack it
            if held:
                self._outage.end()
            return message, records

    def _discard(self) -> None:
        """Drop what a failed handler attempt recorded: it must leave nothing behind."""
        if self._outbox is not None:
            self._outbox.end()

    def _store(self, finished: list[tuple[Inbound, Message, Any]]) -> bool:
        """Store the batch's records together; False if stopping during an outage.

        A failure that is not an outage stores the messages' records one by one,
        and dead-letters each message whose records the backend refuses.
        """
        outbox = self._outbox
        assert outbox is not None
        records = [r for _, _, r in finished if r is not None]
        try:
            return self._with_outage_retries(outbox.flush, records)
        except Exception:
            pass  # find the messages whose records the backend refuses
        for _, message, own in finished:
            if own is None:
                continue
            try:
                if not self._with_outage_retries(outbox.flush, [own]):
                    return False
            except Exception as exc:
                log.error(
                    "cannot store the jobs of the message on %r (route %s): %s; dead-lettering it",
                    message.topic[:200],
                    route_pattern(message),
                    error_text(exc),
                )
                self._dead_letter(message, exc, 1)
        return True

    def _with_outage_retries(
        self, store: Callable[[Sequence[Any]], None], records: Sequence[Any]
    ) -> bool:
        """Run `store(records)`, retrying through outages; False if the intake stops meanwhile."""
        held = 0
        while True:
            try:
                store(records)
            except BaseException as exc:
                if not caused_by_outage(exc):
                    raise
                held += 1
                self.stats.outage_retries += 1
                self._outage.start(exc)
                if self._halt.wait(full_jitter(held, OUTAGE_RETRY_BASE, OUTAGE_RETRY_CAP)):
                    return False
                continue
            if held:
                self._outage.end()
            return True

    def _dead_letter(self, message: Message, exc: BaseException, attempts: int) -> None:
        """Publish the dead letter of `message`; a failure is logged and counted, never raised."""
        if message.topic.startswith(self._dead_letter_prefix):
            # A route on the dead-letter topics failed too: re-publishing would loop.
            log.error("dead letter on %r failed again; dropping it", message.topic)
            return
        target = "-"
        try:
            target, body = build_dead_letter(
                self._dead_letter_prefix,
                message.topic,
                route_pattern(message),
                error_text(exc),
                attempts,
                message.qos,
                message.retain,
                message.payload,
                self.dead_letter_max_bytes,
            )
            self._publish(target, body, DEAD_LETTER_QOS, False)
        except Exception as publish_error:
            self.stats.dead_letter_failures += 1
            log.error(
                "could not publish the dead letter of %r (%d bytes) to %r: %s",
                message.topic[:200],
                len(message.payload),
                target[:200],
                error_text(publish_error),
            )
            return
        self.stats.dead_lettered += 1
        log.warning("dead-lettered message from %r to %r", message.topic[:200], target[:200])


def route_pattern(message: Message) -> str:
    """The pattern of the route a message matched, or `-`."""
    route = message.route
    if route is None:
        return "-"
    return str(getattr(route, "pattern", route))


def error_text(exc: BaseException) -> str:
    """`Class: message` of an exception, for logs and dead letters."""
    return f"{type(exc).__name__}: {exc}"
