"""Run route handlers that may be `def` or `async def` from synchronous dispatch code.

A sync handler is called directly. An async handler's coroutine runs on one
shared asyncio event loop in a daemon thread (started on first use), and the
caller blocks until it finishes: its result is returned and its exception
re-raised in the caller, so the runtime sees async failures like sync ones.
All async handlers share that loop, so they may share async clients.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import inspect
import threading
from collections.abc import Callable, Coroutine
from typing import Any

from core.message import Message

#: A route handler: `handler(message)`, returning anything (or a coroutine).
Handler = Callable[[Message], Any]

#: Seconds `shutdown_loop` waits for the loop thread to stop.
LOOP_STOP_TIMEOUT = 5.0

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None


def is_async(handler: Callable[..., Any]) -> bool:
    """True if calling `handler` returns a coroutine (an `async def`, or an object whose
    `__call__` is one)."""
    if inspect.iscoroutinefunction(handler):
        return True
    call = getattr(handler, "__call__", None)  # noqa: B004 - we inspect it, not call it
    return call is not None and inspect.iscoroutinefunction(call)


def background_loop() -> asyncio.AbstractEventLoop:
    """The shared event loop for async handlers, started in a daemon thread on first use."""
    global _loop, _thread
    loop = _loop
    if loop is not None and not loop.is_closed():
        return loop
    with _lock:
        if _loop is None or _loop.is_closed():
            new_loop = asyncio.new_event_loop()
            ready = threading.Event()

            def run() -> None:
                asyncio.set_event_loop(new_loop)
                new_loop.call_soon(ready.set)
                new_loop.run_forever()

            thread = threading.Thread(target=run, name="mqtt-async-handlers", daemon=True)
            thread.start()
            ready.wait()
            _loop, _thread = new_loop, thread
        return _loop


def run_coroutine(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """Run `coroutine` on the shared loop and wait for its result (or exception).

    The coroutine runs in a copy of the caller's context (`contextvars`), as if it
    ran on the calling thread: what the caller set up for it - the recording of
    the jobs a handler dispatches (queues/outbox.py) - holds inside it too.

    Refuses (RuntimeError) when called from the loop thread itself, which would
    otherwise deadlock: an async handler must not dispatch synchronously.
    """
    loop = background_loop()
    if threading.current_thread() is _thread:
        coroutine.close()
        raise RuntimeError(
            "router.dispatch was called from inside an async handler; that would deadlock "
            "the shared event loop — await the work directly instead"
        )
    outcome: concurrent.futures.Future[Any] = concurrent.futures.Future()

    def start() -> None:  # on the loop, in the caller's context: the task copies it
        task = loop.create_task(coroutine)
        task.add_done_callback(lambda finished: _settle(finished, outcome))

    loop.call_soon_threadsafe(start, context=contextvars.copy_context())
    return outcome.result()


def _settle(task: asyncio.Task[Any], outcome: concurrent.futures.Future[Any]) -> None:
    """Hand a finished task's result, exception or cancellation to the waiting caller."""
    if task.cancelled():
        outcome.cancel()
    elif task.exception() is not None:
        outcome.set_exception(task.exception())
    else:
        outcome.set_result(task.result())


def sync_caller(handler: Handler) -> Handler:
    """A plain function that runs `handler(message)` to completion and returns its result."""
    if not is_async(handler):
        return handler

    def call_async(message: Message) -> Any:
        return run_coroutine(handler(message))

    return call_async


def shutdown_loop() -> None:
    """Stop the shared loop and its thread (if started); a later async call starts a new one."""
    global _loop, _thread
    with _lock:
        loop, thread = _loop, _thread
        _loop, _thread = None, None
    if loop is None or thread is None:
        return
    loop.call_soon_threadsafe(loop.stop)
    thread.join(LOOP_STOP_TIMEOUT)
    if not thread.is_alive():
        loop.close()
