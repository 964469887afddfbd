"""`RebootDevice`: a delayed job that publishes a reboot command to a device."""

from __future__ import annotations

import logging

from core.topics import build_topic
from queues import Job

logger = logging.getLogger(__name__)

#: Where a device receives its reboot command. No route of the app matches it (the
#: request arrives on `devices/{device_id}/commands/reboot`), so the command never
#: comes back to the app as a new request.
COMMAND_TOPIC = "devices/{device_id}/control/reboot"


class RebootDevice(Job):
    """Publishes `{"command": "reboot", ...}` (QoS 1) to the device's control topic.

    Dispatched with a delay by the `devices/{id}/commands/reboot` route. The
    attempt succeeds once the broker acknowledged the command; a broker that is
    down or silent fails it, and it is retried with backoff.
    """

    queue = "default"
    delay = 10
    max_tries = 5
    backoff = [1, 5, 30, 60]

    def handle(self) -> None:
        """Send the reboot command; raises if the broker does not acknowledge it."""
        device_id = self.data["device_id"]
        requested_by = self.data.get("requested_by", "unknown")
        self.publish(
            build_topic(COMMAND_TOPIC, device_id=device_id),
            {"command": "reboot", "requested_by": requested_by, "job_id": self.job_id},
            qos=1,
        )
        logger.info("reboot command sent to device %s (requested by %s)", device_id, requested_by)
