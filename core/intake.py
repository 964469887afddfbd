"""The intake: what happens to a received message between the socket and its PUBACK.

The network thread only calls `Intake.accept`, which takes an acknowledgement
ticket (QoS 1) and queues the message on a `LanePool` keyed by topic; it never
runs user code and never waits for a backend. Handler threads take the waiting
messages in batches (messages of one topic in arrival order, different topics
in parallel on MQTT_HANDLER_CONCURRENCY threads) and run each through
`core.delivery.Delivery`, the per-message rules:

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
from typing import Any, Protocol

from core.acks import AckSequencer, Ticket
from core.delivery import Delivery, Dispatcher, Inbound, IntakeStats, Outbox, Outcome
from core.lanes import LanePool
from core.message import PublishFunction
from support.backoff import full_jitter

__all__ = ["BatchObserver", "Dispatcher", "Inbound", "Intake", "IntakeStats", "Outbox"]

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
#: Seconds between two warnings about dropped QoS 0 messages.
DROP_WARNING_INTERVAL = 10.0
#: A batch is at most this fraction of the in-flight window, so the broker keeps
#: sending the next messages while a batch is handled (a batch as large as the
#: window would stall the stream at every batch).
BATCH_SHARE_OF_WINDOW = 0.25
#: Seconds of handler time one batch aims at: quick handlers come in large batches
#: (one write for many messages), and acks wait at most about this long for a batch.
BATCH_SECONDS = 0.005


class BatchObserver(Protocol):
    """Learns how the messages of each batch ended (core/metrics.py counts them)."""

    def finished(self, outcomes: Sequence[Outcome]) -> None:
        """Called once per batch on a handler thread, after its records were stored."""


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
        observer: BatchObserver | None = None,
        on_stuck: Callable[[], None] | None = None,
    ) -> None:
        self._sequencer = sequencer
        self._observer = observer
        #: Called when a message could not be finished by any rule (a fault of ours):
        #: the runtime drops the connection so the broker redelivers, rather than
        #: holding every later acknowledgement behind it.
        self._on_stuck = on_stuck
        self._halt = threading.Event()
        self._last_drop_warning = 0.0
        self.stats = IntakeStats()
        self._delivery = Delivery(
            dispatcher,
            publish,
            attempts,
            dead_letter_prefix,
            dead_letter_max_bytes,
            retry_pause=self._retry_pause,
            outage_pause=self._outage_pause,
            outbox=outbox,
            stats=self.stats,
        )
        self._pool: LanePool[Inbound] = LanePool(
            self._handle_batch,
            concurrency,
            max(1, int(window * BATCH_SHARE_OF_WINDOW)),
            BATCH_SECONDS,
            "mqtt-handler",
        )

    @property
    def dead_letter_max_bytes(self) -> int:
        """Most bytes of a dead letter's topic plus body (the runtime lowers it to the
        broker's Maximum Packet Size when an MQTT 5 broker announces one)."""
        return self._delivery.dead_letter_max_bytes

    @dead_letter_max_bytes.setter
    def dead_letter_max_bytes(self, value: int) -> None:
        self._delivery.dead_letter_max_bytes = value

    # -- network thread -------------------------------------------------------

    def accept(
        self, topic: str, payload: bytes, qos: int, retain: bool, props: Any, mid: int
    ) -> None:
        """Queue one received message for a handler; returns at once (network thread).

        After `stop()` nothing is taken: unacknowledged, it comes back to the next session.
        """
        if self._halt.is_set():
            return
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
        return self._delivery.outage.since is not None

    def stop(self, timeout: float) -> bool:
        """Handle what was accepted (held messages give up at once), then end the threads.

        Returns False if handlers were still running after `timeout` seconds;
        their messages, and any not started, stay unacknowledged.
        """
        self._halt.set()
        return self._pool.close(timeout)

    # -- handler threads ------------------------------------------------------

    def _retry_pause(self, attempt: int, exc: BaseException) -> bool:
        """Sleep before a failed handler's next attempt; False when stopping."""
        return not self._halt.wait(full_jitter(attempt, HANDLER_RETRY_BASE, HANDLER_RETRY_CAP))

    def _outage_pause(self, held: int, exc: BaseException) -> bool:
        """Sleep before the next try during an outage; False when stopping."""
        return not self._halt.wait(full_jitter(held, OUTAGE_RETRY_BASE, OUTAGE_RETRY_CAP))

    def _handle_batch(self, batch: Sequence[Inbound]) -> int:
        """Route messages of a batch, store what their handlers recorded, ack them.

        Stops early when the batch runs past twice `BATCH_SECONDS` (handlers
        slower than expected): the messages not started go back to their lanes
        for other threads. Returns how many it finished; never raises.
        """
        try:
            return self._run_batch(batch)
        except BaseException:  # a fault of ours: never stall the acks
            log.exception("unexpected error in a batch of %d message(s)", len(batch))
            self.stats.add("unexpected_errors")
            if self._on_stuck is not None:
                self._on_stuck()
            return len(batch)

    def _run_batch(self, batch: Sequence[Inbound]) -> int:
        delivery = self._delivery
        sequencer = self._sequencer
        finished: list[tuple[Inbound, Outcome]] = []
        deadline = time.monotonic() + 2 * BATCH_SECONDS
        consumed = 0
        for inbound in batch:
            consumed += 1
            # A message of a lost connection is handled all the same (its ack is dropped):
            # a broker that crashed may not have saved it, so leaving it to a redelivery
            # can lose it (fault scenario 3); handling it may at worst store it twice.
            try:
                outcome = delivery.route(inbound)
            except BaseException as exc:  # route() has no other way out
                outcome = delivery.fail_unexpectedly(inbound, exc)
            if outcome is None:
                return len(batch)  # stopping: this message and the rest stay unacked
            finished.append((inbound, outcome))
            if time.monotonic() > deadline:
                break
        outcomes = [outcome for _, outcome in finished]
        if any(outcome.records is not None for outcome in outcomes) and not delivery.store(
            outcomes
        ):
            return len(batch)  # stopping during an outage: nothing acked, all redelivered
        if self._observer is not None:
            self._observer.finished([outcome for _, outcome in finished])
        for inbound, outcome in finished:
            if inbound.ticket is None:
                continue
            if outcome.confirmed:
                sequencer.done(inbound.ticket)
            elif self._on_stuck is not None:
                # Its dead letter is not confirmed: no ack, and none after it on this
                # connection; dropping the connection gets them all redelivered.
                self._on_stuck()
        return consumed
