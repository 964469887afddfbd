"""The Redis queue driver and the Redis failed store.

Key layout (prefix `routemq:queue:`; the first four are the seed's contract and
always tell the truth to `LLEN`, `ZCARD` and `LRANGE`):

* `routemq:queue:{name}`              List of pending jobs, oldest at the head
* `routemq:queue:{name}:delayed`      Sorted Set of delayed jobs scored by due unix time
* `routemq:queue:{name}:reserved`     List of in-flight payloads (as reserved)
* `routemq:queue:failed:{name}`       List of failed records, oldest at the head
* `routemq:queue:{name}:leases`       Sorted Set job id -> lease expiry unix time
* `routemq:queue:{name}:reservations` Hash job id -> `<token>:<payload>`: the reservation's
                                      fencing token (a pop's nonce, `transfer:<nonce>` for a
                                      migration) and the :reserved entry it must remove
* `routemq:queue:{name}:ids`          Hash job id -> state (`q`, `r:<since>`, `t`,
                                      `x:<seconds>`): the id index (include/id_index.lua)
* `routemq:queue:{name}:transfer`     Hash job id -> due time of a job leased by a migration
* `routemq:queue:{name}:notify`       List of wake-up tokens for blocked workers (bounded)
* `routemq:queue:{name}:status:{id}`  String: a finished job's status (JSON), written by
                                      ack.lua / fail.lua, expiring after JOB_STATUS_RETENTION
* `routemq:queue:{name}:once:{id}`    String: the mark of a workflow step dispatched once
                                      (push_once.lua), expiring after JOB_STATUS_RETENTION
* `routemq:queue:pops:{nonce}`        String receipt of one pop call (expires, see pop.lua)
* `routemq:queue:settles:{nonce}`     String receipt of one successful ack/release/extend/fail
                                      call (expires, see include/reservation.lua)
* `routemq:queues`                    Set of queue names ever pushed to
* `routemq:queues:failed`             Set of queue names with a failed list

On a Redis Cluster (a `RedisCluster` client, REDIS_CLUSTER=true) the template
is taken literally: `routemq:queue:{emails}`, `routemq:queue:{emails}:delayed`,
`routemq:queue:failed:{emails}`..., the braces making the name the hash tag
(`hash_tag`), and the receipts become `routemq:queue:{emails}:pops:{nonce}` and
`...:settles:{nonce}`, so every script's keys lie in one slot. The two sets of
names are then kept by the client beside the scripts (added before a queue's
first job or record, never shrunk), a pop on several queues runs one script per
queue, and a bulk one script per queue.

Queue names: every path refuses a name whose keys would be another queue's
(`failed:x`, `x:reserved`, any ':', `failed`; `validate_queue_name(existing=
True)`), and names of queues that get NEW jobs (push, later, bulk) must also use
only letters, digits, '_', '.' and '-'. So queues created before names were
checked (`reports/daily`) stay readable and drainable, and `failed:x` can never
be mistaken for a queue.

Every state change is one Lua script from `redis_scripts/` (atomic on the
server, timed by the server clock `TIME`, so all workers agree on "now"). Every
operator path is O(its own work): `contains` is two HEXISTS on the id index,
and the failed store's scans, flushes and removals run in windows of
FAILED_SCAN_WINDOW records per script call, so no call holds Redis for long.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import wraps
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import redis
from redis.commands.core import Script

from backends.errors import BackendUnavailableError
from backends.redis_client import address, is_cluster, redis_errors, socket_timeout_of
from queues.drivers.base import (
    DEFAULT_RETRY_AFTER,
    FailedJob,
    FailedStore,
    JobStatus,
    QueueDriver,
    QueueError,
    QueueSizes,
    ReservedJob,
    payload_job_name,
    status_reason,
)
from queues.envelope import (
    EnvelopeError,
    checked_delay,
    colliding_queue_name,
    decode_json,
    validate_queue_name,
)

#: Folder of the Lua scripts, one atomic state change per file.
SCRIPTS_DIR = Path(__file__).resolve().parent / "redis_scripts"
#: A script line that pulls in a shared Lua function from redis_scripts/include/.
INCLUDE_DIRECTIVE = "-- @include "
#: Default key prefix of every queue key (seed contract).
DEFAULT_PREFIX = "routemq:queue:"
#: Most due delayed jobs (and expired leases) one pop moves per queue.
MIGRATE_BATCH = 100
#: Most wake-up tokens kept in a queue's notify list.
NOTIFY_CAP = 1000
#: Longest single BLPOP of a blocking pop, seconds (then the pop script runs again).
MAX_BLOCK_SLICE = 2.0
#: Shortest BLPOP wait, seconds (0 would mean "forever" to Redis).
MIN_BLOCK_SLICE = 0.005
#: Seconds kept free between a BLPOP timeout and the client's socket timeout.
SOCKET_TIMEOUT_MARGIN = 1.0
#: Seconds a pop receipt (`routemq:queue:pops:{nonce}`) lives. It must outlast the
#: client's worst retry window for one EVALSHA: CONNECTION_RETRIES (3) re-sends,
#: each after up to SOCKET_TIMEOUT (10 s) plus a backoff of at most 0.5 s, about
#: 32 s. Memory: one key of ~150 bytes per reserved job for this long, e.g.
#: 1000 pops/s keep ~60000 receipts, about 9 MB; empty pops write none.
POP_RECEIPT_TTL = 60
#: First Redis major version whose BLPOP accepts a fractional timeout.
FRACTIONAL_BLPOP_SINCE = 6
#: Seconds a settle receipt (`routemq:queue:settles:{nonce}`) lives: the same
#: retry window as a pop receipt. Only successful calls write one: a key of ~105
#: bytes (MEMORY USAGE) per ack, release, extend or fail for this long, e.g.
#: 1000 jobs/s (one ack each) keep ~60000 receipts, about 6 MB.
SETTLE_RECEIPT_TTL = POP_RECEIPT_TTL
#: Marker that starts a migration's fencing token (see include/token.lua).
TRANSFER_TOKEN_TAG = "transfer:"
#: Most pending (and most delayed) entries one take_for_transfer call steps
#: over because their job id is already reserved (duplicate copies).
TRANSFER_MAX_SKIP = 1000
#: Failed records one failed-store script call reads (scan, flush, remove): the
#: bound on how long any such call holds Redis.
FAILED_SCAN_WINDOW = 200
#: Times `forget` looks a record up again when the list moved under it.
FORGET_ATTEMPTS = 5
#: Largest failed record the store decodes, in bytes: a payload of
#: MAX_PAYLOAD_BYTES JSON-escaped, plus its traceback.
MAX_FAILED_RECORD_BYTES = 8 * 1024 * 1024
#: Longest BLPOP slice of a blocking pop on several queues of a Redis Cluster, seconds:
#: their notify lists lie in different slots, so it blocks on the first queue's only and
#: looks at the others again after this long.
CLUSTER_MULTI_QUEUE_SLICE = 0.1
#: Milliseconds a dispatch waits for REDIS_WAIT_REPLICAS acknowledgements by default.
DEFAULT_WAIT_TIMEOUT_MS = 1000
#: Prefix of the synthetic id a duplicate copy of a reserved job is reserved under.
DUPLICATE_PREFIX = "duplicate-"
#: Kind pop.lua reports for such a copy.
DUPLICATE_KIND = "duplicate"

# [0-9], not \d: Lua's %d matches ASCII digits only, and both must agree; the id
# set is the one queues.envelope.JOB_ID_PATTERN and include/envelope.lua use.
_ENVELOPE_HEAD = re.compile(r'^\{"attempts":([0-9]+),"id":"([\x21\x23-\x5b\x5d-\x7e]+)"')
#: Where a failed record ends: `"failed_at":<unix time>}` (RedisFailedStore.record).
_FAILED_AT_TAIL = re.compile(r'"failed_at":([0-9.eE+-]+)\}$')

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _text(value: Any) -> str:
    """A reply as text; bytes that are not UTF-8 (a hand-written entry) are replaced."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def malformed_id(payload: str) -> str:
    """The synthetic id pop.lua gives an entry without an envelope prefix."""
    return "malformed-" + hashlib.sha1(payload.encode("utf-8", "surrogatepass")).hexdigest()


