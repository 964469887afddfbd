"""The small HTTP server of a process: metrics, health and the dashboard.

One `HttpServer` per listening address, serving the routes mounted on it from
daemon threads (the standard library's `ThreadingHTTPServer`): a slow client
never holds up the process's own work, and the server dies with the process.
Handlers get a `Request` and return a `Response`; an exception in a handler is
logged and answered with 500, never raised into the server.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger(__name__)

#: Largest request body read, bytes (the dashboard's actions send none or a few).
MAX_BODY_BYTES = 64 * 1024
#: Seconds a client may take to send its request before the connection is closed.
REQUEST_TIMEOUT = 10.0


@dataclass(frozen=True)
class Request:
    """One HTTP request: method, path (without the query), query, headers, body."""

    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    body: bytes = b""


@dataclass(frozen=True)
class Response:
    """One HTTP response."""

    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    headers: Mapping[str, str] = field(default_factory=dict)


Handler = Callable[[Request], Response]


def json_response(status: int, value: Any) -> Response:
    """A JSON response (`application/json`)."""
    body = json.dumps(value, ensure_ascii=False, default=str).encode()
    return Response(status, body, "application/json")


class HttpServer:
    """Routes `(method, path)` to handlers; a path ending in `/` matches every path below it."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._routes: dict[tuple[str, str], Handler] = {}
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def route(self, method: str, path: str, handler: Handler) -> None:
        """Answer `method path` with `handler`."""
        self._routes[(method.upper(), path)] = handler

    @property
    def url(self) -> str:
        """`http://host:port` of the listening socket."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> None:
        """Listen and serve from a daemon thread; `OSError` naming the address if it cannot."""
        try:
            server = ThreadingHTTPServer((self.host, self.port), self._handler_class())
        except OSError as exc:
            raise OSError(f"cannot listen on {self.host}:{self.port}: {exc.strerror}") from None
        server.daemon_threads = True
        self.port = server.server_address[1]  # the real port when 0 asked for a free one
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, name=f"http-{self.port}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop listening and close the socket."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def handle(self, request: Request) -> Response:
        """The response of the route matching `request` (404 or 405 when none does)."""
        handler = self._routes.get((request.method, request.path))
        if handler is None:
            handler = self._prefix_handler(request.method, request.path)
        if handler is None:
            allowed = {m for (m, p) in self._routes if p == request.path}
            if allowed:
                return json_response(405, {"error": f"{request.method} not allowed here"})
            return json_response(404, {"error": f"no such page: {request.path}"})
        try:
            return handler(request)
        except Exception as exc:
            log.exception("HTTP %s %s failed", request.method, request.path)
            return json_response(500, {"error": f"{type(exc).__name__}: {exc}"})

    def _prefix_handler(self, method: str, path: str) -> Handler | None:
        best: tuple[int, Handler] | None = None
        for (route_method, route_path), handler in self._routes.items():
            if route_method != method or not route_path.endswith("/"):
                continue
            if path.startswith(route_path) and (best is None or len(route_path) > best[0]):
                best = (len(route_path), handler)
        return None if best is None else best[1]

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class _Handler(BaseHTTPRequestHandler):
            timeout = REQUEST_TIMEOUT
            server_version = "mqtt-jobs"
            sys_version = ""

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

            def _serve(self, method: str) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_BODY_BYTES:
                    self._send(json_response(413, {"error": "request body too large"}))
                    return
                body = self.rfile.read(length) if length else b""
                query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
                headers = {k.lower(): v for k, v in self.headers.items()}
                self._send(server.handle(Request(method, parts.path, query, headers, body)))

            def _send(self, response: Response) -> None:
                self.send_response(response.status)
                self.send_header("Content-Type", response.content_type)
                self.send_header("Content-Length", str(len(response.body)))
                self.send_header("Cache-Control", "no-store")
                for name, value in response.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(response.body)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("%s " + format, self.address_string(), *args)

        return _Handler
