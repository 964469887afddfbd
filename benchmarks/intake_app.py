"""The app `bench_intake` runs as a user would (`main.py --run`, `main.py --queue-work`).

ROUTES_PACKAGE and JOBS_PACKAGE both name this module: one route that turns each
QoS 1 telemetry message into one queued job, and that job. With
BENCH_LATENCY_FILE set, the job appends `published_at started_at` (unix seconds)
to it, for the pickup-latency figure.
"""

from __future__ import annotations

import os
import time

from core.message import Message
from core.router import Router
from queues import Job, dispatch

router = Router()

#: Queue of the benchmark's jobs.
BENCH_QUEUE = "bench"


class BenchReading(Job):
    """One telemetry reading; records its pickup latency when asked to."""

    queue = BENCH_QUEUE

    def handle(self) -> None:
        """Append `published_at started_at` to BENCH_LATENCY_FILE, if set."""
        started = time.time()
        path = os.environ.get("BENCH_LATENCY_FILE")
        if path:
            with open(path, "a", encoding="ascii") as out:
                out.write(f"{self.t} {started}\n")


@router.on("bench/{device}/telemetry", qos=1)
def telemetry(message: Message) -> None:
    """Queue the reading: one durable job per message."""
    dispatch(BenchReading(device=message.params["device"], t=message.json()["t"]))
