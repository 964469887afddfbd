"""Example routes: device telemetry, commands and alerts become background jobs.

Every route also runs the middleware of `routes/__init__.py` (request logging).
"""

from __future__ import annotations

import time

from app.jobs.notify_webhook import NotifyWebhook
from app.jobs.reboot_device import RebootDevice
from app.jobs.store_reading import StoreReading
from app.payloads import Reading
from core.message import Message
from core.router import Router
from queues import dispatch

router = Router()


@router.on("devices/{device_id}/telemetry", qos=1, shared=True)
def telemetry(message: Message, body: Reading) -> None:
    """Queue the reading for storage; its `id` makes a redelivered message store once.

    The id is the device's own: it is unique per device (the topic's `device_id`,
    which the broker's ACL ties to the device's login), never across devices.
    """
    device_id = message.params["device_id"]
    if body.id is None:
        body = body.model_copy(update={"id": f"{device_id}-{time.time_ns()}"})
    dispatch(StoreReading(device_id=device_id, reading=body))


@router.on("devices/{device_id}/commands/reboot", qos=1)
def reboot(message: Message) -> None:
    """Schedule a reboot after the requested delay (default 10 s)."""
    body = message.json() if message.payload else {}
    delay = float(body.get("delay", RebootDevice.delay))
    dispatch(
        RebootDevice(device_id=message.params["device_id"], requested_by=body.get("by", "mqtt")),
        delay=delay,
    )


@router.on("devices/{device_id}/alerts", qos=1)
def alert(message: Message) -> None:
    """Forward an alert to the (unreliable) webhook, with retries."""
    dispatch(NotifyWebhook(device_id=message.params["device_id"], text=message.text()))
