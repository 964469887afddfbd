"""The operations surface of one process: health checks, metrics, and where they are served.

`--run`, `--queue-work` and `--dashboard` each build one `Ops`: its `health`
takes the checks of the parts that run in the process, `metrics` (when this
process records metrics) the collectors read at scrape time, and `start()`
serves `/metrics`, `/health` and `/ready` on METRICS_HOST:METRICS_PORT when
that port is set. Pages mounted with `server(host, port)` on the same address
share its listener (one server per address).
"""

from __future__ import annotations

import logging

from config.settings import Settings
from support.health import Health
from support.http_server import HttpServer, Request, Response
from support.metrics import CONTENT_TYPE, MetricsEndpoint, recording

log = logging.getLogger(__name__)


class Ops:
    """Health, metrics and HTTP servers of one process (see the module docstring).

    `run_directory`: a supervisor's metrics directory (support/metrics.py
    `MetricsRun`); `/metrics` then merges its children's metrics.
    """

    def __init__(self, settings: Settings, run_directory: str | None = None) -> None:
        self.settings = settings
        self.health = Health()
        self.records_metrics = run_directory is None and recording(settings.metrics_port)
        serves = settings.metrics_port is not None
        self.metrics = MetricsEndpoint(run_directory) if serves else None
        self._servers: dict[tuple[str, int], HttpServer] = {}

    def server(self, host: str, port: int) -> HttpServer:
        """The server of `host:port` (made on first use; started by `start`)."""
        key = (host, port)
        if key not in self._servers:
            self._servers[key] = HttpServer(host, port)
        return self._servers[key]

    def start(self) -> list[str]:
        """Mount `/metrics`, `/health`, `/ready` (METRICS_PORT set) and start every server.

        Returns the URLs served; `OSError` naming the address when one cannot listen
        (servers already started are stopped again).
        """
        if self.settings.metrics_port is not None:
            server = self.server(self.settings.metrics_host, self.settings.metrics_port)
            server.route("GET", "/metrics", self._metrics)
            self.health.mount(server)
        urls = []
        try:
            for server in self._servers.values():
                server.start()
                urls.append(server.url)
        except OSError:
            self.stop()
            raise
        for url in urls:
            log.info("serving %s", url)
        return urls

    def stop(self) -> None:
        """Stop every server."""
        for server in self._servers.values():
            server.stop()

    def _metrics(self, request: Request) -> Response:
        assert self.metrics is not None
        return Response(200, self.metrics.exposition(), CONTENT_TYPE)
