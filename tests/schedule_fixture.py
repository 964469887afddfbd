"""A schedule for the scheduler tests (SCHEDULE_MODULE=tests.schedule_fixture): one job
every second, and one daily job at 03:00 (UTC) that the tests never reach."""

from __future__ import annotations

from queues.schedule import Schedule
from tests.jobs_fixture.jobs import RecordJob

schedule = Schedule()
schedule.every(1).seconds(RecordJob(path="-", value=1))
schedule.every(1).days(RecordJob(path="-", value=2)).at("03:00")