def _envelope_head(payload: str) -> tuple[int, str]:
    """Attempts and id from the fixed envelope prefix; ValueError if it is not one."""
    match = _ENVELOPE_HEAD.match(payload)
    if match is None:
        raise ValueError(
            'payload is not a job envelope: it must start with {"attempts":N,"id":"..."} '
            f"(got {payload[:40]!r})"
        )
    return int(match.group(1)), match.group(2)


def script_source(path: Path, included: set[str] | None = None) -> str:
    """A script's text with each `-- @include NAME` line replaced by include/NAME.

    Includes may include others; each file is inlined once per script, at its
    first include line (later ones are dropped), so shared functions are
    defined once and before their users.
    """
    seen = set() if included is None else included
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines(keepends=True):
        if line.startswith(INCLUDE_DIRECTIVE):
            name = line[len(INCLUDE_DIRECTIVE) :].strip()
            if name not in seen:
                seen.add(name)
                lines.append(script_source(SCRIPTS_DIR / "include" / name, seen))
        else:
            lines.append(line)
    return "".join(lines)


def parse_version(text: str) -> tuple[int, ...]:
    """`"7.2.4"` -> `(7, 2, 4)`; the leading numeric parts of a server version."""
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def blpop_timeout(wait: float, server_version: tuple[int, ...]) -> float:
    """The BLPOP timeout to send for a wait of `wait` seconds.

    At least MIN_BLOCK_SLICE (0 would block forever). Redis before 6.0 only
    accepts whole seconds, so there the wait is rounded UP to an int (at least
    1): a blocked worker may then wait up to a second past its slice, but is
    never refused.
    """
    wait = max(wait, MIN_BLOCK_SLICE)
    if server_version < (FRACTIONAL_BLPOP_SINCE,):
        return max(math.ceil(wait), 1)
    return wait


def _load_scripts(client: redis.Redis) -> dict[str, Script]:
    return {
        path.stem: client.register_script(script_source(path))
        for path in sorted(SCRIPTS_DIR.glob("*.lua"))
    }


def _redis_call(method: Callable[_P, _R]) -> Callable[_P, _R]:
    """Run a method of an object with a `client` attribute under `redis_errors`."""

    @wraps(method)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with redis_errors(args[0].client):  # type: ignore[attr-defined]
            return method(*args, **kwargs)

    return wrapper


