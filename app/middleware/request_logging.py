"""`RequestLogging`: one log line per message with topic, route, outcome and time taken."""

from __future__ import annotations

import logging
import time
from typing import Any

from core.message import Message
from core.middleware import Middleware, Next

#: Milliseconds per second, for the elapsed-time field.
MS_PER_SECOND = 1000.0


class RequestLogging(Middleware):
    """Logs topic, route pattern, outcome (`ok` or `failed (Error: text)`) and the
    elapsed milliseconds of everything after it in the chain.

    Successful messages log at `level` (default INFO); failures log at `error_level`
    (default WARNING) and the exception still propagates unchanged.
    """

    def __init__(
        self,
        level: int = logging.INFO,
        error_level: int = logging.WARNING,
        logger: logging.Logger | None = None,
    ) -> None:
        self.level = level
        self.error_level = error_level
        self.logger = logger or logging.getLogger("app.requests")

    def handle(self, message: Message, next: Next) -> Any:
        """Time `next(message)` and log the result; never swallows an exception."""
        start = time.perf_counter()
        try:
            result = next(message)
        except BaseException as exc:
            self._log(self.error_level, message, f"failed ({type(exc).__name__}: {exc})", start)
            raise
        self._log(self.level, message, "ok", start)
        return result

    def _log(self, level: int, message: Message, outcome: str, start: float) -> None:
        if not self.logger.isEnabledFor(level):
            return
        elapsed_ms = (time.perf_counter() - start) * MS_PER_SECOND
        pattern = getattr(message.route, "pattern", None)
        self.logger.log(
            level,
            "topic=%s route=%s outcome=%s elapsed_ms=%.2f",
            message.topic,
            pattern,
            outcome,
            elapsed_ms,
        )
