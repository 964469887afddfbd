"""Chains and batches: jobs that dispatch the next step when they finish.

`chain(A(...), B(...), C(...)).dispatch()` queues A; B is queued when A
succeeds, C when B succeeds. A failure (after the link's last attempt) stops
the chain: the rest is never queued, an error line names the chain and the
link, and the failed job's record (its payload's `workflow`) and
`--job-status CHAIN_ID` say where it stopped.

`batch([...], then=J, catch=K, finally_=L).dispatch()` records the batch, then
queues its jobs, and returns the batch id. `catch` is queued when the first job
fails for good, `then` when every job finished and none failed, `finally_` when
every job finished either way. Progress: `--batch-status ID`, the dashboard.

How it stays correct across processes and crashes:

* Every step has a deterministic job id: link i of chain C is `C.i`, the
  callbacks of batch B are `B.then`, `B.catch`, `B.finally`, and its jobs `B.i`.
  The next step is queued with `QueueDriver.dispatch_once`, which adds a job
  only if its id was never dispatched that way (within JOB_STATUS_RETENTION), in
  the same atomic step as the add.
* The worker calls `before_settle` (its one hook for job outcomes) BEFORE it
  acks or finally fails the job. A crash after the next step was queued but
  before the ack runs the job again later; its redo queues nothing twice.
* A batch job is counted by `BatchStore.finish` (queues/batches.py) in one
  atomic step that also tells whether this job was new and how many are left,
  so of two workers finishing the last two jobs at once exactly one sees 0. A
  redo (counted before the crash) sees "not new" and dispatches the callbacks
  that are due again, which `dispatch_once` turns into nothing.

A step's next job goes to the same connection as the step itself (the
worker's driver). Plain jobs pay nothing: the worker tells a workflow job by
its envelope's prefix (`WORKFLOW_HEAD`) before decoding anything.
"""

from __future__ import annotations

import logging
import re
import uuid
import weakref
from collections.abc import Sequence
from typing import Any

from queues.batches import BatchState, BatchStore, batch_store_for
from queues.dispatcher import _target as dispatch_target
from queues.dispatcher import build_envelope, envelope_json
from queues.drivers.base import QueueDriver, ReservedJob
from queues.envelope import Envelope, EnvelopeError, checked_delay
from queues.job import Job, JobDataError
from queues.registry import JobRegistry

logger = logging.getLogger(__name__)

#: An envelope that belongs to a workflow: `workflow` right after `job` (Envelope.as_dict).
WORKFLOW_HEAD = re.compile(r'^\{"attempts":[0-9]+,"id":"[^"]*","job":"[^"\\]*","workflow":')
#: Names of a batch's callbacks, in the order they are considered.
CALLBACKS = ("catch", "then", "finally")

_stores: weakref.WeakKeyDictionary[QueueDriver, BatchStore] = weakref.WeakKeyDictionary()


def _step(
    job: Job, job_id: str, workflow: dict[str, Any] | None, registry: JobRegistry | None
) -> dict[str, Any]:
    """A validated step: its envelope (with its deterministic id) and its delay."""
    envelope = build_envelope(job, registry=registry)
    envelope.id = job_id
    envelope.workflow = workflow
    envelope_json(envelope)  # size check now, not when the step is due
    delay = checked_delay(type(job).delay, f"{type(job).job_name()} delay")
    return {"envelope": envelope.as_dict(), "delay": delay}


def _driver(connection: str | QueueDriver | None) -> QueueDriver:
    """The driver a workflow is queued on; JobDataError for the sync queue or a test's fake.

    Chains and batches need a worker's outcomes (and a real store), so neither
    `QUEUE_CONNECTION=sync` nor `fake_queue()` / `sync_queue()` can run them.
    """
    if isinstance(connection, QueueDriver):
        return connection
    target = dispatch_target(connection)
    if not isinstance(target, QueueDriver):
        raise JobDataError(
            "chains and batches need a real queue connection (redis or database), not "
            f"{type(target).__name__}: pass connection='redis' or 'database'"
        )
    return target


class Chain:
    """Jobs run one after the other, each once the previous one succeeded."""

    def __init__(self, jobs: Sequence[Job]) -> None:
        if not jobs:
            raise JobDataError("chain() needs at least one job")
        self.jobs = list(jobs)

    def dispatch(
        self,
        connection: str | QueueDriver | None = None,
        *,
        registry: JobRegistry | None = None,
    ) -> str:
        """Queue the first link; return the chain id (the first link's job id is `<id>.0`).

        Every link is validated first: one bad job queues nothing.
        """
        chain_id = str(uuid.uuid4())
        count = len(self.jobs)
        steps = [
            _step(job, f"{chain_id}.{i}", {"chain": chain_id, "index": i, "links": count}, registry)
            for i, job in enumerate(self.jobs)
        ]
        first = steps[0]
        first["envelope"]["workflow"]["next"] = steps[1:]
        driver = _driver(connection)
        envelope = Envelope.from_json(_dumps(first["envelope"]))
        # The first link carries every later one: refused here if that is too large.
        driver.dispatch_once(envelope.queue, envelope_json(envelope), first["delay"])
        return chain_id