class RedisFailedStore(FailedStore):
    """Failed jobs as JSON records in `routemq:queue:failed:{name}` Lists, newest at the tail.

    A record is `{"id", "connection", "queue", "payload", "exception",
    "failed_at"}` in that order (the scripts read the id, the payload's job id
    and failed_at by position) with `failed_at` in unix seconds. Queue names
    with a failed list are kept in the set `routemq:queues:failed`. Lookups,
    flushes and removals run in windows of FAILED_SCAN_WINDOW records per
    script call (failed_find.lua, failed_flush.lua, failed_remove.lua), so no
    call holds Redis for long however many records there are.
    """

    kind = "redis"

    def __init__(self, client: redis.Redis, prefix: str = DEFAULT_PREFIX):
        self.client = client
        self.prefix = prefix
        self.names_key = f"{prefix.rstrip(':')}s:failed"
        #: Redis Cluster: list keys carry the queue name as hash tag, and the names set
        #: is kept by this client beside the scripts (see `names_key_for`).
        self.cluster = is_cluster(client)
        self._registered: set[str] = set()
        self._scripts = _load_scripts(client)

    def list_key(self, queue: str) -> str:
        """The failed List of one queue (not validated: old names must stay readable).

        `routemq:queue:failed:emails`; on a Redis Cluster `routemq:queue:failed:{emails}`,
        in the slot of the queue's other keys.
        """
        return f"{self.prefix}failed:{hash_tag(queue, self.cluster)}"

    def names_key_for(self, queue: str) -> str:
        """The names-set key a script of `queue` gets: the set itself, or on a cluster
        the queue's failed list again (a script must not leave the queue's slot; the
        scripts then leave the set alone and `register` keeps it)."""
        return self.list_key(queue) if self.cluster else self.names_key

    def register(self, queue: str) -> None:
        """On a cluster, add `queue` to the names set before its first record here.

        Once per queue and process; the set is never shrunk on a cluster (a name
        whose list is empty costs one LLEN), so it is always a superset.
        """
        if self.cluster and queue not in self._registered:
            self.client.sadd(self.names_key, queue)
            self._registered.add(queue)

    def where(self, queue: str) -> str:
        """Where this store keeps the failed jobs of `queue`."""
        return f"Redis list {self.list_key(queue)}"

    @staticmethod
    def record(
        connection: str,
        queue: str,
        payload: str,
        exception: str,
        failed_at: float | None = None,
    ) -> tuple[str, str]:
        """A new failed record: `(failed id, JSON text)`; `failed_at` defaults to now."""
        failed_id = str(uuid.uuid4())
        text = json.dumps(
            {
                "id": failed_id,
                "connection": connection,
                "queue": queue,
                "payload": payload,
                "exception": exception,
                "failed_at": time.time() if failed_at is None else failed_at,
            },
            separators=(",", ":"),
            ensure_ascii=False,
        )
        return failed_id, text

    @_redis_call
    def add(self, connection: str, queue: str, payload: str, exception: str) -> str:
        """Append one record atomically (MULTI/EXEC); return its id.

        Any queue name is accepted (not validated): a job of a queue created
        before names were validated must still be failable.
        """
        return self._append(self.record(connection, queue, payload, exception), queue)

    @_redis_call
    def restore(self, job: FailedJob) -> str:
        """Append a record moved from another store, keeping its connection and failed_at."""
        stamp = job.failed_at
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=UTC)
        record = self.record(
            job.connection, job.queue, job.payload, job.exception, stamp.timestamp()
        )
        return self._append(record, job.queue)

    def _append(self, record: tuple[str, str], queue: str) -> str:
        if self.cluster:
            self.register(queue)
            self.client.rpush(self.list_key(queue), record[1])
            return record[0]
        pipe = self.client.pipeline(transaction=True)
        pipe.rpush(self.list_key(queue), record[1])
        pipe.sadd(self.names_key, queue)
        pipe.execute()
        return record[0]

    def _names(self) -> list[str]:
        return sorted(_text(n) for n in self.client.smembers(self.names_key))

    def _parse(self, raw: Any, queue: str, index: int) -> FailedJob | None:
        """A record as a FailedJob (its `ref` says where it is), or None if it is not one."""
        data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else bytes(raw)
        try:
            decoded = decode_json(data, "failed record", MAX_FAILED_RECORD_BYTES)
            return FailedJob(
                id=str(decoded["id"]),
                connection=str(decoded["connection"]),
                queue=str(decoded["queue"]),
                payload=str(decoded["payload"]),
                exception=str(decoded["exception"]),
                failed_at=datetime.fromtimestamp(float(decoded["failed_at"]), UTC),
                ref=(queue, index, hashlib.sha1(data).hexdigest()),
            )
        except (EnvelopeError, KeyError, TypeError, ValueError, OverflowError, OSError):
            return None

    def _read(self, queue: str, start: int, stop: int) -> list[FailedJob]:
        """Records `start..stop` (LRANGE indexes, may be negative) of one list, oldest first."""
        pipe = self.client.pipeline(transaction=True)
        pipe.llen(self.list_key(queue))
        pipe.lrange(self.list_key(queue), start, stop)
        length, rows = pipe.execute()
        first = start if start >= 0 else max(int(length) + start, 0)
        parsed = (self._parse(raw, queue, first + i) for i, raw in enumerate(rows))
        return [job for job in parsed if job is not None]

    @_redis_call
    def all(self, queue: str | None = None, limit: int = 100) -> list[FailedJob]:
        """Newest first across every failed list (or one queue's), at most `limit`."""
        if limit <= 0:
            return []
        names = [queue] if queue is not None else self._names()
        jobs = [job for name in names for job in self._read(name, -limit, -1)]
        jobs.sort(key=lambda job: job.failed_at, reverse=True)
        return jobs[:limit]

    @_redis_call
    def oldest(self, queue: str, limit: int) -> list[FailedJob]:
        """The oldest `limit` records of one queue, oldest first."""
        return self._read(queue, 0, limit - 1) if limit > 0 else []

    @_redis_call
    def queues(self) -> list[str]:
        """Names of queues with a failed list."""
        return self._names()

    @_redis_call
    def get(self, failed_id: str) -> FailedJob | None:
        """One record by its failed id, or None (windowed scans: operator use)."""
        return self._find(failed_id, "")

    @_redis_call
    def find(self, key: str) -> FailedJob | None:
        """The record with failed id `key`, else the newest record of the job with id `key`."""
        return self._find(key, key)

    def _find(self, failed_id: str, job_id: str) -> FailedJob | None:
        if not failed_id and not job_id:
            return None
        hits: list[FailedJob] = []
        for name in self._names():
            offset = 0
            while True:
                found = self._scripts["failed_find"](
                    keys=[self.list_key(name)],
                    args=[offset, FAILED_SCAN_WINDOW, failed_id, job_id],
                )
                if int(found[0]) >= 0:
                    job = self._parse(found[1], name, int(found[0]))
                    if job is not None and job.id == failed_id:
                        return job
                    if job is not None:
                        hits.append(job)
                    break
                if int(found[0]) == -2:
                    break
                offset = int(found[1])
        return max(hits, key=lambda job: job.failed_at, default=None)

    @_redis_call
    def forget(self, failed_id: str) -> bool:
        """Delete one record by its failed id atomically; False if there was none."""
        for _ in range(FORGET_ATTEMPTS):
            job = self._find(failed_id, "")
            if job is None:
                return False
            if self.remove([job]):
                return True
        raise QueueError(f"failed record {failed_id} kept moving; try --queue-forget again")

    @_redis_call
    def remove(self, jobs: Sequence[FailedJob]) -> int:
        """Delete exactly these records (read by this store); skip any that moved or went."""
        by_queue: dict[str, list[tuple[int, str]]] = {}
        for job in jobs:
            if job.ref is not None:
                queue, index, digest = job.ref
                by_queue.setdefault(queue, []).append((index, digest))
        removed = 0
        tombstone = f"routemq:removed:{uuid.uuid4().hex}"
        for queue, entries in by_queue.items():
            # Highest indexes first: removing them never shifts the lower ones.
            entries.sort(reverse=True)
            for start in range(0, len(entries), FAILED_SCAN_WINDOW):
                pairs = [v for entry in entries[start : start + FAILED_SCAN_WINDOW] for v in entry]
                removed += int(
                    self._scripts["failed_remove"](
                        keys=[self.list_key(queue), self.names_key_for(queue)],
                        args=[tombstone, queue, *pairs],
                    )
                )
        return removed

    @_redis_call
    def flush(self, older_than_days: float | None = None) -> int:
        """Delete every record, or those older than `older_than_days`; return the count."""
        age = "" if older_than_days is None else repr(older_than_days * 86400.0)
        tombstone = f"routemq:flushed:{uuid.uuid4().hex}"
        deleted = 0
        for name in self._names():
            start = 0
            while start >= 0:
                count, start = self._scripts["failed_flush"](
                    keys=[self.list_key(name), self.names_key_for(name)],
                    args=[name, age, start, FAILED_SCAN_WINDOW, tombstone],
                )
                deleted += int(count)
                start = int(start)
        return deleted

    @_redis_call
    def counts(self) -> dict[str, int]:
        """Failed records per queue (queues with none are left out)."""
        names = self._names()
        pipe = self.client.pipeline(transaction=False)
        for name in names:
            pipe.llen(self.list_key(name))
        return {name: int(n) for name, n in zip(names, pipe.execute(), strict=True) if n}


