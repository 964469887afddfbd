"""The probe route: `faults/probe/{n}` dispatches `ProbeJob(n)` (payload: job delay in ms)."""

from __future__ import annotations

from benchmarks.faults.probe.jobs import ProbeJob
from core.message import Message
from core.router import Router
from queues import dispatch

#: Topic prefix the harness publishes to; the number is the last level.
PROBE_TOPIC = "faults/probe"

router = Router()


@router.on(PROBE_TOPIC + "/{n}", qos=1, shared=True)
def probe(message: Message) -> None:
    """Queue one probe job numbered by the topic; the payload may give its delay in ms."""
    text = message.text().strip()
    dispatch(ProbeJob(n=int(message.params["n"]), ms=float(text) if text else 0.0))
