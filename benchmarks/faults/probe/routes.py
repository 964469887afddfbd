"""The probe routes: `faults/direct/{n}` (a plain subscription, the default) and
`faults/shared/{n}` (a `$share` subscription, for `--run --workers N`) dispatch
`ProbeJob(n)`; the payload may give the job's delay in ms."""

from __future__ import annotations

from benchmarks.faults.probe.jobs import ProbeJob
from core.message import Message
from core.router import Router
from queues import dispatch

#: Topic prefixes the harness publishes to; the number is the last level.
DIRECT_TOPIC = "faults/direct"
SHARED_TOPIC = "faults/shared"

router = Router()


@router.on(DIRECT_TOPIC + "/{n}", qos=1)
def direct(message: Message) -> None:
    """Queue one probe job numbered by the topic."""
    _dispatch(message)


@router.on(SHARED_TOPIC + "/{n}", qos=1, shared=True)
def shared(message: Message) -> None:
    """Queue one probe job numbered by the topic (shared among the app's processes)."""
    _dispatch(message)


def _dispatch(message: Message) -> None:
    text = message.text().strip()
    dispatch(ProbeJob(n=int(message.params["n"]), ms=float(text) if text else 0.0))
