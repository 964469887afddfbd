"""The dashboard: one page showing queues, throughput, failed jobs, routes and workers.

Plain HTML and a little JavaScript shipped in `queues/dashboard_static/` (no
build step), served by the process's small HTTP server (support/http_server.py)
from `python main.py --dashboard`, or from `--run` when DASHBOARD=true. The
page polls `GET /api/overview` every few seconds:

* queues: pending / delayed / reserved / failed per connection and queue
  (queues/queue_metrics.py: cached driver counters, no scan), with the jobs
  finished per second over the last minutes (a sparkline), from the workers'
  reports;
* failed jobs, newest first, with the first line of the exception; `GET
  /api/failed/{id}` shows one with its traceback and payload;
* batches (queues/workflows.py), newest first, with their progress (total,
  pending, done, failed); `GET /api/batches/{id}` shows one;
* the route table (given by the command line: the routes package is not the
  queues' business) and the live workers with the job each runs now
  (queues/worker_board.py).

Actions (`POST /api/failed/{id}/retry`, `POST /api/failed/{id}/forget`) need
`Authorization: Bearer {DASHBOARD_TOKEN}`; without a DASHBOARD_TOKEN they are
refused (403) and the page is read-only. The token travels in a header, never a
cookie, so another site cannot make a browser act on the dashboard. The server
binds DASHBOARD_HOST (127.0.0.1 unless told otherwise).
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from importlib import resources
from typing import Any

from config.settings import Settings
from queues import connections
from queues.commands import failed_entry, retry_entry
from queues.drivers.base import QueueDriver
from queues.failed_stores import FailedStores
from queues.queue_metrics import QueueDepths
from queues.worker_board import board_of
from queues.workflows import store_of
from support.http_server import HttpServer, Request, Response, json_response

log = logging.getLogger(__name__)

#: Failed jobs the page lists (newest first).
FAILED_SHOWN = 50
#: Batches the page lists per connection (newest first).
BATCHES_SHOWN = 20
#: Seconds between two throughput samples.
THROUGHPUT_INTERVAL = 5.0
#: Throughput samples kept (at THROUGHPUT_INTERVAL: the last five minutes).
THROUGHPUT_SAMPLES = 60
#: Files of the page, with their content types.
STATIC_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    "/dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
}


def enabled_drivers(settings: Settings) -> list[QueueDriver]:
    """The drivers of every enabled connection: database always, Redis when enabled."""
    names = ["redis", "database"] if settings.enable_redis else ["database"]
    return [connections.get_driver(name, settings) for name in names]


class Throughput:
    """Jobs finished per second per `connection/queue`, sampled from the workers' reports.

    Each sample adds, per worker, what its `processed` counts grew since the
    previous sample (a worker that restarted starts again from its new counts),
    so workers coming and going never make the rate jump or go negative.
    """

    def __init__(self, workers: Callable[[], list[dict[str, Any]]]) -> None:
        self._workers = workers
        self._previous: dict[str, dict[str, int]] = {}
        self._last_at: float | None = None
        self.history: deque[tuple[float, dict[str, float]]] = deque(maxlen=THROUGHPUT_SAMPLES)
        self._lock = threading.Lock()

    def sample(self) -> None:
        """Read the workers' counts and append one sample (rates since the last one)."""
        workers = self._workers()
        now = time.time()
        with self._lock:
            done: dict[str, int] = {}
            seen: dict[str, dict[str, int]] = {}
            for worker in workers:
                counts = {str(k): int(v) for k, v in (worker.get("processed") or {}).items()}
                key = f"{worker.get('id')}"
                seen[key] = counts
                before = self._previous.get(key, {})
                for queue, count in counts.items():
                    name = f"{worker.get('connection')}/{queue}"
                    done[name] = done.get(name, 0) + max(count - before.get(queue, 0), 0)
            self._previous = seen
            if self._last_at is not None:
                elapsed = max(now - self._last_at, 1e-6)
                self.history.append((now, {k: v / elapsed for k, v in done.items()}))
            self._last_at = now

    def series(self) -> dict[str, list[float]]:
        """Per `connection/queue`, the rates of the kept samples, oldest first."""
        with self._lock:
            samples = list(self.history)
        names = sorted({name for _, rates in samples for name in rates})
        return {name: [round(rates.get(name, 0.0), 3) for _, rates in samples] for name in names}


