"""`NotifyWebhook`: a job that fails on its first attempts and succeeds on a retry.

It stands for a call to an unreliable HTTP endpoint and shows retries with
backoff: attempts before `succeed_on_attempt` raise, the last one fails for good
and lands in the failed store (`python main.py --queue-failed`).
"""

from __future__ import annotations

import logging

from queues import Job

logger = logging.getLogger(__name__)


class WebhookUnavailable(RuntimeError):
    """The (simulated) webhook endpoint refused the call."""


class NotifyWebhook(Job):
    """Deliver an alert; raises until attempt `succeed_on_attempt`."""

    queue = "default"
    max_tries = 3
    backoff = [1, 5]

    device_id: str
    text: str
    succeed_on_attempt: int = 2  #: the attempt the webhook answers (a default: optional)

    def handle(self) -> None:
        """Fail until the configured attempt, then deliver."""
        if self.attempts < self.succeed_on_attempt:
            raise WebhookUnavailable(
                f"webhook for device {self.device_id} unavailable (attempt {self.attempts})"
            )
        logger.info("alert for %s delivered: %s", self.device_id, self.text)

    def failed(self, exc: BaseException) -> None:
        """Runs once after the last attempt failed."""
        logger.error("alert for %s was never delivered: %s", self.device_id, exc)
