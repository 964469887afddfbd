"""A fake queue for tests: which jobs were dispatched, with what data, delay and queue.

```python
with fake_queue() as queue:
    handle_something()
queue.assert_dispatched(StoreReading, device_id="d1")
```

While inside `fake_queue()`, every `dispatch()` of the process - whatever its
connection - is validated exactly as for a real queue (JSON data, registered
class, queue name), then recorded instead of stored or run. Dispatches made
inside an MQTT handler go through the intake's outbox as usual, so a handler
attempt that raises records nothing, as in production. The recorded data is
the JSON a worker would receive (a model argument appears as its dict).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from queues.drivers.base import QueueDriver
from queues.envelope import Envelope
from queues.job import Job
from queues.registry import JobRegistry, get_registry
from queues.substitution import substituted


@dataclass(frozen=True)
class DispatchedJob:
    """One job dispatched while faked: what a queue would have stored."""

    id: str  #: the id `dispatch()` returned
    name: str  #: the registered job name
    data: dict[str, Any]  #: its arguments, as the JSON a worker receives
    queue: str
    delay: float  #: seconds before it would have been due
    connection: str | None  #: the connection asked for (None: QUEUE_CONNECTION)
    payload: str  #: the whole envelope, as stored

    def job(self, registry: JobRegistry | None = None) -> Job:
        """The job as a worker would build it (model arguments validated back into models),
        from the class `registry` (default: the jobs package's) holds under its name."""
        instance = (registry or get_registry()).resolve(self.name)(**self.data)
        instance.job_id = self.id
        return instance

    def __str__(self) -> str:
        arguments = ", ".join(f"{key}={value!r}" for key, value in self.data.items())
        return f"{self.name}({arguments}) on queue {self.queue!r}, delay {self.delay:g} s"


class _Recorder:
    """The fake's stand-in for one connection (a `JobSink`)."""

    def __init__(self, fake: FakeQueue, connection: str | None) -> None:
        self._fake = fake
        self._connection = connection

    def enqueue(self, queue: str, payload: str, delay: float = 0.0) -> None:
        self._fake._record(self._connection, [(queue, payload, delay)])

    def bulk(self, jobs: Sequence[tuple[str, str, float]]) -> None:
        self._fake._record(self._connection, jobs)


class FakeQueue:
    """Records dispatched jobs and answers questions about them; see the module docstring.

    Keyword filters of the queries compare with the job's data (`device_id="d1"`;
    a model or tuple is compared as its JSON form), except `queue=` and
    `delay=`, which compare with where and when it was dispatched (neither can
    be a job argument: both are reserved names).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: list[DispatchedJob] = []

    @property
    def jobs(self) -> list[DispatchedJob]:
        """Every dispatched job, in dispatch order."""
        with self._lock:
            return list(self._jobs)

    def target(self, connection: str | QueueDriver | None) -> _Recorder:
        """The recorder standing in for `connection`."""
        name = connection.name if isinstance(connection, QueueDriver) else connection
        return _Recorder(self, name)

    def _record(self, connection: str | None, rows: Sequence[tuple[str, str, float]]) -> None:
        recorded = []
        for queue, payload, delay in rows:
            envelope = Envelope.from_json(payload)
            recorded.append(
                DispatchedJob(
                    envelope.id, envelope.job, envelope.data, queue, delay, connection, payload
                )
            )
        with self._lock:
            self._jobs.extend(recorded)

    def dispatched(self, job: type[Job] | str | None = None, **filters: Any) -> list[DispatchedJob]:
        """The dispatched jobs of that class (or name; None: any) matching every filter."""
        name = job.job_name() if isinstance(job, type) else job
        wanted = {key: _json_form(value) for key, value in filters.items()}
        return [
            found
            for found in self.jobs
            if (name is None or found.name == name) and _matches(found, wanted)
        ]

    def assert_dispatched(self, job: type[Job] | str, **filters: Any) -> list[DispatchedJob]:
        """Fail unless at least one such job was dispatched; return those that were."""
        found = self.dispatched(job, **filters)
        if not found:
            raise AssertionError(
                f"expected {_describe(job, filters)} to be dispatched; {self._summary()}"
            )
        return found

    def assert_dispatched_times(self, job: type[Job] | str, times: int, **filters: Any) -> None:
        """Fail unless exactly `times` such jobs were dispatched."""
        found = self.dispatched(job, **filters)
        if len(found) != times:
            raise AssertionError(
                f"expected {_describe(job, filters)} to be dispatched {times} time(s), "
                f"got {len(found)}; {self._summary()}"
            )

    def assert_not_dispatched(self, job: type[Job] | str, **filters: Any) -> None:
        """Fail if any such job was dispatched."""
        found = self.dispatched(job, **filters)
        if found:
            raise AssertionError(
                f"expected {_describe(job, filters)} not to be dispatched; "
                f"got {'; '.join(map(str, found))}"
            )

    def assert_nothing_dispatched(self) -> None:
        """Fail if any job at all was dispatched."""
        if self.jobs:
            raise AssertionError(f"expected no job to be dispatched; {self._summary()}")

    def clear(self) -> None:
        """Forget what was dispatched so far."""
        with self._lock:
            self._jobs.clear()

    def _summary(self) -> str:
        jobs = self.jobs
        if not jobs:
            return "nothing was dispatched"
        return "dispatched: " + "; ".join(map(str, jobs))


def _json_form(value: Any) -> Any:
    """`value` as it looks after a JSON round trip (models as their dump, tuples as lists)."""
    return json.loads(json.dumps(value, default=_dump_model))


def _dump_model(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)
    if dump is None:
        raise TypeError(f"{type(value).__name__} is not JSON and not a pydantic model")
    return dump(mode="json")


def _matches(found: DispatchedJob, wanted: dict[str, Any]) -> bool:
    for key, value in wanted.items():
        if key == "queue":
            actual: Any = found.queue
        elif key == "delay":
            actual = found.delay
        elif key in found.data:
            actual = found.data[key]
        else:
            return False
        if actual != value:
            return False
    return True


def _describe(job: type[Job] | str, filters: dict[str, Any]) -> str:
    name = job.job_name() if isinstance(job, type) else job
    if not filters:
        return name
    return f"{name} with {', '.join(f'{key}={value!r}' for key, value in filters.items())}"


@contextmanager
def fake_queue() -> Iterator[FakeQueue]:
    """Record every `dispatch()` of the process instead of storing or running it."""
    fake = FakeQueue()
    with substituted(fake):
        yield fake
