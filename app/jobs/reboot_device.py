"""`RebootDevice`: a delayed job that publishes a reboot command to a device."""

from __future__ import annotations

import logging

from queues import Job

logger = logging.getLogger(__name__)


class RebootDevice(Job):
    """Logs the reboot; dispatched with a delay by the `devices/{id}/commands/reboot` route."""

    queue = "default"
    delay = 10

    def handle(self) -> None:
        """Carry out the reboot (here: log it)."""
        logger.info(
            "rebooting device %s (requested by %s)",
            self.data["device_id"],
            self.data.get("requested_by", "unknown"),
        )
