"""dispatch() and dispatch_many() put validated JSON envelopes on a real driver."""

from __future__ import annotations

import uuid

import pytest

from config.settings import load_settings
from queues import connections, dispatch, dispatch_many
from queues.envelope import Envelope
from queues.job import JobDataError
from tests.driver_factories import make_driver
from tests.jobs_fixture import jobs
from tests.jobs_fixture.support import registry

DRIVERS = ("redis", "sqlite", "mariadb")


@pytest.fixture(params=DRIVERS)
def driver(request, tmp_path):
    made = make_driver(request.param, tmp_path)
    yield made
    made.close()


def test_dispatch_returns_a_uuid_and_the_job_lands_in_its_queue(driver):
    job_id = dispatch(jobs.RecordJob(path="p", value=1), connection=driver, registry=registry())
    assert str(uuid.UUID(job_id)) == job_id
    assert driver.sizes("default").pending == 1
    reserved = driver.pop(["default"])
    assert reserved is not None and reserved.id == job_id
    envelope = Envelope.from_json(reserved.payload)
    assert (envelope.job, envelope.data) == ("RecordJob", {"path": "p", "value": 1})


def test_dispatch_with_delay_and_queue_is_delayed_on_that_queue(driver):
    dispatch(
        jobs.RecordJob(path="p", value=1),
        delay=30,
        queue="later",
        connection=driver,
        registry=registry(),
    )
    sizes = driver.sizes("later")
    assert (sizes.pending, sizes.delayed) == (0, 1)
    assert driver.pop(["later"]) is None


def test_bad_data_queues_nothing(driver):
    with pytest.raises(JobDataError, match="RecordJob argument 'value'"):
        dispatch(jobs.RecordJob(path="p", value={1, 2}), connection=driver, registry=registry())
    assert driver.queues() == []


def test_dispatch_many_queues_all_in_order_and_returns_their_ids(driver):
    batch = [jobs.RecordJob(path="p", value=i) for i in range(5)]
    ids = dispatch_many(batch, connection=driver, registry=registry())
    assert len(set(ids)) == 5
    popped = [driver.pop(["default"]) for _ in range(5)]
    assert [job.id for job in popped if job] == ids


def test_dispatch_many_with_one_bad_job_queues_none(driver):
    batch = [jobs.RecordJob(path="p", value=1), jobs.RecordJob(path="p", value=object())]
    with pytest.raises(JobDataError):
        dispatch_many(batch, connection=driver, registry=registry())
    assert driver.queues() == []


def test_dispatch_uses_queue_connection_by_default(tmp_path, monkeypatch):
    monkeypatch.setenv("JOBS_PACKAGE", "tests.jobs_fixture")
    monkeypatch.setattr(connections, "_settings", None)  # restored after the test
    settings = load_settings(
        {"QUEUE_CONNECTION": "database", "SQLITE_PATH": str(tmp_path / "q.db")}, dotenv_path=None
    )
    connections.configure(settings)
    try:
        job_id = dispatch(jobs.RecordJob(path="p", value=1), registry=registry())
        driver = connections.get_driver()
        assert driver.name == "database"
        assert driver.contains("default", job_id)
    finally:
        connections.reset()


@pytest.mark.parametrize("bad", ["failed:emails", "x:delayed", "failed", "a b"])
def test_a_queue_name_that_could_collide_with_other_keys_is_refused_at_dispatch(bad):
    from queues.dispatcher import build_envelope

    with pytest.raises(JobDataError, match="queue name"):
        build_envelope(jobs.RecordJob(path="/tmp/x", value="v"), queue=bad, registry=registry())
