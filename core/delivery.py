"""What happens to one received message, whoever feeds it: the intake's threads or a test.

`Delivery.route(inbound)` runs a message's route under the framework's rules:

- route it (middleware and handler run here, `def` or `async def`);
- on a `PayloadError`, dead-letter it at once;
- on any other exception, try again up to `attempts` times, then dead-letter it;
- on a backend outage (`support.errors.BackendUnavailable` anywhere in the
  exception chain: Redis or SQL unreachable, a lock wait), hold it: it is tried
  again, however long that takes, and never dead-lettered. One line is logged
  when an outage starts and one when it ends.

With an `Outbox`, what a handler attempt dispatches is recorded, and dropped
when the attempt raises; `Delivery.store(outcomes)` then stores the records of
finished messages together and, when the backend refuses them for another
reason than an outage, dead-letters just the messages whose records it refuses.

How long to wait between two tries is the caller's choice (`Pause`): the
intake sleeps with a jittered backoff and stops waiting when it shuts down;
the test client (core/testing.py) does not sleep at all, and leaves a message
held by an outage unacknowledged at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from core.dead_letter import build_dead_letter
from core.message import Message, MessageProperties, PayloadError, PublishFunction
from support import log_context
from support.errors import caused_by_outage

log = logging.getLogger("core.mqtt")

#: QoS of dead-letter publications: at least once, so a poison message is not lost twice.
DEAD_LETTER_QOS = 1
#: Seconds a handler thread waits for the broker to acknowledge a dead letter before the
#: message's own ack; unconfirmed, the message stays unacknowledged (redelivered later).
DEAD_LETTER_CONFIRM_SECONDS = 10.0

#: Waits before the next try of a message: `pause(tries so far, exception)`; False to give
#: up (the message then stays unacknowledged).
Pause = Callable[[int, BaseException], bool]


class Dispatcher(Protocol):
    """What delivery needs from the router: route one message."""

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

    def discard(self) -> None:
        """Stop recording after an attempt that raised: its records are dropped."""

    def flush(self, records: Sequence[Any]) -> None:
        """Store the records durably, in order; raise what the backend raised."""


@dataclass(slots=True)
class Inbound:
    """One received message on its way to a handler (`ticket`: its place in the ack order)."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: Any
    ticket: Any = None


@dataclass(slots=True)
class Outcome:
    """How a message ended: its records to store before the ack, or its dead letter."""

    message: Message
    records: Any = None  #: what the handler dispatched (None: nothing to store)
    attempts: int = 1  #: handler attempts made
    routed: bool = False  #: a route matched and returned
    error: BaseException | None = None  #: why it was dead-lettered
    dead_letter: tuple[str, bytes] | None = None  #: (topic, body) published, if any
    #: False when its dead letter was sent but not acknowledged by the broker in time:
    #: the message must then stay unacknowledged, or it could be lost with the letter.
    confirmed: bool = True


class IntakeStats:
    """Counters of message handling (read them for tests, metrics and logs).

    Handler threads count through `add`, under a lock: `+=` on an attribute is
    not atomic, and tests and metrics wait for exact counts.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.received = 0  #: messages accepted from the network thread
        self.handled = 0  #: messages whose route returned
        self.unmatched = 0  #: messages no route matched (acknowledged)
        self.dead_lettered = 0  #: messages published to the dead-letter topic
        self.dead_letter_failures = 0  #: dead letters that could not be published (logged)
        self.handler_failures = 0  #: failed handler attempts, retries included
        self.outage_retries = 0  #: tries of held messages during backend outages
        self.qos0_dropped = 0  #: QoS 0 messages dropped because the backlog was full
        self.stale_skipped = 0  #: messages of a lost connection left for the broker to redeliver
        self.unexpected_errors = 0  #: framework faults caught around a message (logged)

    def add(self, counter: str, amount: int = 1) -> None:
        """Add `amount` to the counter named `counter`, safely from any thread."""
        with self._lock:
            setattr(self, counter, getattr(self, counter) + amount)


class Outage:
    """Whether the queue backend is down, logging only the start and the end."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.since: float | None = None

    def start(self, exc: BaseException) -> None:
        """Note a failure caused by an outage; logs once per outage."""
        with self._lock:
            if self.since is not None:
                return
            self.since = time.monotonic()
        log.warning(
            "queue backend unavailable (%s); holding messages unacknowledged and retrying", exc
        )

    def end(self) -> None:
        """Note that the backend answered again; logs once per outage."""
        if self.since is None:
            return
        with self._lock:
            if self.since is None:
                return
            lasted = time.monotonic() - self.since
            self.since = None
        log.warning("queue backend is back after %.1f s; intake resumed", lasted)


