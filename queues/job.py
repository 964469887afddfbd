"""The `Job` base class users subclass in `app/jobs/`.

A job is a class with a `handle(self)` method (plain or `async def`) and
class-level retry policy. Its constructor keyword arguments are its data: they
travel as JSON inside the envelope (never pickle), so they must be plain JSON
values, or pydantic models. `dispatch()` checks that before anything is queued
and names the job and the argument that is not JSON.

A pydantic model argument travels as its JSON dump (`model_dump(mode="json")`);
when the class annotates that argument with the model (`reading: Reading`, or
`Reading | None`), the worker gets the model back (validated: a dict that does
not fit is a `JobDataError` naming the fields). Without the annotation the
worker sees the dict.

Note: JSON has no tuple, so a tuple argument arrives in the worker as a list.
"""

from __future__ import annotations

import inspect
import json
import math
import sys
import threading
import types
import typing
from collections.abc import Awaitable
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Union

from support.validation import describe_errors

if TYPE_CHECKING:
    from pydantic import BaseModel

    from backends.mqtt_message import MessageProperties, Payload

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
        "publish",
        "job_name",
        "retry_deadline",
        "validated_data",
        "attempts",
        "job_id",
        "unique_for",
        "unique_id",
        "middleware",
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
    * `unique_for` - seconds: a second dispatch with the same `unique_id()` while
      this one is queued or running (and at most this long) queues nothing and
      returns the first job's id (queues/unique.py). Also `dispatch(unique_for=)`.

    `middleware()` returns job middleware run around `handle()`
    (queues/job_middleware.py: `RateLimited`, `WithoutOverlapping`).

    `failed(exc)` is called once when the job fails for good; `publish(...)`
    sends an MQTT message from `handle()`.

    Arguments may be declared as class annotations (`device_id: str`); one
    declared without a default is required, so a job built without it fails
    with `JobDataError` at dispatch rather than with `AttributeError` in the worker.
    """

    name: ClassVar[str | None] = None
    abstract: ClassVar[bool] = False
    queue: ClassVar[str] = "default"
    max_tries: ClassVar[int] = 1
    timeout: ClassVar[float | None] = None
    backoff: ClassVar[float | list[float] | str] = 0
    retry_until: ClassVar[Any] = None  # float seconds, or a method
    delay: ClassVar[float] = 0
    unique_for: ClassVar[float | None] = None

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
        missing = _required_arguments(type(self)).difference(data)
        if missing:
            raise JobDataError(
                f"{type(self).job_name()} needs argument(s) {', '.join(map(repr, sorted(missing)))}"
            )
        values = data
        self.data: dict[str, Any] = dict(data)
        model_base = _loaded_model_base()
        if model_base is not None:
            values = _with_models(type(self), data, self.data, model_base)
        for key, value in values.items():
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

    def unique_id(self) -> str:
        """What makes two dispatches of this class the same job for `unique_for`
        (default "": one at a time per class). Override, e.g. `return self.device_id`."""
        return ""

    def middleware(self) -> list[Any]:
        """Job middleware run around `handle()`, outermost first (default: none)."""
        return []

    def failed(self, exc: BaseException) -> None:
        """Called once after the last attempt failed. Exceptions here are logged only."""

    def publish(
        self,
        topic: str,
        payload: Payload,
        qos: int = 1,
        retain: bool = False,
        properties: MessageProperties | None = None,
    ) -> None:
        """Publish an MQTT message through the worker process's shared connection.

        The connection opens on the first publish of the process (MQTT_HOST and
        the other MQTT_* settings; without MQTT_HOST, 127.0.0.1) and serves every
        later job. With QoS 1 this returns once the broker acknowledged the
        message; if it does not within a few seconds, or the broker cannot be
        reached, it raises and the attempt fails (retried per the job's policy):
        at least once, so a retry may publish again. MQTT 5 `properties` need
        MQTT_PROTOCOL=5. Blocks the calling thread (also in `async def handle`).
        """
        from queues.connections import get_publisher

        get_publisher().publish(topic, payload, qos, retain, properties)

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
        "which is not JSON; pass str, int, float, bool, None, list, dict or a pydantic model "
        "(for example an ISO string for a datetime)"
    )


_required_cache: dict[type[Job], frozenset[str]] = {}


def _required_arguments(cls: type[Job]) -> frozenset[str]:
    """Names annotated on `cls` or its bases below `Job` without a default value."""
    required = _required_cache.get(cls)
    if required is None:
        names = {
            name
            for klass in cls.__mro__
            if klass is not Job and issubclass(klass, Job)
            for name in inspect.get_annotations(klass)
            if not hasattr(cls, name) and not name.startswith("_")
        }
        required = _required_cache[cls] = frozenset(names)
    return required


def _loaded_model_base() -> type[BaseModel] | None:
    """pydantic's `BaseModel` if pydantic is imported, else None (then no model can exist,
    and jobs of apps without pydantic never import it)."""
    if "pydantic" not in sys.modules:
        return None
    from pydantic import BaseModel

    return BaseModel


def _with_models(
    cls: type[Job], data: dict[str, Any], plain: dict[str, Any], model_base: type[BaseModel]
) -> dict[str, Any]:
    """The attribute values of `data`: dicts of model-annotated arguments validated into
    their model. Fills `plain` (the JSON data) with each model's JSON dump."""
    values = data
    models: dict[str, type[BaseModel]] | None = None
    for key, value in data.items():
        if isinstance(value, model_base):
            plain[key] = value.model_dump(mode="json")
        elif isinstance(value, dict):
            models = _model_arguments(cls, model_base) if models is None else models
            model = models.get(key)
            if model is None:
                continue
            if values is data:
                values = dict(data)
            values[key] = _validate(cls, key, model, value)
            plain[key] = values[key].model_dump(mode="json")
    return values


def _validate(cls: type[Job], key: str, model: type[BaseModel], value: Any) -> BaseModel:
    from pydantic import ValidationError

    try:
        return model.model_validate(value)
    except ValidationError as exc:
        raise JobDataError(
            f"{cls.job_name()} argument {key!r} is not a valid {model.__name__}: "
            f"{describe_errors(exc.errors(include_url=False, include_input=False))}"
        ) from None


def _single_type(hint: Any) -> type | None:
    """The class a hint names: `X` itself, or the `X` of `X | None`; else None."""
    if typing.get_origin(hint) in (Union, types.UnionType):
        options = [option for option in typing.get_args(hint) if option is not type(None)]
        hint = options[0] if len(options) == 1 else None
    return hint if isinstance(hint, type) else None


_model_arguments_cache: dict[type[Job], dict[str, type[BaseModel]]] = {}
_model_arguments_lock = threading.Lock()


def _model_arguments(cls: type[Job], model_base: type[BaseModel]) -> dict[str, type[BaseModel]]:
    """Argument name -> model class, for each argument `cls` annotates with a pydantic
    model (or the model `| None`); resolved once per class."""
    cached = _model_arguments_cache.get(cls)
    if cached is not None:
        return cached
    try:
        hints = typing.get_type_hints(cls)
    except Exception as exc:
        raise JobDataError(
            f"cannot resolve the annotations of job {cls.job_name()}: {exc}; "
            "import the types they name at module level"
        ) from None
    found: dict[str, type[BaseModel]] = {}
    for name, hint in hints.items():
        model = _single_type(hint)
        if model is not None and issubclass(model, model_base):
            found[name] = model
    with _model_arguments_lock:
        _model_arguments_cache[cls] = found
    return found
