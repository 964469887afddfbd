"""Group commit: writes that arrive together share one round trip to the backend.

Like a database gathering the commits that arrive while it flushes its log,
`GroupCommit.write(row)` returns only once `row` is durably written, but rows
written by several threads at the same time go to the backend in one call
(`write_batch`, e.g. a driver's atomic `bulk`). Nobody waits for a timer: the
first writer writes at once (leader); rows arriving during that write gather,
and when it returns the oldest waiting writer becomes the leader of the next
batch. A single writer therefore pays exactly one call per row, as without
batching; N concurrent writers pay about one call per N rows.

A failed batch reports its error to every writer in it. When the failure is not
an outage and the batch held several rows, each row is written again alone, so
one bad row cannot fail the writes of the others.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from support.errors import caused_by_outage

#: Most rows written in one batch (bounds one script's or statement's size).
MAX_BATCH_ROWS = 500

Row = TypeVar("Row")


class _Writer(Generic[Row]):
    """One caller waiting for its row to be written."""

    __slots__ = ("error", "event", "lead", "row")

    def __init__(self, row: Row, event: threading.Event) -> None:
        self.row = row
        self.event = event
        self.error: BaseException | None = None
        self.lead = False  #: woken to write the next batch, not because its row is done


#: One wake-up event per thread, reused for each of its writes (a write waits on one
#: event at a time, and making a new Event per row costs more than the write's share
#: of a batched round trip).
_events = threading.local()


def _thread_event() -> threading.Event:
    event: threading.Event | None = getattr(_events, "event", None)
    if event is None:
        event = _events.event = threading.Event()
    event.clear()
    return event


class GroupCommit(Generic[Row]):
    """Writes rows durably, batching concurrent writers; see the module docstring."""

    def __init__(
        self,
        write_batch: Callable[[Sequence[Row]], None],
        max_batch: int = MAX_BATCH_ROWS,
    ) -> None:
        self._write_batch = write_batch
        self._max_batch = max_batch
        self._lock = threading.Lock()
        self._waiting: list[_Writer[Row]] = []
        self._busy = False  #: a leader is writing; True whenever `_waiting` is not empty
        self.batches = 0  #: backend calls made
        self.rows = 0  #: rows written

    def write(self, row: Row) -> None:
        """Write `row` durably (alone or with concurrent rows); raise the write's error."""
        writer = _Writer(row, _thread_event())
        with self._lock:
            self._waiting.append(writer)
            lead = not self._busy
            self._busy = True
        if not lead:
            try:
                writer.event.wait()
            except BaseException:
                self._abandon(writer)
                raise
            if not writer.lead:
                if writer.error is not None:
                    raise writer.error
                return
        self._lead()
        if writer.error is not None:
            raise writer.error

    def _abandon(self, writer: _Writer[Row]) -> None:
        """A waiter interrupted (Ctrl-C in a script): take its row back if it is not
        written yet, and pass the leadership on if it was handed to it meanwhile."""
        with self._lock:
            if writer in self._waiting:
                self._waiting.remove(writer)
            if not writer.lead:
                return
            following = self._waiting[0] if self._waiting else None
            if following is None:
                self._busy = False
        if following is not None:
            following.lead = True
            following.event.set()

    def _lead(self) -> None:
        """Write one batch starting with the caller's own row, then pass leadership on."""
        with self._lock:
            batch = self._waiting[: self._max_batch]
            del self._waiting[: self._max_batch]
        try:
            self._write(batch)
        finally:
            with self._lock:
                following = self._waiting[0] if self._waiting else None
                if following is None:
                    self._busy = False
            for writer in batch[1:]:
                writer.event.set()
            if following is not None:
                following.lead = True
                following.event.set()

    def _write(self, batch: list[_Writer[Row]]) -> None:
        try:
            self._write_batch([writer.row for writer in batch])
        except BaseException as exc:
            if len(batch) == 1 or caused_by_outage(exc):
                for writer in batch:
                    writer.error = exc
                return
            for writer in batch:  # isolate the row that fails
                try:
                    self._write_batch([writer.row])
                except BaseException as single:
                    writer.error = single
                else:
                    self.rows += 1
                self.batches += 1
            return
        finally:
            self.batches += 1
        self.rows += len(batch)
