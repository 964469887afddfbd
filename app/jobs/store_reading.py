"""`StoreReading`: persist one device reading in the application's SQL table."""

from __future__ import annotations

import time

from sqlalchemy import insert, update
from sqlalchemy.exc import IntegrityError

from app.models import DeviceReading, app_engine
from app.payloads import Reading
from queues import Job
from queues.job import JobDataError


class StoreReading(Job):
    """Insert a reading once: a repeated run only counts itself in `repeats`."""

    queue = "readings"
    max_tries = 5
    backoff = "exponential"
    timeout = 30

    device_id: str
    reading: Reading  #: travels as JSON, arrives as a Reading again

    def __init__(self, **data: object) -> None:
        super().__init__(**data)
        if self.reading.id is None:  # checked at dispatch: the id makes a second run harmless
            raise JobDataError("StoreReading needs the reading's id (reading.id)")

    def handle(self) -> None:
        """Store the reading; an existing reading id of the same device means it was stored."""
        row = {
            "reading_id": self.reading.id,
            "device_id": self.device_id,
            "value": self.reading.value,
            "published_at": self.reading.ts,
            "handled_at": time.time(),
        }
        try:
            with app_engine().begin() as connection:
                connection.execute(insert(DeviceReading), row)
        except IntegrityError:
            # Stored by an earlier run of this job: keep the reading once, count the repeat.
            with app_engine().begin() as connection:
                connection.execute(
                    update(DeviceReading)
                    .where(
                        DeviceReading.device_id == self.device_id,
                        DeviceReading.reading_id == self.reading.id,
                    )
                    .values(repeats=DeviceReading.repeats + 1)
                )
