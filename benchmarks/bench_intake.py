"""Intake into a durable queue, end to end, as a user runs it.

Every figure is a separate-process run on a private mosquitto: `PUBLISHERS`
`mosquitto_pub -l` processes (C, one device topic each) publish QoS 1 messages
as fast as they can; a receiver process takes them; the run ends when the
receiver has stored (or, for the raw baseline, received) them all. Rate =
messages / (that moment - publishers' start).

- ours: `main.py --run` with `benchmarks/intake_app.py`, whose route dispatches
  one job per message (durable before the PUBACK), on redis / mariadb / sqlite;
- raw paho: a paho subscriber doing no work (the ceiling for any intake);
- naive SQL: a paho subscriber doing one INSERT + COMMIT per message.

Targets (issue 8): redis >= 0.6 x raw paho; mariadb >= 10 x naive SQL; sqlite
>= 5 x naive SQL. Plus the pickup latency publish -> job `handle()` with an idle
worker on redis (p50 < 5 ms, p99 < 25 ms), reported as a line of its own.
"""

from __future__ import annotations

import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from benchmarks.common import BenchResult
from core.broker import MosquittoBroker, free_port

ROOT = Path(__file__).resolve().parent.parent
#: mosquitto_pub processes publishing at once, each on its own device topic.
PUBLISHERS = 16
#: Messages per run, per backend (enough for several seconds of steady state).
MESSAGES = {"redis": 20_000, "mariadb": 8_000, "sqlite": 12_000, "raw": 20_000}
#: Messages of a naive INSERT + COMMIT baseline run (it is the slow one).
NAIVE_MESSAGES = 2_000
#: The broker's and the app's in-flight window (QoS 1 messages unacknowledged at once).
INFLIGHT = 100
#: Redis database the benchmark flushes and uses.
REDIS_DB = 15
#: MariaDB database of the benchmark (created when missing, tables dropped each run).
MARIADB_DATABASE = "bench_intake"
MARIADB_SERVER = ("127.0.0.1", 3306)
#: Seconds a receiver may take to get ready, and a run to finish.
READY_TIMEOUT, RUN_TIMEOUT = 20.0, 300.0
#: Messages and spacing (s) of the pickup-latency run.
LATENCY_MESSAGES, LATENCY_SPACING = 200, 0.02