def hash_tag(queue: str, cluster: bool) -> str:
    """The queue part of its keys: the name, or `{name}` on a Redis Cluster.

    The seed's template `routemq:queue:{name}` taken literally: the braces make
    the name the hash tag, so every key of one queue (and its failed list and
    receipts) lands in one slot and each script stays atomic on one node.
    """
    return f"{{{queue}}}" if cluster else queue


class _QueueKeys:
    """Every key of one queue, built once."""

    __slots__ = (
        "delayed",
        "ids",
        "leases",
        "notify",
        "pending",
        "reservations",
        "reserved",
        "transfer",
    )

    def __init__(self, prefix: str, queue: str, cluster: bool = False):
        queue = hash_tag(queue, cluster)
        self.pending = f"{prefix}{queue}"
        self.delayed = f"{prefix}{queue}:delayed"
        self.reserved = f"{prefix}{queue}:reserved"
        self.leases = f"{prefix}{queue}:leases"
        self.reservations = f"{prefix}{queue}:reservations"
        self.notify = f"{prefix}{queue}:notify"
        self.transfer = f"{prefix}{queue}:transfer"
        self.ids = f"{prefix}{queue}:ids"

    def all(self) -> list[str]:
        """The eight keys in the order pop.lua, release.lua and clear.lua expect."""
        return [
            self.pending,
            self.delayed,
            self.reserved,
            self.leases,
            self.reservations,
            self.notify,
            self.transfer,
            self.ids,
        ]

    def settle(self) -> list[str]:
        """The keys ack.lua (and fail.lua before its own) take."""
        return [self.reserved, self.leases, self.reservations, self.transfer, self.ids]

    def status(self, job_id: str) -> str:
        """The finished-job status key of `job_id` in this queue (include/job_status.lua)."""
        return f"{self.pending}:status:{job_id}"

    def once(self, job_id: str) -> str:
        """The dispatch mark of workflow step `job_id` in this queue (push_once.lua)."""
        return f"{self.pending}:once:{job_id}"


