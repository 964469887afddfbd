"""What a log line is about: the job or the MQTT topic its thread is handling now.

The worker binds the job it runs and the intake binds the message it routes;
every record logged meanwhile on that thread (the framework's lines and the
app's own, `async def` code included: asyncio copies the context into its
tasks) carries them, and `LOG_FORMAT=json` writes them as `job_id`, `job` and
`topic` (support/logging_setup.py). Binding costs one context variable set and
reset: cheap enough for every job and message.
"""

from __future__ import annotations

from contextvars import ContextVar, Token

#: The fields of the job or message being handled on this thread (empty: none).
_current: ContextVar[dict[str, str] | None] = ContextVar("log_context", default=None)

#: What `current()` returns when nothing is bound.
_EMPTY: dict[str, str] = {}

Binding = Token[dict[str, str] | None]


def bind(**fields: str) -> Binding:
    """From now on records logged on this thread carry `fields` (e.g. `job_id=...`),
    until `unbind` gets the returned binding."""
    return _current.set({**(_current.get() or {}), **fields})


def unbind(binding: Binding) -> None:
    """Go back to the fields bound before `bind` returned `binding`."""
    _current.reset(binding)


def current() -> dict[str, str]:
    """The fields bound on this thread now (do not modify)."""
    return _current.get() or _EMPTY
