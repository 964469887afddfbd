"""`/health` and `/ready`: is the process alive, and can it do its work now?

A process registers named checks; each returns None when fine, else the
reason in one line. `/health` runs the liveness checks (the process's own loop
still turns: a failing one means restart it), `/ready` runs the readiness checks
(its connections are up: MQTT connected and subscribed, the queue backend
answers). Both answer 200 when every check passes and 503 otherwise, with a
JSON body naming each check and its reason, e.g.
`{"status": "not ready", "checks": {"queue": "redis: Connection refused"}}`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from support.http_server import HttpServer, Request, Response, json_response

log = logging.getLogger(__name__)

#: A check: None when fine, else why not (one line).
Check = Callable[[], "str | None"]
#: Text a passing check shows in the JSON body.
OK = "ok"


class LoopMonitor:
    """Liveness of a loop that should turn at least every `stall_after` seconds.

    The loop calls `beat()` each turn; `busy(True)` while it runs something
    that has its own time limit (a job), during which it counts as alive.
    """

    def __init__(self, name: str, stall_after: float) -> None:
        self.name = name
        self.stall_after = stall_after
        self._last = time.monotonic()
        self._busy = False

    def beat(self) -> None:
        """The loop turned."""
        self._last = time.monotonic()

    def busy(self, busy: bool) -> None:
        """The loop started (True) or finished (False) work that bounds its own time."""
        self._busy = busy
        self._last = time.monotonic()

    def check(self) -> str | None:
        """None while the loop turns, else how long it has been stuck."""
        if self._busy:
            return None
        quiet = time.monotonic() - self._last
        if quiet > self.stall_after:
            return f"{self.name} has not turned for {quiet:.1f} s"
        return None


class Health:
    """The liveness and readiness checks of one process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._liveness: dict[str, Check] = {}
        self._readiness: dict[str, Check] = {}

    def add_liveness(self, name: str, check: Check) -> None:
        """`/health` fails while `check` returns a reason."""
        with self._lock:
            self._liveness[name] = check

    def add_readiness(self, name: str, check: Check) -> None:
        """`/ready` fails while `check` returns a reason."""
        with self._lock:
            self._readiness[name] = check

    def live(self) -> tuple[bool, dict[str, str]]:
        """(every liveness check passes, each check's result)."""
        return self._run(self._liveness)

    def ready(self) -> tuple[bool, dict[str, str]]:
        """(every readiness and liveness check passes, each check's result)."""
        live_ok, live = self._run(self._liveness)
        ready_ok, ready = self._run(self._readiness)
        return live_ok and ready_ok, {**live, **ready}

    def _run(self, checks: dict[str, Check]) -> tuple[bool, dict[str, str]]:
        with self._lock:
            items = list(checks.items())
        results: dict[str, str] = {}
        for name, check in items:
            try:
                reason = check()
            except Exception as exc:  # a check must never take the endpoint down
                reason = f"{type(exc).__name__}: {exc}"
            results[name] = OK if reason is None else reason
        return all(r == OK for r in results.values()), results

    def mount(self, server: HttpServer) -> None:
        """Answer `GET /health` and `GET /ready` on `server`."""
        server.route("GET", "/health", self._health)
        server.route("GET", "/ready", self._ready)

    def _health(self, request: Request) -> Response:
        ok, checks = self.live()
        return json_response(
            200 if ok else 503, {"status": "ok" if ok else "failing", "checks": checks}
        )

    def _ready(self, request: Request) -> Response:
        ok, checks = self.ready()
        status = "ready" if ok else "not ready"
        return json_response(200 if ok else 503, {"status": status, "checks": checks})
