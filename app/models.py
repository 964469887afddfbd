"""Tables of the example application (not of the framework), and how jobs reach them.

The app's tables live in the queue's SQL database: the engine of the DB_*
settings, or the embedded SQLite file (SQLITE_PATH). `python main.py --migrate`
creates every table declared on `AppBase` beside the queue tables; `app_engine()`
also creates missing ones on first use, so the SQLite default needs no step.
"""

from __future__ import annotations

import threading
import weakref
from datetime import datetime

from sqlalchemy import DateTime, Double, Integer, String, UniqueConstraint, func
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from backends.sql_engine import get_engine
from backends.sql_tables import create_missing_tables
from queues.connections import current_settings


class AppBase(DeclarativeBase):
    """Declarative base of the application's own tables."""


class DeviceReading(AppBase):
    """One telemetry reading stored by the `StoreReading` job.

    `(device_id, reading_id)` is unique so a job that runs twice (at-least-once
    delivery after a crash) stores its reading once. The key is scoped by device
    because a device chooses its reading ids: a global key would let device A
    send B's future ids first and have B's real readings counted as repeats.
    """

    __tablename__ = "device_readings"
    __table_args__ = (UniqueConstraint("device_id", "reading_id", name="uq_device_reading"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    reading_id: Mapped[str] = mapped_column(String(64))
    device_id: Mapped[str] = mapped_column(String(255), index=True)
    value: Mapped[float] = mapped_column(Double)
    published_at: Mapped[float | None] = mapped_column(Double, nullable=True)
    handled_at: Mapped[float] = mapped_column(Double)
    #: times the same reading was handled again (a job run twice); stays 0 normally
    repeats: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(DateTime, server_default=func.now())


_ready: weakref.WeakSet[Engine] = weakref.WeakSet()
_ready_lock = threading.Lock()


def app_engine() -> Engine:
    """The SQLAlchemy engine of the app's database (the process-wide one the database
    queue uses too), with the app's tables created once per engine."""
    engine = get_engine(current_settings())
    if engine not in _ready:
        with _ready_lock:
            if engine not in _ready:
                create_app_tables(engine)
                _ready.add(engine)
    return engine


def create_app_tables(engine: Engine) -> list[str]:
    """Create the application's tables that are missing; return their names."""
    return create_missing_tables(engine, AppBase.metadata)