class Dashboard:
    """The dashboard's pages and API (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        routes: Sequence[dict[str, Any]],
        depths: QueueDepths | None = None,
    ) -> None:
        self.settings = settings
        self.routes = list(routes)
        self.depths = depths or QueueDepths(lambda: enabled_drivers(settings))
        self.throughput = Throughput(self.workers)
        self._stop = threading.Event()
        self._sampler: threading.Thread | None = None

    # -- setup ------------------------------------------------------------------

    def mount(self, server: HttpServer) -> None:
        """Serve the page and its API on `server`, and start sampling throughput."""
        for path in STATIC_FILES:
            server.route("GET", path, self._static)
        server.route("GET", "/api/overview", self._overview)
        server.route("GET", "/api/failed/", self._failed_show)
        server.route("POST", "/api/failed/", self._failed_action)
        server.route("GET", "/api/batches/", self._batch_show)
        if self._sampler is None:
            self._sampler = threading.Thread(
                target=self._sample_loop, name="dashboard", daemon=True
            )
            self._sampler.start()

    def close(self) -> None:
        """Stop sampling."""
        self._stop.set()

    def _sample_loop(self) -> None:
        while True:
            try:
                self.throughput.sample()
            except Exception as exc:
                log.debug("throughput sample failed: %s", exc)
            if self._stop.wait(THROUGHPUT_INTERVAL):
                return

    # -- data -------------------------------------------------------------------

    def workers(self) -> list[dict[str, Any]]:
        """The live workers of every enabled connection (a failing connection shows none)."""
        found: list[dict[str, Any]] = []
        for driver in enabled_drivers(self.settings):
            try:
                found.extend(board_of(driver).workers())
            except Exception as exc:
                log.debug("cannot read the workers of %s: %s", driver.name, exc)
        return found

    def overview(self) -> dict[str, Any]:
        """Everything the page shows, as JSON-ready data."""
        reading = self.depths.read()
        queues = [
            {
                "connection": d.connection,
                "queue": d.queue,
                "pending": d.sizes.pending,
                "delayed": d.sizes.delayed,
                "reserved": d.sizes.reserved,
                "failed": d.sizes.failed,
                "oldest_pending_age": d.sizes.oldest_pending_age,
            }
            for d in reading.depths
        ]
        failed: list[dict[str, Any]] = []
        errors = dict(reading.errors)
        try:
            failed = [failed_entry(e, full=False) for e in self._stores().all(None, FAILED_SHOWN)]
        except Exception as exc:
            errors["failed"] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        batches: list[dict[str, Any]] = []
        for driver in enabled_drivers(self.settings):
            try:
                batches.extend(self.batches(driver))
            except Exception as exc:
                errors[f"batches ({driver.name})"] = str(exc).splitlines()[0] if str(exc) else ""
        batches.sort(key=lambda b: b["created_at"] or 0.0, reverse=True)
        return {
            "queues": queues,
            "batches": batches,
            "throughput": self.throughput.series(),
            "throughput_interval": THROUGHPUT_INTERVAL,
            "failed": failed,
            "routes": self.routes,
            "workers": self.workers(),
            "actions": self.settings.dashboard_token is not None,
            "errors": errors,
            "now": time.time(),
        }

    @staticmethod
    def batches(driver: QueueDriver) -> list[dict[str, Any]]:
        """The newest batches kept beside `driver`, as JSON-ready data."""
        recent = store_of(driver).recent(BATCHES_SHOWN)
        return [state.as_dict() | {"connection": driver.name} for state in recent]

    def _stores(self) -> FailedStores:
        return connections.failed_stores(self.settings)

    # -- handlers ---------------------------------------------------------------

    def _static(self, request: Request) -> Response:
        name, content_type = STATIC_FILES[request.path]
        body = resources.files("queues").joinpath("dashboard_static", name).read_bytes()
        return Response(200, body, content_type)

    def _overview(self, request: Request) -> Response:
        return json_response(200, self.overview())

    def _failed_show(self, request: Request) -> Response:
        failed_id = request.path.removeprefix("/api/failed/")
        entry = self._stores().find(failed_id)
        if entry is None:
            return json_response(404, {"error": f"no failed job with id {failed_id!r}"})
        return json_response(200, failed_entry(entry, full=True))

    def _batch_show(self, request: Request) -> Response:
        batch_id = request.path.removeprefix("/api/batches/")
        for driver in enabled_drivers(self.settings):
            state = store_of(driver).get(batch_id)
            if state is not None:
                return json_response(200, state.as_dict() | {"connection": driver.name})
        return json_response(404, {"error": f"no batch with id {batch_id!r}"})

    def _failed_action(self, request: Request) -> Response:
        failed_id, _, action = request.path.removeprefix("/api/failed/").rpartition("/")
        if action not in ("retry", "forget") or not failed_id:
            return json_response(404, {"error": f"no such action: {request.path}"})
        refused = self._refuse(request)
        if refused is not None:
            return refused
        stores = self._stores()
        entry = stores.find(failed_id)
        if entry is None:
            return json_response(404, {"error": f"no failed job with id {failed_id!r}"})
        if action == "forget":
            stores.remove([entry])
            log.info("dashboard: forgot failed job %s", failed_id)
            return json_response(200, {"forgotten": failed_id})
        job_id = retry_entry(entry, stores, self.settings)
        log.info("dashboard: retried failed job %s as job %s", failed_id, job_id)
        return json_response(200, {"retried": failed_id, "job_id": job_id})

    def _refuse(self, request: Request) -> Response | None:
        """403 when actions are off, 401 without the right token, else None."""
        token = self.settings.dashboard_token
        if token is None:
            return json_response(
                403, {"error": "actions are off: set DASHBOARD_TOKEN to allow retry and forget"}
            )
        given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), token.encode()):
            return json_response(401, {"error": "wrong or missing dashboard token"})
        return None