class Delivery:
    """The per-message rules of the module docstring, shared by the intake and the test client."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        publish: PublishFunction,
        attempts: int,
        dead_letter_prefix: str,
        dead_letter_max_bytes: int,
        retry_pause: Pause,
        outage_pause: Pause,
        outbox: Outbox | None = None,
        stats: IntakeStats | None = None,
    ) -> None:
        self._dispatcher = dispatcher
        self._publish = publish
        self._attempts = attempts
        self._dead_letter_prefix = dead_letter_prefix
        #: Most bytes of a dead letter's topic plus body (the runtime lowers it to the
        #: broker's Maximum Packet Size when an MQTT 5 broker announces one).
        self.dead_letter_max_bytes = dead_letter_max_bytes
        self._retry_pause = retry_pause
        self._outage_pause = outage_pause
        self._outbox = outbox
        self.stats = stats or IntakeStats()
        self.outage = Outage()

    @property
    def records_dispatches(self) -> bool:
        """True when handlers' dispatches are recorded and must be `store`d before the ack."""
        return self._outbox is not None

    def route(self, inbound: Inbound) -> Outcome | None:
        """Run one message's route under the retry, outage and dead-letter rules.

        Returns its `Outcome` once it is finished (handled, unmatched or
        dead-lettered), or None when a pause gave up (leave it unacknowledged).
        Records logged meanwhile on this thread carry the topic (support/log_context.py).
        """
        binding = log_context.bind(topic=inbound.topic)
        try:
            return self._route(inbound)
        finally:
            log_context.unbind(binding)

    def _route(self, inbound: Inbound) -> Outcome | None:
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
                return self._dead_lettered(message, exc, attempt)
            except BaseException as exc:  # SystemExit from a handler must not end the thread
                self._discard()
                if caused_by_outage(exc):
                    held += 1
                    stats.add("outage_retries")
                    self.outage.start(exc)
                    if not self._outage_pause(held, exc):
                        return None
                    continue
                stats.add("handler_failures")
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
                    if not self._retry_pause(attempt, exc):
                        return None
                    continue
                log.error(
                    "handler for topic %r (route %s) failed %d time(s); dead-lettering it",
                    inbound.topic[:200],
                    route_pattern(message),
                    attempt,
                    exc_info=exc,
                )
                return self._dead_lettered(message, exc, attempt)
            records = outbox.end() if outbox is not None else None
            # Unmatched: the router logs it at DEBUG; we still ack it.
            stats.add("handled" if routed else "unmatched")
            if held:
                self.outage.end()
            return Outcome(message, records, attempt, routed)

    def _discard(self) -> None:
        """Drop what a failed handler attempt recorded: it must leave nothing behind."""
        if self._outbox is not None:
            self._outbox.discard()

    def _dead_lettered(self, message: Message, exc: BaseException, attempts: int) -> Outcome:
        outcome = Outcome(message, None, attempts, error=exc)
        outcome.dead_letter, outcome.confirmed = self._send_dead_letter(message, exc, attempts)
        return outcome

    def fail_unexpectedly(self, inbound: Inbound, exc: BaseException) -> Outcome:
        """Dead-letter a message whose handling hit a fault of the framework itself.

        Never raises: a message must end one way or another, or every later
        acknowledgement of its connection waits behind it.
        """
        self.stats.add("unexpected_errors")
        log.error(
            "unexpected error handling the message on %r; dead-lettering it",
            inbound.topic[:200],
            exc_info=exc,
        )
        self._discard()
        message = Message(inbound.topic, inbound.payload, inbound.qos, inbound.retain)
        return self._dead_lettered(message, exc, 1)

    def store(self, finished: Sequence[Outcome]) -> bool:
        """Store the records of finished messages together; False if a pause gave up.

        A failure that is not an outage stores the messages' records one by one,
        and dead-letters each message whose records the backend refuses (its
        outcome then carries the error and the dead letter).
        """
        outbox = self._outbox
        assert outbox is not None
        records = [outcome.records for outcome in finished if outcome.records is not None]
        try:
            return self._with_outage_retries(outbox.flush, records)
        except Exception:
            pass  # find the messages whose records the backend refuses
        for outcome in finished:
            if outcome.records is None:
                continue
            try:
                if not self._with_outage_retries(outbox.flush, [outcome.records]):
                    return False
            except Exception as exc:
                message = outcome.message
                log.error(
                    "cannot store the jobs of the message on %r (route %s): %s; dead-lettering it",
                    message.topic[:200],
                    route_pattern(message),
                    error_text(exc),
                )
                outcome.error = exc
                outcome.dead_letter, outcome.confirmed = self._send_dead_letter(message, exc, 1)
        return True

    def _with_outage_retries(
        self, store: Callable[[Sequence[Any]], None], records: Sequence[Any]
    ) -> bool:
        """Run `store(records)`, trying again through outages; False if a pause gave up."""
        held = 0
        while True:
            try:
                store(records)
            except BaseException as exc:
                if not caused_by_outage(exc):
                    raise
                held += 1
                self.stats.add("outage_retries")
                self.outage.start(exc)
                if not self._outage_pause(held, exc):
                    return False
                continue
            if held:
                self.outage.end()
            return True

    def _send_dead_letter(
        self, message: Message, exc: BaseException, attempts: int
    ) -> tuple[tuple[str, bytes] | None, bool]:
        """Publish the dead letter of `message`; return it and whether the broker has it.

        Returns (None, True) when nothing can be published (the publish failed
        for good, or the message came from a dead-letter topic itself:
        re-publishing would loop): the message is acknowledged all the same.
        Returns (letter, False) when the broker did not acknowledge the letter
        within DEAD_LETTER_CONFIRM_SECONDS: the message then stays unacknowledged.
        """
        if message.topic.startswith(self._dead_letter_prefix):
            log.error("dead letter on %r failed again; dropping it", message.topic)
            return None, True
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
            receipt = self._publish(target, body, DEAD_LETTER_QOS, False)
        except Exception as publish_error:
            self.stats.add("dead_letter_failures")
            log.error(
                "could not publish the dead letter of %r (%d bytes) to %r: %s",
                message.topic[:200],
                len(message.payload),
                target[:200],
                error_text(publish_error),
            )
            return None, True
        if not _confirmed(receipt):
            log.warning(
                "the broker did not acknowledge the dead letter of %r within %g s; the message "
                "stays unacknowledged and comes back",
                message.topic[:200],
                DEAD_LETTER_CONFIRM_SECONDS,
            )
            return (target, body), False
        self.stats.add("dead_lettered")
        log.warning("dead-lettered message from %r to %r", message.topic[:200], target[:200])
        return (target, body), True


def _confirmed(receipt: object) -> bool:
    """True unless a publish receipt says the broker has not acknowledged it in time."""
    wait = getattr(receipt, "wait_for_publish", None)
    if wait is None:
        return True  # a publish function without receipts (the test client)
    try:
        wait(DEAD_LETTER_CONFIRM_SECONDS)
        return bool(receipt.is_published())  # type: ignore[attr-defined]
    except (RuntimeError, ValueError):  # not connected when it was queued
        return False


def route_pattern(message: Message) -> str:
    """The pattern of the route a message matched, or `-`."""
    route = message.route
    if route is None:
        return "-"
    return str(getattr(route, "pattern", route))


def error_text(exc: BaseException) -> str:
    """`Class: message` of an exception, for logs and dead letters; never raises.

    A handler's exception may have a `__str__` that itself raises: that must not
    escape the message's handling (it would hold back every later ack).
    """
    try:
        text = str(exc)
    except BaseException:  # any failure of user code's __str__
        text = f"<unprintable {type(exc).__name__}>"
    return f"{type(exc).__name__}: {text}"
