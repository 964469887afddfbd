"""fake_queue(): dispatched jobs are validated and recorded, never stored or run."""

from __future__ import annotations

from pathlib import Path

import pytest

from queues import dispatch, dispatch_many
from queues.fake import fake_queue
from queues.job import JobDataError
from queues.outbox import DispatchOutbox
from tests.driver_factories import make_driver
from tests.jobs_fixture import jobs
from tests.jobs_fixture.support import registry


def test_dispatched_jobs_are_recorded_with_data_queue_delay_and_connection(tmp_path: Path):
    driver = make_driver("sqlite", tmp_path)
    try:
        with fake_queue() as queue:
            first = dispatch(jobs.RecordJob(path="p", value=1), registry=registry())
            dispatch(
                jobs.RecordJob(path="p", value=2),
                delay=30,
                queue="slow",
                connection=driver,
                registry=registry(),
            )
        assert [job.data for job in queue.jobs] == [
            {"path": "p", "value": 1},
            {"path": "p", "value": 2},
        ]
        one, two = queue.jobs
        assert (one.id, one.name, one.queue, one.delay, one.connection) == (
            first,
            "RecordJob",
            "default",
            0.0,
            None,
        )
        assert (two.queue, two.delay, two.connection) == ("slow", 30.0, "database")
        assert driver.queues() == []  # nothing reached the real driver
    finally:
        driver.close()
    assert not (Path("p")).exists()  # and nothing ran


def test_assertions_filter_by_class_data_queue_and_delay():
    with fake_queue() as queue:
        dispatch(jobs.RecordJob(path="p", value=(1, 2)), delay=5, registry=registry())
        dispatch_many([jobs.RecordJob(path="q", value=3)] * 2, registry=registry())
    queue.assert_dispatched(jobs.RecordJob, value=[1, 2], delay=5)
    queue.assert_dispatched("RecordJob", value=(1, 2), queue="default")  # tuples as JSON lists
    queue.assert_dispatched_times(jobs.RecordJob, 2, path="q")
    queue.assert_not_dispatched(jobs.FailingJob)
    queue.assert_not_dispatched(jobs.RecordJob, path="p", delay=0)
    with pytest.raises(AssertionError, match=r"expected RecordJob with path='z'.*dispatched: "):
        queue.assert_dispatched(jobs.RecordJob, path="z")
    with pytest.raises(AssertionError, match="4 time"):
        queue.assert_dispatched_times(jobs.RecordJob, 4)
    with pytest.raises(AssertionError, match="expected no job"):
        queue.assert_nothing_dispatched()
    queue.clear()
    queue.assert_nothing_dispatched()


def test_model_arguments_are_compared_and_rebuilt_as_models():
    with fake_queue() as queue:
        dispatch(jobs.PlotJob(path="p", point=jobs.Point(x=2), label=None), registry=registry())
    found = queue.assert_dispatched(jobs.PlotJob, point=jobs.Point(x=2, y=0))
    assert found[0].data["point"] == {"x": 2.0, "y": 0.0}
    assert found[0].job(registry()).point == jobs.Point(x=2)


def test_a_faked_dispatch_is_validated_like_a_real_one():
    with fake_queue() as queue, pytest.raises(JobDataError, match="argument 'value'"):
        dispatch(jobs.RecordJob(path="p", value={1, 2}), registry=registry())
    queue.assert_nothing_dispatched()


def test_a_recorded_handler_attempt_that_raises_leaves_nothing_in_the_fake():
    outbox = DispatchOutbox()
    with fake_queue() as queue:
        outbox.begin()
        dispatch(jobs.RecordJob(path="p", value="dropped"), registry=registry())
        outbox.end()  # the attempt raised: its records are dropped, never flushed
        outbox.begin()
        dispatch(jobs.RecordJob(path="p", value="kept"), registry=registry())
        records = outbox.end()
        assert records is not None
        queue.assert_nothing_dispatched()  # recorded, not yet stored
        outbox.flush([records])
    assert [job.data["value"] for job in queue.jobs] == ["kept"]


def test_the_innermost_fake_wins_and_the_real_queue_is_back_after():
    with fake_queue() as outer:
        with fake_queue() as inner:
            dispatch(jobs.RecordJob(path="p", value=1), registry=registry())
        dispatch(jobs.RecordJob(path="p", value=2), registry=registry())
    assert [job.data["value"] for job in inner.jobs] == [1]
    assert [job.data["value"] for job in outer.jobs] == [2]
    from queues import substitution

    assert substitution.current() is None
