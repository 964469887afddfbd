"""`python main.py --schedule`: run the app's schedule (queues/schedule.py) until stopped.

Loads the `schedule` of SCHEDULE_MODULE, then dispatches each tick of each
entry, claimed per tick on the entry's queue connection, so any number of
schedulers may run at once (for availability) and each tick is queued once.
SIGTERM/SIGINT stop it after the current turn (exit 0). A schedule that cannot
be loaded is one line on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import signal
import sys
import uuid
from types import FrameType

from config.settings import Settings
from queues import connections
from queues.coordination import Coordinator, default_coordinator
from queues.dispatcher import dispatch
from queues.schedule import Entry, ScheduleError, Scheduler, load_schedule

#: Exit code when the schedule module cannot be used.
EXIT_BAD_SCHEDULE = 2


def schedule_command(args: argparse.Namespace, settings: Settings) -> int:
    """Run the scheduler of `settings.schedule_module` until a stop signal."""
    del args
    connections.configure(settings)
    try:
        schedule = load_schedule(settings.schedule_module)
    except ScheduleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_SCHEDULE

    coordinators: dict[str | None, Coordinator] = {}

    def coordinator(entry: Entry) -> Coordinator:
        found = coordinators.get(entry.connection)
        if found is None:
            found = coordinators[entry.connection] = default_coordinator(entry.connection)
        return found

    def send(entry: Entry) -> str:
        return dispatch(entry.job, queue=entry.queue, connection=entry.connection)

    scheduler = Scheduler(schedule, coordinator, send, token=uuid.uuid4().hex)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        scheduler.stop()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        return scheduler.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        connections.reset()
