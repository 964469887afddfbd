"""Device routes: a global middleware, a group, a shared route."""

from app.middleware.json_validation import JsonValidation
from app.middleware.request_logging import RequestLogging
from core.message import Message
from core.router import Router

router = Router()
router.use(RequestLogging())
received: list[tuple[str, dict[str, str]]] = []


@router.on("devices/{device_id}/telemetry", qos=1, shared=True)
def telemetry(message: Message) -> None:
    received.append(("telemetry", dict(message.params)))


with router.group(prefix="devices/{device_id}", middleware=[JsonValidation(required=["cmd"])]) as g:

    @g.on("commands", qos=2)
    def command(message: Message) -> None:
        received.append(("command", dict(message.params)))