def _port_open(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
        return True
    except OSError:
        return False


@contextmanager
def _broker() -> Iterator[MosquittoBroker]:
    binary = shutil.which("mosquitto")
    if binary is None:
        raise ConnectionError("mosquitto is not on PATH")
    folder = Path(tempfile.mkdtemp(prefix="bench-intake-"))
    broker = MosquittoBroker(binary, free_port(), folder, INFLIGHT)
    try:
        yield broker
    finally:
        broker.stop()
        shutil.rmtree(folder, ignore_errors=True)


def _publish(broker: MosquittoBroker, count: int) -> list[subprocess.Popen[bytes]]:
    """Start PUBLISHERS mosquitto_pub processes sharing `count` messages."""
    binary = shutil.which("mosquitto_pub")
    if binary is None:
        raise ConnectionError("mosquitto_pub is not on PATH")
    processes = []
    for index in range(PUBLISHERS):
        share = count // PUBLISHERS + (1 if index < count % PUBLISHERS else 0)
        process = subprocess.Popen(
            [binary, "-h", broker.host, "-p", str(broker.port), "-q", "1", "-l", "-M", "1000",
             "-t", f"bench/dev{index}/telemetry"],
            stdin=subprocess.PIPE,
        )  # fmt: skip
        assert process.stdin is not None
        process.stdin.write(b'{"t":0}\n' * share)
        process.stdin.close()
        processes.append(process)
    return processes


def _wait_for_line(stream: IO[str], prefix: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = stream.readline()
        if line.startswith(prefix):
            return line
        if not line:
            raise RuntimeError(f"the receiver ended before printing {prefix!r}")
    raise TimeoutError(f"no {prefix!r} line within {timeout} s")


def _baseline(kind: str, broker: MosquittoBroker, count: int, url: str = "") -> float:
    """Messages per second of a baseline receiver process (raw paho, or naive SQL)."""
    args = ["raw"] if kind == "raw" else ["sql", url]
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.intake_baselines", *args,
         broker.host, str(broker.port), str(count)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        _wait_for_line(process.stdout, "ready", READY_TIMEOUT)
        start = time.time()
        publishers = _publish(broker, count)
        end = float(_wait_for_line(process.stdout, "done", RUN_TIMEOUT).split()[1])
        for publisher in publishers:
            publisher.wait(RUN_TIMEOUT)
        return count / (end - start)
    finally:
        process.kill()
        process.wait()


def _app_env(broker: MosquittoBroker, backend: str, folder: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MQTT_", "REDIS_", "DB_"))}
    env.update(
        MQTT_HOST=broker.host,
        MQTT_PORT=str(broker.port),
        MQTT_PERSISTENT_SESSION="false",
        MQTT_MAX_INFLIGHT=str(INFLIGHT),
        ROUTES_PACKAGE="benchmarks.intake_app",
        JOBS_PACKAGE="benchmarks.intake_app",
        LOG_LEVEL="INFO",
        ENABLE_REDIS="true",
        REDIS_DB=str(REDIS_DB),
        SQLITE_PATH=str(folder / "queue.db"),
        ENABLE_MYSQL="false",
    )
    if backend == "redis":
        env["QUEUE_CONNECTION"] = "redis"
    else:
        env["QUEUE_CONNECTION"] = "database"
        if backend == "mariadb":
            env["DB_URL"] = _mariadb_url()
    return env


def _mariadb_url() -> str:
    host, port = MARIADB_SERVER
    return f"mysql+pymysql://root@{host}:{port}/{MARIADB_DATABASE}"


def _reset_backend(backend: str, folder: Path) -> Callable[[], int]:
    """Empty the backend's queue; return a function counting the jobs queued."""
    if backend == "redis":
        import redis

        client = redis.Redis(db=REDIS_DB)
        client.flushdb()
        return lambda: int(client.llen("routemq:queue:bench"))
    from sqlalchemy import text

    from backends.sql_engine import engine_from_url
    from backends.sql_tables import create_tables, drop_tables

    url = _mariadb_url() if backend == "mariadb" else f"sqlite:///{folder / 'queue.db'}"
    engine = engine_from_url(url, create_sqlite_tables=False)
    drop_tables(engine)
    create_tables(engine)

    def count() -> int:
        with engine.connect() as connection:
            return int(connection.execute(text("SELECT COUNT(*) FROM queue_jobs")).scalar_one())

    return count


@contextmanager
def _process(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, str(ROOT / "main.py"), *args],
            env=env, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            yield process
        finally:
            process.terminate()
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_log(log: Path, needle: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if needle in log.read_text(errors="replace"):
            return
        if process.poll() is not None:
            break
        time.sleep(0.02)
    raise RuntimeError(f"{needle!r} never appeared in {log}: {log.read_text()[-2000:]}")


def _ours(backend: str, broker: MosquittoBroker, count: int) -> float:
    """Messages per second through `main.py --run` into the backend's queue."""
    folder = Path(tempfile.mkdtemp(prefix=f"bench-{backend}-"))
    try:
        queued = _reset_backend(backend, folder)
        log = folder / "app.log"
        with _process(["--run"], _app_env(broker, backend, folder), log) as app:
            _wait_log(log, "subscribed to", app)
            start = time.time()
            publishers = _publish(broker, count)
            deadline = time.monotonic() + RUN_TIMEOUT
            while queued() < count:
                if time.monotonic() > deadline or app.poll() is not None:
                    raise RuntimeError(f"{backend}: {queued()} of {count} queued; see {log}")
                time.sleep(0.005)
            end = time.time()
            for publisher in publishers:
                publisher.wait(RUN_TIMEOUT)
        return count / (end - start)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _pickup_latency(broker: MosquittoBroker) -> tuple[float, float]:
    """p50 and p99 (ms) from publish to the job's `handle()` with an idle Redis worker."""
    folder = Path(tempfile.mkdtemp(prefix="bench-latency-"))
    try:
        _reset_backend("redis", folder)
        env = _app_env(broker, "redis", folder)
        latency_file = folder / "latency.txt"
        env["BENCH_LATENCY_FILE"] = str(latency_file)
        with (
            _process(["--run"], env, folder / "app.log") as app,
            _process(["--queue-work", "--queue", "bench"], env, folder / "worker.log") as worker,
        ):
            _wait_log(folder / "app.log", "subscribed to", app)
            _wait_log(folder / "worker.log", "started", worker)
            client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"lat-{uuid.uuid4()}")
            client.connect(broker.host, broker.port)
            client.loop_start()
            for i in range(LATENCY_MESSAGES):
                payload = f'{{"t": {time.time():.6f}}}'
                client.publish(f"bench/dev{i % 10}/telemetry", payload, qos=1)
                time.sleep(LATENCY_SPACING)
            deadline = time.monotonic() + 30
            while _lines(latency_file) < LATENCY_MESSAGES and time.monotonic() < deadline:
                time.sleep(0.05)
            client.disconnect()
            client.loop_stop()
        samples = sorted(
            (float(started) - float(published)) * 1000
            for published, started in (
                line.split() for line in latency_file.read_text().split("\n") if line
            )
        )
        return statistics.median(samples), samples[max(int(len(samples) * 0.99) - 1, 0)]
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _lines(path: Path) -> int:
    return path.read_text().count("\n") if path.exists() else 0


def _ensure_mariadb() -> bool:
    if not _port_open(*MARIADB_SERVER):
        return False
    import pymysql

    connection = pymysql.connect(host=MARIADB_SERVER[0], port=MARIADB_SERVER[1], user="root")
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE IF NOT EXISTS {MARIADB_DATABASE}")
        cursor.execute(f"DROP TABLE IF EXISTS {MARIADB_DATABASE}.bench_raw")
    connection.close()
    return True


def run() -> list[BenchResult]:
    """The intake rows of `make bench` (see the module docstring)."""
    if not _port_open("127.0.0.1", 6379):
        raise ConnectionError("Redis is not reachable on 127.0.0.1:6379")
    results: list[BenchResult] = []
    with _broker() as broker:
        raw = _baseline("raw", broker, MESSAGES["raw"])
        ours = _ours("redis", broker, MESSAGES["redis"])
        results.append(BenchResult("intake -> redis queue (QoS 1)", ours, "raw paho receive", raw))
        backends: list[tuple[str, str]] = []
        if _ensure_mariadb():
            backends.append(("mariadb", _mariadb_url()))
        sqlite_folder = Path(tempfile.mkdtemp(prefix="bench-naive-"))
        backends.append(("sqlite", f"sqlite:///{sqlite_folder / 'naive.db'}"))
        for backend, url in backends:
            naive = _baseline("sql", broker, NAIVE_MESSAGES, url)
            ours = _ours(backend, broker, MESSAGES[backend])
            results.append(
                BenchResult(
                    f"intake -> {backend} queue (QoS 1)",
                    ours,
                    f"paho + INSERT/COMMIT each ({backend})",
                    naive,
                )
            )
        shutil.rmtree(sqlite_folder, ignore_errors=True)
        p50, p99 = _pickup_latency(broker)
        print(f"   pickup latency publish -> handle(), idle redis worker: "
              f"p50 {p50:.1f} ms, p99 {p99:.1f} ms", flush=True)  # fmt: skip
    return results


def main() -> int:
    """Run this benchmark alone: `python -m benchmarks.bench_intake`."""
    for result in run():
        print("   " + result.line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
