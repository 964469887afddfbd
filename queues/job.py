"""The `Job` base class users subclass in `app/jobs/`.

A job is a class with a `handle(self)` method (plain or `async def`) and
class-level retry policy. Its constructor keyword arguments are its data: they
travel as JSON inside the envelope (never pickle), so they must be plain JSON
values. `dispatch()` checks that before anything is queued and names the job and
the argument that is not JSON.

Note: JSON has no tuple, so a tuple argument arrives in the worker as a list.
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable
from datetime import datetime
from typing import Any, ClassVar

from queues.envelope import MAX_JSON_DEPTH

#: Nesting level of a job's data object inside its envelope (the envelope is level 1).
DATA_DEPTH = 2
#: Names a job's data may not use: they would hide the class's policy or methods.
RESERVED_NAMES = frozenset(
    {
        "name",
        "abstract",
        "queue",
        "max_tries",
        "timeout",
        "backoff",
        "retry_until",
        "delay",
        "data",
        "handle",
        "failed",
        "job_name",
        "retry_deadline",
        "validated_data",
        "attempts",
        "job_id",
    }
)


class JobDataError(TypeError):
    """A job argument cannot travel as JSON; the message names the job and argument."""


class Job:
    """Base class of every queued job.

    Subclass it in a module of the jobs package (default `app.jobs`), implement
    `handle(self)`, and set class-level defaults as needed:

    * `queue` - queue name the job goes to unless `dispatch(queue=...)` says otherwise.
    * `max_tries` - attempts before the job is failed for good.
    * `timeout` - seconds an attempt may run before it is stopped (None: no limit).
    * `backoff` - seconds before a retry: a number, a list per attempt (the last
      value repeats) or `"exponential"` (full-jitter doubling, capped).
    * `retry_until` - seconds after dispatch after which no attempt is made; may
      also be a method returning seconds or a `datetime`.
    * `delay` - seconds before the job becomes due, unless `dispatch(delay=...)`.
    * `name` - the registry name; defaults to the class name.
    * `abstract` - True on a base class that must not be registered.

    `failed(exc)` is called once when the job fails for good.
    """

    name: ClassVar[str | None] = None
    abstract: ClassVar[bool] = False
    queue: ClassVar[str] = "default"
    max_tries: ClassVar[int] = 1
    timeout: ClassVar[float | None] = None
    backoff: ClassVar[float | list[float] | str] = 0
    retry_until: ClassVar[Any] = None  # float seconds, or a method
    delay: ClassVar[float] = 0

    #: set by the worker before `handle()`: this attempt's number (1 on the first run)
    attempts: int = 0
    #: set by the worker before `handle()`: the job's id, as `dispatch()` returned it
    job_id: str | None = None

    def __init__(self, **data: Any) -> None:
        for key in data:
            if key in RESERVED_NAMES or key.startswith("_"):
                raise JobDataError(
                    f"{type(self).job_name()} argument {key!r} clashes with a Job attribute; "
                    "rename it"
                )
        self.data: dict[str, Any] = dict(data)
        for key, value in data.items():
            setattr(self, key, value)

    def __getattr__(self, name: str) -> Any:
        # Only reached when normal lookup fails: name the job's actual arguments.
        if name.startswith("__"):
            raise AttributeError(name)
        known = ", ".join(sorted(self.__dict__.get("data", {}))) or "none"
        raise AttributeError(
            f"{type(self).job_name()} has no argument {name!r} (its data: {known})"
        )

    def handle(self) -> Awaitable[None] | None:
        """Do the work. Raise to fail the attempt; may be `async def`."""
        raise NotImplementedError(f"{type(self).job_name()} must implement handle()")

    def failed(self, exc: BaseException) -> None:
        """Called once after the last attempt failed. Exceptions here are logged only."""

    @classmethod
    def job_name(cls) -> str:
        """The name this class is registered and dispatched under."""
        return cls.__dict__.get("name") or cls.__name__

    def retry_deadline(self, dispatched_at: float) -> float | None:
        """Absolute unix time after which no attempt is made, or None."""
        policy = type(self).retry_until
        if policy is None:
            return None
        value = policy(self) if callable(policy) else policy
        if value is None:
            return None
        if isinstance(value, datetime):
            return value.timestamp()
        if isinstance(value, int | float) and not isinstance(value, bool):
            return dispatched_at + float(value)
        raise JobDataError(
            f"{self.job_name()}.retry_until must be seconds or a datetime, got {value!r}"
        )

    def validated_data(self) -> dict[str, Any]:
        """The data, checked to survive a JSON round trip; `JobDataError` names the culprit."""
        for key, value in self.data.items():
            _check_json_value(self.job_name(), key, value, DATA_DEPTH + 1)
        try:
            json.dumps(self.data, allow_nan=False)
        except (TypeError, ValueError) as exc:  # pragma: no cover - _check_json_value is stricter
            raise JobDataError(f"{self.job_name()} data is not JSON-serialisable: {exc}") from None
        return self.data


def _check_json_value(job: str, path: str, value: Any, depth: int) -> None:
    """Raise `JobDataError` unless `value` is plain JSON (tuples allowed, become lists).

    `depth` is the envelope nesting level `value` would have if it is a list or
    dict; past MAX_JSON_DEPTH a worker would refuse the job, so it is refused here.
    """
    if isinstance(value, list | tuple | dict) and depth > MAX_JSON_DEPTH:
        raise JobDataError(
            f"{job} argument {path.split('[')[0]!r} nests deeper than {MAX_JSON_DEPTH} levels "
            "(MAX_JSON_DEPTH); flatten it"
        )
    if value is None or isinstance(value, bool | str):
        return
    if isinstance(value, int):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise JobDataError(
                f"{job} argument {path!r} is {value!r}, which JSON cannot carry; "
                "pass a finite number or None"
            )
        return
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check_json_value(job, f"{path}[{index}]", item, depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise JobDataError(
                    f"{job} argument {path!r} has a non-string key {key!r}; "
                    "JSON object keys are strings"
                )
            _check_json_value(job, f"{path}[{key!r}]", item, depth + 1)
        return
    raise JobDataError(
        f"{job} argument {path!r} is a {type(value).__module__}.{type(value).__qualname__}, "
        "which is not JSON; pass str, int, float, bool, None, list or dict "
        "(for example an ISO string for a datetime)"
    )
