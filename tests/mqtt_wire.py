"""A transparent TCP proxy that records the MQTT packets crossing it, for tests.

`WireTap` sits between a client and a real broker: bytes pass unchanged, and
every PUBLISH sent by the broker and every PUBACK sent by the client is recorded
with its packet id, in wire order. Tests use it to check what really went over
the connection (the order of acknowledgements), not what the client believes.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from dataclasses import dataclass, field

#: MQTT control packet types (high nibble of the first byte).
PUBLISH, PUBACK = 3, 4
#: Bytes read from a socket at once.
CHUNK = 65536


@dataclass
class WireLog:
    """Packet ids seen on one proxied connection, in wire order."""

    publishes: list[int] = field(default_factory=list)  #: broker -> client, QoS 1/2
    pubacks: list[int] = field(default_factory=list)  #: client -> broker


def _frames(buffer: bytearray) -> list[tuple[int, bytes]]:
    """Cut complete MQTT frames `(first byte, body)` off the front of `buffer`."""
    frames: list[tuple[int, bytes]] = []
    while len(buffer) >= 2:
        multiplier, length, index = 1, 0, 1
        while True:
            if index >= len(buffer):
                return frames
            byte = buffer[index]
            length += (byte & 0x7F) * multiplier
            multiplier *= 128
            index += 1
            if not byte & 0x80:
                break
        if len(buffer) < index + length:
            return frames
        frames.append((buffer[0], bytes(buffer[index : index + length])))
        del buffer[: index + length]
    return frames


class WireTap:
    """Listens on a free loopback port and proxies each connection to the broker."""

    def __init__(self, broker_host: str, broker_port: int) -> None:
        self._upstream = (broker_host, broker_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self.connections: list[WireLog] = []
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self._upstream)
            log = WireLog()
            with self._lock:
                self.connections.append(log)
            for source, sink, down in ((upstream, client, True), (client, upstream, False)):
                threading.Thread(
                    target=self._pump, args=(source, sink, log, down), daemon=True
                ).start()

    def _pump(self, source: socket.socket, sink: socket.socket, log: WireLog, down: bool) -> None:
        buffer = bytearray()
        try:
            while True:
                data = source.recv(CHUNK)
                if not data:
                    break
                buffer += data
                for first, body in _frames(buffer):
                    self._record(first, body, log, down)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def _record(self, first: int, body: bytes, log: WireLog, down: bool) -> None:
        kind, qos = first >> 4, (first >> 1) & 3
        if down and kind == PUBLISH and qos:
            topic_length = int.from_bytes(body[:2], "big")
            start = 2 + topic_length
            with self._lock:
                log.publishes.append(int.from_bytes(body[start : start + 2], "big"))
        elif not down and kind == PUBACK:
            with self._lock:
                log.pubacks.append(int.from_bytes(body[:2], "big"))

    def close(self) -> None:
        """Stop accepting; open connections end when either side closes."""
        self._closed = True
        self._listener.close()
