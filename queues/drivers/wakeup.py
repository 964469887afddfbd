"""Wake-ups for idle database workers: a small pluggable interface and its same-machine form.

A database cannot push a notification to a waiting worker, so an idle worker
polls. A `Waker` shortens the wait: the driver calls `notify(queue)` after a
commit that made jobs of `queue` available (push, bulk, a release without
delay), and an idle worker waits on `listen(queues)` instead of sleeping, so a
job pushed on the same machine is picked up within a millisecond or two.

The listen-then-look order is what makes it race free: a worker opens its
listener, claims once more, and only then waits; a notify sent after the
listener exists is never lost, and one sent before it found the job already
committed, so the claim saw it. Wake-ups are hints: a lost or spurious one
costs at most a poll interval (the waiting worker still polls, see
`queues/drivers/database.py`), never a job.

`LocalWaker` is the same-machine implementation: one unix datagram socket per
idle worker per queue, in a folder per database and queue under the system
temp dir; `notify` sends one byte to each socket found there (no round trip to
any server; a busy worker has no socket, so a push while every worker is busy
costs one directory listing). Other machines fall back to polling. A
PostgreSQL LISTEN/NOTIFY waker (issue 17a) implements the same two methods.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import select
import socket
import tempfile
import uuid
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

#: Folder (under the system temp dir) of every LocalWaker's sockets.
WAKEUP_FOLDER = "routemq-wake"
#: Hex digits of the hashes naming a database's and a queue's folder (socket paths
#: must stay under the 108-byte limit of AF_UNIX addresses).
NAME_DIGITS = 16
#: Bytes read per datagram when draining a woken socket.
DATAGRAM_BYTES = 64


class Listener(ABC):
    """An idle worker's open ear on some queues; close it (or use `with`) when done."""

    @abstractmethod
    def wait(self, timeout: float) -> bool:
        """Block up to `timeout` seconds for a notify; True if one came."""

    @abstractmethod
    def close(self) -> None:
        """Stop listening and free what the listener holds."""

    def __enter__(self) -> Listener:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class Waker(ABC):
    """Tells idle workers that jobs became available: `notify` after commit, `listen` to wait."""

    @abstractmethod
    def notify(self, queue: str) -> None:
        """Wake the workers idle on `queue` (call after the commit; never raises)."""

    @abstractmethod
    def listen(self, queues: Sequence[str]) -> Listener:
        """Start listening on `queues`: look for jobs once more AFTER this, then `wait`."""

    def wait(self, queues: Sequence[str], timeout: float) -> bool:
        """Listen and wait once (a caller that re-checks in between should use `listen`)."""
        with self.listen(queues) as listener:
            return listener.wait(timeout)


class LocalWaker(Waker):
    """Unix datagram sockets between the processes of one machine (see the module doc).

    `identity` names the database (a SQLite file's real path, or a server's
    host, port and database): workers and dispatchers of the same database
    meet in the same folder.
    """

    def __init__(self, identity: str, root: Path | None = None) -> None:
        base = root or Path(tempfile.gettempdir()) / WAKEUP_FOLDER
        self.folder = base / _digest(identity)

    def _queue_folder(self, queue: str) -> Path:
        return self.folder / _digest(queue)

    def notify(self, queue: str) -> None:
        """Send one byte to every socket of an idle worker of `queue`; stale ones are removed."""
        folder = self._queue_folder(queue)
        try:
            names = os.listdir(folder)
        except OSError:
            return  # nobody ever listened here
        if not names:
            return
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
            sender.setblocking(False)
            for name in names:
                path = folder / name
                try:
                    sender.sendto(b"!", str(path))
                except (ConnectionRefusedError, FileNotFoundError):
                    with contextlib.suppress(OSError):
                        path.unlink()  # its worker died without removing it
                except OSError:
                    pass  # buffer full (already woken) or a race with its removal

    def listen(self, queues: Sequence[str]) -> Listener:
        """One bound socket per queue; removed again on close."""
        return _LocalListener([self._queue_folder(q) for q in queues])


class _LocalListener(Listener):
    def __init__(self, folders: Sequence[Path]) -> None:
        self._sockets: list[tuple[socket.socket, Path]] = []
        name = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            for folder in folders:
                folder.mkdir(parents=True, exist_ok=True)
                path = folder / name
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                sock.setblocking(False)
                try:
                    sock.bind(str(path))
                except OSError:
                    sock.close()
                    raise
                self._sockets.append((sock, path))
        except OSError:
            self.close()  # no ear: the caller just polls

    def wait(self, timeout: float) -> bool:
        if not self._sockets:
            select.select([], [], [], max(timeout, 0.0))
            return False
        ready, _, _ = select.select([s for s, _ in self._sockets], [], [], max(timeout, 0.0))
        for sock in ready:
            with contextlib.suppress(OSError):
                while sock.recv(DATAGRAM_BYTES):
                    pass
        return bool(ready)

    def close(self) -> None:
        for sock, path in self._sockets:
            with contextlib.suppress(OSError):
                path.unlink()
            sock.close()
        self._sockets = []


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:NAME_DIGITS]