class Batch:
    """Jobs run in parallel, with callbacks when the first fails and when all finished."""

    def __init__(
        self,
        jobs: Sequence[Job],
        then: Job | None = None,
        catch: Job | None = None,
        finally_: Job | None = None,
        name: str | None = None,
    ) -> None:
        if not jobs:
            raise JobDataError("batch() needs at least one job")
        self.jobs = list(jobs)
        self.callbacks = {"then": then, "catch": catch, "finally": finally_}
        self.name = name

    def dispatch(
        self,
        connection: str | QueueDriver | None = None,
        *,
        registry: JobRegistry | None = None,
    ) -> str:
        """Record the batch, queue its jobs (one atomic bulk call), return the batch id."""
        batch_id = str(uuid.uuid4())
        callbacks = {
            name: _step(job, f"{batch_id}.{name}", None, registry)
            for name, job in self.callbacks.items()
            if job is not None
        }
        rows = []
        for i, job in enumerate(self.jobs):
            step = _step(job, f"{batch_id}.{i}", {"batch": batch_id}, registry)
            envelope = Envelope.from_json(_dumps(step["envelope"]))
            rows.append((envelope.queue, envelope.to_json(), step["delay"]))
        driver = _driver(connection)
        store_of(driver).create(batch_id, len(rows), callbacks, self.name)
        driver.bulk(rows)
        return batch_id


def chain(*jobs: Job) -> Chain:
    """`chain(A(...), B(...)).dispatch()`: B is queued once A succeeded."""
    return Chain(jobs)


def batch(
    jobs: Sequence[Job],
    then: Job | None = None,
    catch: Job | None = None,
    finally_: Job | None = None,
    name: str | None = None,
) -> Batch:
    """`batch([...], then=..., catch=..., finally_=...).dispatch()` returns the batch id."""
    return Batch(jobs, then, catch, finally_, name)


def store_of(driver: QueueDriver) -> BatchStore:
    """The batch store beside `driver` (one per driver, kept while the driver lives)."""
    store = _stores.get(driver)
    if store is None:
        store = _stores[driver] = batch_store_for(driver)
    return store


def batch_status(batch_id: str, connection: str | QueueDriver | None = None) -> BatchState | None:
    """The progress of a batch, or None if unknown (or expired)."""
    return store_of(_driver(connection)).get(batch_id)


def before_settle(driver: QueueDriver, reserved: ReservedJob, action: str) -> None:
    """The worker's hook: a job is about to be acked (`ack`) or failed for good (`fail`).

    Plain jobs return at once (a prefix match). For a workflow job the next
    step is queued (chain), or the job counted and due callbacks queued
    (batch). Raises when the backend fails: the worker then leaves the job
    unsettled, and it runs again after its lease (a redo queues nothing twice).
    """
    if action not in ("ack", "fail") or reserved.duplicate_of is not None:
        return
    if WORKFLOW_HEAD.match(reserved.payload) is None:
        return
    try:
        envelope = Envelope.from_json(reserved.payload)
    except EnvelopeError:
        return  # the worker fails it with the reason; nothing to continue
    workflow = envelope.workflow or {}
    outcome = "done" if action == "ack" else "failed"
    if "chain" in workflow:
        _chain_step(driver, envelope, workflow, outcome)
    elif "batch" in workflow:
        _batch_step(driver, envelope, str(workflow["batch"]), outcome)


def _chain_step(
    driver: QueueDriver, envelope: Envelope, workflow: dict[str, Any], outcome: str
) -> None:
    chain_id, index = workflow["chain"], int(workflow["index"])
    links = int(workflow.get("links", index + 1))
    rest = list(workflow.get("next") or [])
    if outcome == "failed":
        logger.error(
            "chain %s stopped at link %d of %d (job %s %s): it queues no further link",
            chain_id,
            index + 1,
            links,
            envelope.job,
            envelope.id,
        )
        return
    if not rest:
        return
    step = rest[0]
    following = dict(step["envelope"])
    following["workflow"] = dict(following.get("workflow") or {}) | {"next": rest[1:]}
    nxt = Envelope.from_json(_dumps(following))
    driver.dispatch_once(nxt.queue, nxt.to_json(), float(step.get("delay", 0.0)))


def _batch_step(driver: QueueDriver, envelope: Envelope, batch_id: str, outcome: str) -> None:
    store = store_of(driver)
    finished = store.finish(batch_id, envelope.id, outcome)
    if finished is None:
        logger.warning("job %s: its batch %s is unknown (expired?)", envelope.id, batch_id)
        return
    due: list[str] = []
    if finished.failed > 0 and (not finished.new or (outcome == "failed" and finished.failed == 1)):
        due.append("catch")
    if finished.pending <= 0:
        if finished.failed == 0:
            due.append("then")
        due.append("finally")
    if not due:
        return
    state = store.get(batch_id)
    callbacks = state.callbacks if state is not None else {}
    for name in due:
        step = callbacks.get(name)
        if step is None:
            continue
        callback = Envelope.from_json(_dumps(step["envelope"]))
        driver.dispatch_once(callback.queue, callback.to_json(), float(step.get("delay", 0.0)))


def _dumps(data: dict[str, Any]) -> str:
    return Envelope(**_fields(data)).to_json()


def _fields(data: dict[str, Any]) -> dict[str, Any]:
    """Envelope keyword arguments from an envelope dict (as_dict) kept in a workflow."""
    return {key: value for key, value in data.items() if key in Envelope.__dataclass_fields__}
