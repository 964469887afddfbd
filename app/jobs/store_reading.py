"""`StoreReading`: persist one device reading in the application's SQL table."""

from __future__ import annotations

import time

from sqlalchemy import insert, update
from sqlalchemy.exc import IntegrityError

from app.models import DeviceReading, create_app_tables
from backends.sql_engine import get_engine
from queues import Job
from queues.connections import current_settings

_tables_ready = False


class StoreReading(Job):
    """Insert a reading once: a repeated run only counts itself in `repeats`."""

    queue = "readings"
    max_tries = 5
    backoff = "exponential"
    timeout = 30

    def handle(self) -> None:
        """Store the reading; an existing `reading_id` of the same device means it was stored."""
        global _tables_ready
        handled_at = time.time()
        engine = get_engine(current_settings())
        if not _tables_ready:
            create_app_tables(engine)
            _tables_ready = True
        row = {
            "reading_id": self.data["reading_id"],
            "device_id": self.data["device_id"],
            "value": float(self.data["value"]),
            "published_at": self.data.get("published_at"),
            "handled_at": handled_at,
        }
        try:
            with engine.begin() as connection:
                connection.execute(insert(DeviceReading), row)
        except IntegrityError:
            # Stored by an earlier run of this job: keep the reading once, count the repeat.
            with engine.begin() as connection:
                connection.execute(
                    update(DeviceReading)
                    .where(
                        DeviceReading.device_id == row["device_id"],
                        DeviceReading.reading_id == row["reading_id"],
                    )
                    .values(repeats=DeviceReading.repeats + 1)
                )
