"""The `sync` connection: `dispatch()` runs the job at once, in the caller, as Laravel's does.

With `QUEUE_CONNECTION=sync` (or inside `sync_queue()`), `dispatch(job)` builds
and validates the envelope as for a real queue, rebuilds the job from the
envelope's JSON (what a worker would get, so a model argument comes back as its
model), sets `attempts` and `job_id`, and runs `handle()` before it returns.
Useful in tests and scripts: no worker, no server.

* Retries: a failing attempt is retried up to the job's `max_tries`, without
  waiting: its backoff is **skipped**. The caller (a test, a script, an MQTT
  handler) is blocked for as long as the job runs, and an exponential backoff
  would hold it for minutes; a job that needs time to pass between attempts
  needs a real queue. `retry_until` is honoured (no attempt after it).
* After the last failed attempt `failed(exc)` is called once (its own
  exceptions are logged) and the job's exception is raised to the caller of
  `dispatch()`, unchanged. Inside an MQTT handler that fails the handler,
  which the intake retries and then dead-letters.
* `delay` is ignored: the job runs now. `timeout` is not enforced (a limit
  works by signalling the main thread, which would interrupt the caller's code).
* Nothing is stored: no queue, no failed store; the operator commands that
  need a queue (`--queue-work`, `--dispatch`) refuse the sync connection.
* `dispatch_many` runs the jobs one after the other; the first that fails for
  good stops the rest.
* An `async def handle` runs on a fresh event loop (on a helper thread when
  the caller is itself inside a running loop).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from typing import Any

from queues.envelope import Envelope
from queues.job import Job
from queues.registry import JobRegistry
from queues.substitution import substituted

log = logging.getLogger("queues.sync")


class SyncQueue:
    """Runs each dispatched job at once in the caller (see the module docstring)."""

    name = "sync"

    def target(self, connection: Any) -> SyncQueue:
        """Itself, whatever the connection: inside `sync_queue()` every job runs at once."""
        return self

    def run(self, envelope: Envelope, registry: JobRegistry) -> None:
        """Run `envelope`'s job with its retries; raise its exception if the last attempt fails."""
        cls = registry.resolve(envelope.job)
        data = Envelope.from_json(envelope.to_json()).data  # exactly what a worker would get
        label = f"{envelope.job} {envelope.id}"
        attempt = 0
        while True:
            attempt += 1
            job: Job | None = None
            try:
                job = cls(**data)
                job.attempts = attempt
                job.job_id = envelope.id
                result = job.handle()
                if inspect.isawaitable(result):
                    _wait_for(result)
                return
            except Exception as exc:
                if attempt < envelope.max_tries and (
                    envelope.retry_until is None or time.time() < envelope.retry_until
                ):
                    log.warning(
                        "job %s attempt %d/%d failed (sync): %s: %s; retrying now",
                        label,
                        attempt,
                        envelope.max_tries,
                        type(exc).__name__,
                        exc,
                    )
                    continue
                log.error(
                    "job %s failed for good after %d attempt(s) (sync): %s: %s",
                    label,
                    attempt,
                    type(exc).__name__,
                    exc,
                )
                _call_failed_hook(label, job, exc)
                raise


def _call_failed_hook(label: str, job: Job | None, exc: BaseException) -> None:
    """`job.failed(exc)`, whose own exception is logged, never raised."""
    if job is None:
        log.error("job %s: failed() hook not called, the job could not be built", label)
        return
    try:
        job.failed(exc)
    except Exception as hook_error:
        log.error(
            "job %s: failed() hook raised %s: %s", label, type(hook_error).__name__, hook_error
        )


def _wait_for(awaitable: Awaitable[Any]) -> None:
    """Run an async `handle()` to completion from synchronous code."""

    async def run() -> None:
        await awaitable

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(run())
        return
    failure: list[BaseException] = []

    def in_thread() -> None:
        try:
            asyncio.run(run())
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=in_thread, name="sync-job")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]


#: The one sync connection of the process.
SYNC_QUEUE = SyncQueue()


@contextmanager
def sync_queue() -> Iterator[SyncQueue]:
    """While inside, every `dispatch()` in the process runs its job at once, whatever the
    connection (see the module docstring); a test's way to run jobs with no worker."""
    with substituted(SYNC_QUEUE):
        yield SYNC_QUEUE
