"""The probe routes: `faults/direct/{n}` (a plain subscription, the default) and
`faults/shared/{n}` (a `$share` subscription, for `--run --workers N`) dispatch
`ProbeJob(n)`; the payload may give the job's delay in ms."""

from __future__ import annotations

from pydantic import BaseModel

from benchmarks.faults.probe.jobs import ProbeJob
from core.message import Message
from core.router import Router
from queues import dispatch

#: Topic prefixes the harness publishes to; the number is the last level.
DIRECT_TOPIC = "faults/direct"
SHARED_TOPIC = "faults/shared"
JSON_TOPIC = "faults/json"

router = Router()


@router.on(DIRECT_TOPIC + "/{n}", qos=1)
def direct(message: Message) -> None:
    """Queue one probe job numbered by the topic."""
    _dispatch(message)


@router.on(SHARED_TOPIC + "/{n}", qos=1, shared=True)
def shared(message: Message) -> None:
    """Queue one probe job numbered by the topic (shared among the app's processes)."""
    _dispatch(message)


class ProbeBody(BaseModel):
    """The JSON body of `faults/json/{n}`."""

    ms: float = 0.0


@router.on(JSON_TOPIC + "/{n}", qos=1)
def typed(message: Message, body: ProbeBody) -> None:
    """Queue one probe job from a JSON body (non-JSON is a `PayloadError`: a dead letter)."""
    dispatch(ProbeJob(n=int(message.params["n"]), ms=body.ms))


def _dispatch(message: Message) -> None:
    text = message.text().strip()
    dispatch(ProbeJob(n=int(message.params["n"]), ms=float(text) if text else 0.0))