class RedisDriver(QueueDriver):
    """Queue driver on Redis Lists and Sorted Sets, one atomic Lua script per state change.

    FIFO per queue (push at the tail, pop from the head), leases timed by the
    server clock, and fenced ack/release/extend/fail: a reservation's token is
    the 32-hex-digit nonce of the pop call that made it (`transfer:<nonce>` for
    a migration), unique to it even when a job comes back byte-identical (a
    release that undid its attempt). A settle sends only the job id and that
    token, never the payload. Each ack/release/extend/fail call carries its own
    receipt, so the client's re-send of a call whose reply was lost reports the
    success of the first run instead of False. Adding a job whose id is already
    in its queue adds nothing (the id index), and a second copy of a reserved
    job met by a pop is handed out only to be failed (`duplicate_of`). Queue
    names are checked by `validate_queue_name` (ValueError naming it). Redis
    failures surface as `QueueError` naming host:port.
    """

    name = "redis"

    def __init__(
        self,
        client: redis.Redis,
        failed_store: FailedStore,
        retry_after: int = DEFAULT_RETRY_AFTER,
        prefix: str = DEFAULT_PREFIX,
        *,
        wait_replicas: int = 0,
        wait_timeout_ms: int = DEFAULT_WAIT_TIMEOUT_MS,
    ):
        super().__init__(failed_store, retry_after)
        self.client = client
        self.prefix = prefix
        #: Redis Cluster: keys carry hash tags, scripts run per queue, and the client
        #: keeps the known-queues set beside the scripts (`_known_key`).
        self.cluster = is_cluster(client)
        self._registered: set[str] = set()
        #: Replicas that must acknowledge each push/later/bulk (Redis WAIT); 0: no WAIT.
        self.wait_replicas = wait_replicas
        self.wait_timeout_ms = wait_timeout_ms
        self.queues_key = f"{prefix.rstrip(':')}s"
        self._keys: dict[str, _QueueKeys] = {}
        self._scripts = _load_scripts(client)
        self._server_version: tuple[int, ...] | None = None
        socket_timeout = socket_timeout_of(client)
        self._block_slice = MAX_BLOCK_SLICE
        if socket_timeout:
            limit = max(float(socket_timeout) - SOCKET_TIMEOUT_MARGIN, MIN_BLOCK_SLICE)
            self._block_slice = min(MAX_BLOCK_SLICE, limit)

    def keys(self, queue: str) -> _QueueKeys:
        """The keys of `queue` (cached); ValueError naming it if they are another queue's.

        Reads, settles and drains work for queues created before names were
        checked (`reports/daily`), but never for a name like `failed:x` or
        `x:reserved`, whose keys belong to another queue
        (`validate_queue_name(existing=True)`); the writes of new jobs apply the
        full rule themselves (`_new_job_keys`).
        """
        keys = self._keys.get(queue)
        if keys is None:
            keys = self._keys[queue] = _QueueKeys(
                self.prefix, validate_queue_name(queue, existing=True), self.cluster
            )
        return keys

    def _new_job_keys(self, queue: str) -> _QueueKeys:
        """The keys of `queue` for adding a job; ValueError naming it if the name is not valid.

        So no new job ever lands in keys that belong to another queue
        (`failed:emails` would be the failed list of `emails`, `x:delayed` the
        delayed set of `x`).
        """
        return self.keys(validate_queue_name(queue))

    def receipt_key(self, nonce: str, queue: str = "") -> str:
        """The receipt key of one pop call (see pop.lua).

        On a cluster it lies in the slot of `queue` (a pop runs per queue there):
        `routemq:queue:{emails}:pops:<nonce>`.
        """
        if self.cluster:
            return f"{self.keys(queue).pending}:pops:{nonce}"
        return f"{self.prefix}pops:{nonce}"

    def settle_key(self, nonce: str, queue: str = "") -> str:
        """The receipt key of one ack/release/extend/fail call (see include/reservation.lua).

        On a cluster it lies in the slot of `queue`, as `receipt_key`'s does.
        """
        if self.cluster:
            return f"{self.keys(queue).pending}:settles:{nonce}"
        return f"{self.prefix}settles:{nonce}"

    def _known_key(self, queue: str, first_key: str) -> str:
        """The known-queues key a script adding to `queue` gets: the set itself, or on a
        cluster its own first key again (see push.lua), the name being added here first."""
        if not self.cluster:
            return self.queues_key
        if queue not in self._registered:
            # Before the job is added, so the set is always a superset of the queues.
            self.client.sadd(self.queues_key, queue)
            self._registered.add(queue)
        return first_key

    def server_version(self) -> tuple[int, ...]:
        """The Redis server version, read once (INFO server) on first use.

        If INFO is refused (renamed on a managed server), (0,) is assumed: the
        driver then uses whole-second BLPOP timeouts, which every version accepts.
        """
        if self._server_version is None:
            try:
                info = self.client.info("server")
                self._server_version = parse_version(_text(info.get("redis_version", "0")))
            except redis.exceptions.ResponseError:
                self._server_version = (0,)
        return self._server_version

    # -- adding jobs -----------------------------------------------------------------

    @_redis_call
    def push(self, queue: str, payload: str) -> None:
        """Append at the tail of `queue`, available now; wakes one blocked worker.

        A job whose id is already in the queue is not added again (push.lua).
        """
        _, job_id = _envelope_head(payload)
        k = self._new_job_keys(queue)
        self._add_jobs(
            "push",
            [k.pending, k.notify, self._known_key(queue, k.pending), k.ids],
            [payload, queue, NOTIFY_CAP, job_id],
        )

    @_redis_call
    def later(self, queue: str, payload: str, delay: float) -> None:
        """Add to `:delayed` scored by server time + `delay` (capped at MAX_DELAY_SECONDS).

        `delay <= 0` pushes now; a non-finite delay is refused (ValueError).
        """
        delay = checked_delay(delay)
        if delay <= 0:
            self.push(queue, payload)
            return
        _, job_id = _envelope_head(payload)
        k = self._new_job_keys(queue)
        self._add_jobs(
            "later",
            [k.delayed, k.notify, self._known_key(queue, k.delayed), k.ids],
            [payload, repr(delay), queue, NOTIFY_CAP, job_id],
        )

    @_redis_call
    def bulk(self, jobs: Sequence[tuple[str, str, float]]) -> None:
        """Add all jobs in one atomic script, keeping their order per queue.

        On a Redis Cluster, one atomic script per queue (a script cannot span
        slots): the jobs of one queue are added all or none, in order.
        """
        if not jobs:
            return
        if self.cluster and len({queue for queue, _, _ in jobs}) > 1:
            by_queue: dict[str, list[tuple[str, str, float]]] = {}
            for job in jobs:
                by_queue.setdefault(job[0], []).append(job)
            for rows in by_queue.values():
                self.bulk(rows)
            return
        index: dict[str, int] = {}
        args: list[Any] = []
        for queue, payload, delay in jobs:
            _, job_id = _envelope_head(payload)
            position = index.setdefault(queue, len(index) + 1)
            args.extend((position, repr(checked_delay(delay)), job_id, payload))
        keys: list[str] = [self.queues_key]
        for queue in index:
            k = self._new_job_keys(queue)
            keys.extend((k.pending, k.delayed, k.notify, k.ids))
        keys[0] = self._known_key(jobs[0][0], keys[1])
        self._add_jobs("bulk", keys, [NOTIFY_CAP, len(index), *index, *args])

    def _add_jobs(self, script: str, keys: list[str], args: list[Any]) -> None:
        """Run an adding script; with `wait_replicas`, pipelined with `WAIT` in one round trip.

        Returns once `wait_replicas` replicas acknowledged the write, or raises
        `BackendUnavailableError` (an outage: the MQTT intake keeps the message
        and retries; the job id index makes the re-sent push add nothing) when
        fewer did within `wait_timeout_ms`. The job is then on the master only,
        and a failover before the replicas catch up would lose it.
        """
        code = self._scripts[script]
        if not self.wait_replicas:
            code(keys=keys, args=args)
            return
        if self.cluster:
            acked = self._run_and_wait_cluster(code, keys, args)
        else:
            acked = self._run_and_wait(code, keys, args)
        if acked < self.wait_replicas:
            raise BackendUnavailableError(
                f"Redis at {address(self.client)}: only {acked} of REDIS_WAIT_REPLICAS="
                f"{self.wait_replicas} replicas acknowledged the new job within "
                f"REDIS_WAIT_TIMEOUT_MS={self.wait_timeout_ms}; it is on the master only and a "
                "failover now could lose it: check the replicas (INFO replication)"
            )

    def _run_and_wait(self, code: Script, keys: list[str], args: list[Any]) -> int:
        """EVALSHA and WAIT in one pipeline (one round trip); the replicas that acknowledged."""
        for attempt in range(2):
            pipe = self.client.pipeline(transaction=False)
            # EVALSHA by hand: a pipelined Script checks SCRIPT EXISTS first (a round trip).
            pipe.evalsha(code.sha, len(keys), *keys, *args)
            pipe.wait(self.wait_replicas, self.wait_timeout_ms)
            try:
                _, acked = pipe.execute()
                return int(acked)
            except redis.exceptions.NoScriptError:
                if attempt:
                    raise
                self.client.script_load(code.script)  # a restarted or failed-over server
        raise AssertionError("unreachable")  # pragma: no cover

    def _run_and_wait_cluster(self, code: Script, keys: list[str], args: list[Any]) -> int:
        """The script, then WAIT on the master of its slot; the replicas that acknowledged.

        WAIT has no key, so a cluster pipeline cannot route it: it is a second call
        to the node that ran the script.
        """
        code(keys=keys, args=args)
        node = self.client.get_node_from_key(keys[0])  # type: ignore[attr-defined]
        reply = self.client.execute_command(  # type: ignore[no-untyped-call]
            "WAIT", self.wait_replicas, self.wait_timeout_ms, target_nodes=node
        )
        return int(sum(reply.values()) if isinstance(reply, dict) else reply)

    # -- reserving and settling ------------------------------------------------------

    @_redis_call
    def pop(self, queues: Sequence[str], block: float = 0.0) -> ReservedJob | None:
        """Reserve the oldest available job of the first non-empty queue (see pop.lua).

        With `block > 0` an empty pop waits on the queues' notify lists (BLPOP)
        for at most the time until the next delayed job or lease comes due, then
        runs the pop script again: a pushed job wakes the worker at once. The
        wait never runs past `block`: once it is used up without a wake-up, no
        further reservation is tried.
        """
        if not queues:
            raise ValueError("pop needs at least one queue name")
        notify = [self.keys(q).notify for q in queues]
        slice_cap = self._block_slice
        if self.cluster and len(notify) > 1:
            # The notify lists lie in different slots: block on the first, poll the rest.
            notify, slice_cap = notify[:1], min(slice_cap, CLUSTER_MULTI_QUEUE_SLICE)
        nonce = uuid.uuid4().hex
        deadline = time.monotonic() + block
        while True:
            job, next_due = self.reserve_once(queues, nonce)
            if job is not None:
                return job
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            wait = min(remaining, slice_cap)
            if next_due is not None:
                wait = min(wait, next_due)
            woken = self.client.blpop(notify, timeout=blpop_timeout(wait, self.server_version()))
            if woken is None and time.monotonic() >= deadline:
                return None

    @_redis_call
    def reserve_once(
        self, queues: Sequence[str], nonce: str
    ) -> tuple[ReservedJob | None, float | None]:
        """One run of pop.lua for the pop call `nonce`: `(job, None)` or `(None, next due)`.

        Idempotent per nonce: run again with the same nonce (as the client's
        retry after a lost reply does) while the reservation is live, it
        returns that same reservation instead of reserving a second job. The
        reservation's token is `nonce`, unique to it. `next due` is the seconds
        until the earliest delayed job or lease of these queues comes due (None
        if there is none). On a Redis Cluster the script runs once per queue, in
        priority order, each with its own receipt in that queue's slot.
        """
        if self.cluster and len(queues) > 1:
            soonest: float | None = None
            for one in queues:
                job, due = self.reserve_once([one], nonce)
                if job is not None:
                    return job, None
                if due is not None:
                    soonest = due if soonest is None else min(soonest, due)
            return None, soonest
        keys = [key for q in queues for key in self.keys(q).all()]
        keys.append(self.receipt_key(nonce, queues[0]))
        args: list[Any] = [self.retry_after, MIGRATE_BATCH, POP_RECEIPT_TTL, nonce, *queues]
        queue, value, *rest = self._scripts["pop"](keys=keys, args=args)
        queue = _text(queue)
        if not queue:
            next_due = _text(value)
            return None, float(next_due) if next_due else None
        payload = _text(value)
        # The script's id, never a re-parse: the fence is keyed by the id Lua read.
        job_id, kind, held = (_text(part) for part in rest)
        try:
            attempts, real_id = _envelope_head(payload)
        except ValueError:
            attempts, real_id = 1, malformed_id(payload)  # the worker fails it with the reason
        return ReservedJob(
            job_id,
            queue,
            payload,
            attempts,
            nonce,
            duplicate_of=real_id if kind == DUPLICATE_KIND else None,
            abandoned_after=float(held) if held else None,
        ), None

    @_redis_call
    def pop_many(self, queues: Sequence[str], count: int, block: float = 0.0) -> list[ReservedJob]:
        """Reserve up to `count` jobs in one run of pop_many.lua, each under its own lease.

        Each job's fencing token is its own nonce, so it is acked, released,
        extended or failed on its own, exactly like a job from `pop`. An empty
        pop waits on the notify lists like `pop`. One call is idempotent (its
        receipt): the client's re-send after a lost reply gets the same
        reservations back, never a second set.
        """
        if count <= 1:
            job = self.pop(queues, block)
            return [] if job is None else [job]
        if not queues:
            raise ValueError("pop needs at least one queue name")
        notify = [self.keys(q).notify for q in queues]
        slice_cap = self._block_slice
        if self.cluster and len(notify) > 1:
            # The notify lists lie in different slots: block on the first, poll the rest.
            notify, slice_cap = notify[:1], min(slice_cap, CLUSTER_MULTI_QUEUE_SLICE)
        tokens = [uuid.uuid4().hex for _ in range(count)]
        deadline = time.monotonic() + block
        while True:
            jobs, next_due = self._pop_many_once(queues, tokens)
            if jobs:
                return jobs
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            wait = min(remaining, slice_cap)
            if next_due is not None:
                wait = min(wait, next_due)
            woken = self.client.blpop(notify, timeout=blpop_timeout(wait, self.server_version()))
            if woken is None and time.monotonic() >= deadline:
                return []

    def _pop_many_once(
        self, queues: Sequence[str], tokens: Sequence[str]
    ) -> tuple[list[ReservedJob], float | None]:
        """One run of pop_many.lua (per queue on a cluster, in priority order, each with
        its own receipt in that queue's slot): `(jobs, None)` or `([], next due)`."""
        if self.cluster and len(queues) > 1:
            got: list[ReservedJob] = []
            soonest: float | None = None
            for one in queues:
                jobs, due = self._pop_many_once([one], tokens[len(got) :])
                got += jobs
                if len(got) == len(tokens):
                    break
                if due is not None:
                    soonest = due if soonest is None else min(soonest, due)
            return got, (None if got else soonest)
        keys = [key for q in queues for key in self.keys(q).all()]
        keys.append(self.receipt_key(tokens[0], queues[0]))
        args: list[Any] = [self.retry_after, MIGRATE_BATCH, POP_RECEIPT_TTL, len(tokens)]
        args += [*tokens, *queues]
        reply = self._scripts["pop_many"](keys=keys, args=args)
        if _text(reply[0]):
            return [_many_reserved(_text(entry), queues, tokens) for entry in reply], None
        next_due = _text(reply[1])
        return [], float(next_due) if next_due else None

    @_redis_call
    def ack_many(self, jobs: Sequence[ReservedJob]) -> list[bool]:
        """Ack the jobs with one run of ack_many.lua per queue; fenced per job.

        Each call carries its own settle receipt: a re-send after a lost reply
        returns the first run's verdicts and changes nothing.
        """
        return self._many(
            "ack_many",
            jobs,
            lambda k: k.settle(),
            [SETTLE_RECEIPT_TTL, self.status_retention],
            True,
            status_of=lambda job: self._final_status(job, "done"),
        )

    @_redis_call
    def extend_many(self, jobs: Sequence[ReservedJob]) -> list[bool]:
        """Renew every lease with one run of extend_many.lua per queue; fenced per job."""
        return self._many(
            "extend_many", jobs, lambda k: [k.leases, k.reservations], [self.retry_after], False
        )

    def _many(
        self,
        script: str,
        jobs: Sequence[ReservedJob],
        keys_of: Callable[[_QueueKeys], list[str]],
        head: list[Any],
        receipt: bool,
        status_of: Callable[[ReservedJob], tuple[str, str]] | None = None,
    ) -> list[bool]:
        """Run `script` once per queue over that queue's jobs (one hash slot per call).

        With `status_of` (ack_many.lua), each job's status key follows the receipt in
        KEYS and its status record follows its id and token in ARGV.
        """
        by_queue: dict[str, list[int]] = {}
        for index, job in enumerate(jobs):
            by_queue.setdefault(job.queue, []).append(index)
        verdicts = [False] * len(jobs)
        for queue, indexes in by_queue.items():
            keys = keys_of(self.keys(queue))
            if receipt:
                keys = [*keys, self.settle_key(uuid.uuid4().hex, queue)]
            if status_of is None:
                pairs = [v for i in indexes for v in (jobs[i].id, jobs[i].token)]
            else:
                statuses = [status_of(jobs[i]) for i in indexes]
                keys += [key for key, _ in statuses]
                pairs = [
                    v
                    for i, (_, record) in zip(indexes, statuses, strict=True)
                    for v in (jobs[i].id, jobs[i].token, record)
                ]
            result = _text(self._scripts[script](keys=keys, args=[*head, *pairs]))
            for i, verdict in zip(indexes, result, strict=True):
                verdicts[i] = verdict == "1"
        return verdicts

    def _settle(
        self,
        script: str,
        queue: str,
        keys: list[str],
        args: Sequence[Any],
        receipt: str | None,
        status: tuple[str, str] | None = None,
    ) -> bool:
        """Run one fenced settle script of `queue` with a settle receipt appended to its
        keys and args.

        `status` is `(status key, record)` for ack.lua and fail.lua: the job's
        final status, written by the same script (see include/job_status.lua).
        """
        nonce = uuid.uuid4().hex if receipt is None else receipt
        keys = [*keys, self.settle_key(nonce, queue)]
        args = [*args, SETTLE_RECEIPT_TTL]
        if status is not None:
            keys.append(status[0])
            args.extend((status[1], self.status_retention))
        return bool(self._scripts[script](keys=keys, args=args))

    def _final_status(
        self, job: ReservedJob, state: str, exception: str | None = None
    ) -> tuple[str, str]:
        """The status key and record (without finished_at) ack.lua / fail.lua write.

        Empty for a migration's reservation (the job moves on, it did not
        finish), for a duplicate copy (the running job's status is its own)
        and when JOB_STATUS_RETENTION is 0.
        """
        key = self.keys(job.queue).status(job.id)
        moved = job.token.startswith(TRANSFER_TOKEN_TAG) or job.duplicate_of is not None
        if moved or self.status_retention <= 0:
            return key, ""
        record = json.dumps(
            {
                "state": state,
                "queue": job.queue,
                "job": payload_job_name(job.payload),
                "attempts": job.attempts,
                "reason": None if exception is None else status_reason(exception),
            },
            separators=(",", ":"),
            ensure_ascii=False,
        )
        return key, record[:-1] + ',"finished_at":'

    @_redis_call
    def ack(self, job: ReservedJob, *, receipt: str | None = None) -> bool:
        """Delete a finished job; fenced (False and no change if the lease is not live).

        `receipt` is the call's settle nonce (a new one when None): the same
        call re-sent after it succeeded returns True and changes nothing, as
        the client's retry after a lost reply does.
        """
        k = self.keys(job.queue)
        status = self._final_status(job, "done")
        return self._settle("ack", job.queue, k.settle(), [job.id, job.token], receipt, status)

    @_redis_call
    def release(
        self,
        job: ReservedJob,
        delay: float = 0.0,
        *,
        undo_attempt: bool = False,
        receipt: str | None = None,
    ) -> bool:
        """Give the job back (pending, or delayed by `delay` s) in one fenced script.

        `delay` is capped at MAX_DELAY_SECONDS (a non-finite one is refused,
        ValueError). With `undo_attempt` its attempts count goes back down by
        one (never below 0), rewritten in the stored payload by release.lua; the
        next reservation still gets a new token. `receipt` as for `ack`: a
        re-sent release never gives the job back twice.
        """
        k = self.keys(job.queue)
        undo = "1" if undo_attempt else "0"
        args = [job.id, job.token, repr(checked_delay(delay)), NOTIFY_CAP, undo]
        return self._settle("release", job.queue, k.all(), args, receipt)

    @_redis_call
    def extend(self, job: ReservedJob, *, receipt: str | None = None) -> bool:
        """Renew the lease to `retry_after` s from now (server clock); fenced.

        `receipt` as for `ack`: a re-sent extend reports its first success.
        """
        k = self.keys(job.queue)
        args = [job.id, job.token, self.retry_after]
        return self._settle("extend", job.queue, [k.leases, k.reservations], args, receipt)

    @_redis_call
    def fail(self, job: ReservedJob, exception: str, *, receipt: str | None = None) -> bool:
        """Move the job to the failed store with `exception`; fenced. `receipt` as for `ack`.

        With this client's own `RedisFailedStore`, removal and the failed
        record happen in one script. With any other store (the database one,
        seed "Monitor Both") the record is added FIRST, then the reservation is
        removed by the fenced ack script (with the receipt, so a re-send of it
        after a lost reply reports success and the record is kept); if that is
        refused (the lease was lost) the record is forgotten again and False
        returned. A crash between the two steps leaves the job both failed and
        reserved: its lease expires, a worker sees attempts > max_tries and
        fails it again (a duplicate failed record), but the job is never lost.
        Removing first would lose the job on such a crash.
        """
        store = self.failed_store
        k = self.keys(job.queue)
        status = self._final_status(job, "failed", exception)
        if isinstance(store, RedisFailedStore) and store.client is self.client:
            _, record = store.record(self.name, job.queue, job.payload, exception)
            store.register(job.queue)
            keys = [*k.settle(), store.list_key(job.queue), store.names_key_for(job.queue)]
            args = [job.id, job.token, record, job.queue]
            return self._settle("fail", job.queue, keys, args, receipt, status)
        failed_id = store.add(self.name, job.queue, job.payload, exception)
        removed = self._settle("ack", job.queue, k.settle(), [job.id, job.token], receipt, status)
        if not removed:
            store.forget(failed_id)
            return False
        return True

    # -- inspection and operator tools -----------------------------------------------

    @_redis_call
    def sizes(self, queue: str) -> QueueSizes:
        """Live counts: LLEN pending, ZCARD delayed, LLEN reserved, failed-store count.

        The oldest job's age comes from its `created_at`; a head entry that is
        not a readable envelope (too large, too deep, garbage) gives no age.
        """
        k = self.keys(queue)
        pipe = self.client.pipeline(transaction=True)
        pipe.llen(k.pending)
        pipe.zcard(k.delayed)
        pipe.llen(k.reserved)
        pipe.lindex(k.pending, 0)
        pending, delayed, reserved, head = pipe.execute()
        failed = self.failed_store.counts().get(queue, 0)
        return QueueSizes(int(pending), int(delayed), int(reserved), failed, _age(head))

    @_redis_call
    def queues(self) -> list[str]:
        """Known queue names that still hold a pending, delayed or reserved job.

        A name in `routemq:queues` whose keys would be another queue's (written
        by hand) is left out: it cannot be read truthfully.
        """
        names = [
            name
            for name in sorted(_text(n) for n in self.client.smembers(self.queues_key))
            if colliding_queue_name(name) is None
        ]
        pipe = self.client.pipeline(transaction=False)
        for name in names:
            k = self.keys(name)
            pipe.llen(k.pending)
            pipe.zcard(k.delayed)
            pipe.llen(k.reserved)
        counts = pipe.execute()
        return [name for i, name in enumerate(names) if any(counts[3 * i : 3 * i + 3])]

    @_redis_call
    def take_for_transfer(self, queue: str, limit: int) -> list[ReservedJob]:
        """Lease up to `limit` pending then delayed jobs without counting an attempt.

        Each job is reserved under a token new to this call (see
        take_for_transfer.lua), so the worker or migration whose expired lease
        was requeued by this call is fenced out. A stored payload that is not
        a job envelope is moved to the failed store here (EnvelopeError, like a
        worker would) and not returned, so it neither blocks the migration nor
        reaches the target. An entry whose job id is already reserved (a
        duplicate copy) is skipped and stays pending; the scan goes on past it
        (up to TRANSFER_MAX_SKIP of them). An empty list means nothing could be
        taken.
        """
        if limit <= 0:
            return []
        k = self.keys(queue)
        token = f"{TRANSFER_TOKEN_TAG}{uuid.uuid4().hex}"
        flat = self._scripts["take_for_transfer"](
            keys=[k.pending, k.delayed, k.reserved, k.leases, k.reservations, k.transfer, k.ids],
            args=[limit, self.retry_after, token, TRANSFER_MAX_SKIP],
        )
        jobs: list[ReservedJob] = []
        for i in range(0, len(flat), 3):
            payload, due, job_id = _text(flat[i]), float(_text(flat[i + 1])), _text(flat[i + 2])
            try:
                attempts, _ = _envelope_head(payload)
            except ValueError as exc:
                malformed = ReservedJob(job_id, queue, payload, 0, token, due)
                self.fail(
                    malformed,
                    f"EnvelopeError: {exc} (found by a queue migration of {queue!r})"
                    f"\n\npayload: {payload[:2000]}",
                )
                continue
            jobs.append(ReservedJob(job_id, queue, payload, attempts, token, due))
        return jobs

    @_redis_call
    def contains(self, queue: str, job_id: str) -> bool:
        """True if a job with this id is pending, delayed or reserved: O(1), the id index.

        An entry written by hand is seen once a pop or migration reserved it
        (see include/id_index.lua).
        """
        k = self.keys(queue)
        return bool(self._scripts["contains"](keys=[k.ids, k.reservations], args=[job_id]))

    @_redis_call
    def dispatch_once(self, queue: str, payload: str, delay: float = 0.0) -> bool:
        """Add a job unless its id was dispatched once before (push_once.lua): one script.

        The mark lives JOB_STATUS_RETENTION seconds in the queue's own keys.
        """
        _, job_id = _envelope_head(payload)
        k = self._new_job_keys(queue)
        added = self._scripts["push_once"](
            keys=[
                k.pending,
                k.delayed,
                k.notify,
                self._known_key(queue, k.pending),
                k.ids,
                k.once(job_id),
            ],
            args=[
                payload,
                queue,
                NOTIFY_CAP,
                job_id,
                repr(checked_delay(delay)),
                self.workflow_retention,
            ],
        )
        return bool(added)

    @_redis_call
    def job_status(self, job_id: str) -> JobStatus | None:
        """The job's status, looked up in every known queue in one pipelined round trip.

        Per queue: the id index (queued or running, and since when), the
        reservation (attempts of the running attempt) and the finished-job
        record. A job in a queue now wins over an older record (a failed job
        retried by an operator is queued again).
        """
        names = [
            name
            for name in sorted(_text(n) for n in self.client.smembers(self.queues_key))
            if colliding_queue_name(name) is None
        ]
        pipe = self.client.pipeline(transaction=False)
        for name in names:
            k = self.keys(name)
            pipe.hget(k.ids, job_id)
            pipe.hget(k.reservations, job_id)
            pipe.get(k.status(job_id))
        replies = pipe.execute()
        finished: list[JobStatus] = []
        for i, name in enumerate(names):
            state, reservation, record = replies[3 * i : 3 * i + 3]
            if state is not None:
                return self._live_status(job_id, name, _text(state), reservation)
            if record is not None:
                parsed = _status_record(job_id, self.name, _text(record))
                if parsed is not None:
                    finished.append(parsed)
        return max(finished, key=lambda s: s.finished_at or 0.0, default=None)

    def _live_status(self, job_id: str, queue: str, state: str, reservation: Any) -> JobStatus:
        """A queued or running job's status from its id index entry and reservation."""
        if not state.startswith("r:") or reservation is None:
            return JobStatus(job_id, "queued", queue, self.name)
        payload = _text(reservation).partition(":")[2]
        try:
            attempts: int | None = _envelope_head(payload)[0]
        except ValueError:
            attempts = None
        return JobStatus(
            job_id,
            "running",
            queue,
            self.name,
            job=payload_job_name(payload),
            attempts=attempts,
            started_at=float(state[2:]),
        )

    @_redis_call
    def clear(self, queue: str) -> int:
        """Delete all pending, delayed and reserved jobs of `queue` atomically.

        Any name of a queue that exists may be cleared, except one whose keys
        would be another queue's (`failed`, or with ':'): ValueError naming it,
        nothing deleted (`failed:emails` would delete the failed list of `emails`).
        """
        return int(self._scripts["clear"](keys=self.keys(queue).all()))

    def close(self) -> None:
        """Close the client's pooled connections."""
        try:
            self.client.close()
        except redis.exceptions.RedisError as exc:  # pragma: no cover - best effort
            raise QueueError(f"closing Redis failed: {exc}") from exc


def _status_record(job_id: str, connection: str, text: str) -> JobStatus | None:
    """A finished job's status from its record (include/job_status.lua), None if unreadable."""
    try:
        data = json.loads(text)
        attempts = data.get("attempts")
        return JobStatus(
            job_id,
            str(data["state"]),
            str(data["queue"]),
            connection,
            job=data.get("job"),
            attempts=int(attempts) if attempts is not None else None,
            finished_at=float(data["finished_at"]),
            reason=data.get("reason"),
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def _many_reserved(entry: str, queues: Sequence[str], tokens: Sequence[str]) -> ReservedJob:
    """One job of a pop_many.lua reply (the id is the script's, never a re-parse)."""
    queue_index, token_index, kind, held, job_id, payload = entry.split("\n", 5)
    try:
        attempts, real_id = _envelope_head(payload)
    except ValueError:
        attempts, real_id = 1, malformed_id(payload)  # the worker fails it with the reason
    return ReservedJob(
        job_id,
        queues[int(queue_index) - 1],
        payload,
        attempts,
        tokens[int(token_index) - 1],
        duplicate_of=real_id if kind == DUPLICATE_KIND else None,
        abandoned_after=float(held) if held else None,
    )


def _age(head: Any) -> float | None:
    """Seconds since the envelope `head` was created, or None if it is not one."""
    if head is None:
        return None
    try:
        created = decode_json(_text(head)).get("created_at")
        return max(time.time() - float(created), 0.0)
    except (EnvelopeError, AttributeError, TypeError, ValueError):
        return None


#: The scripts of redis_scripts/ registered on `client`, by file stem (for the
#: stores beside the driver that keep their own keys, such as queues/batches.py).
load_scripts = _load_scripts
