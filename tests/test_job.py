"""Job data, the registry allowlist and backoff policies (no server needed)."""

from __future__ import annotations

import random
import sys
from datetime import datetime
from decimal import Decimal

import pytest

from config.settings import load_settings
from queues import connections
from queues.backoff import EXPONENTIAL_CAP, backoff_delay, parse_backoff, validate_backoff
from queues.dispatcher import UnregisteredJobError, build_envelope
from queues.envelope import Envelope
from queues.job import Job, JobDataError
from queues.registry import (
    DuplicateJobError,
    JobRegistry,
    UnknownJobError,
    default_package,
    get_registry,
)
from tests.jobs_fixture import jobs
from tests.jobs_fixture.support import PACKAGE, registry


def test_constructor_arguments_become_attributes_and_data():
    job = jobs.RecordJob(path="/tmp/x", value=3)
    assert job.path == "/tmp/x" and job.value == 3
    assert job.data == {"path": "/tmp/x", "value": 3}


def test_argument_clashing_with_job_policy_is_refused():
    with pytest.raises(JobDataError, match="'queue' clashes"):
        jobs.RecordJob(queue="emails")


@pytest.mark.parametrize(
    ("value", "culprit"),
    [
        (datetime(2024, 1, 1), "'when'"),
        (Decimal("1.5"), "'when'"),
        ({"a": {1, 2}}, "when['a']"),
        ([1, object()], "when[1]"),
        ({1: "x"}, "non-string key 1"),
        (float("nan"), "nan"),
        (float("inf"), "inf"),
    ],
)
def test_non_json_data_fails_at_dispatch_naming_job_and_argument(value, culprit):
    job = jobs.RecordJob(path="/tmp/x", when=value)
    with pytest.raises(JobDataError) as info:
        build_envelope(job, registry=registry())
    assert "RecordJob" in str(info.value)
    assert culprit in str(info.value)


def test_tuples_are_accepted_and_arrive_as_lists():
    envelope = build_envelope(jobs.RecordJob(path="p", value=(1, (2, 3))), registry=registry())
    assert Envelope.from_json(envelope.to_json()).data["value"] == [1, [2, 3]]


def test_a_model_argument_travels_as_json_and_comes_back_as_the_model():
    point = jobs.Point(x=1.5)
    job = jobs.PlotJob(path="p", point=point, label=None)
    assert job.point is point  # the dispatching code keeps its object
    envelope = build_envelope(job, registry=registry())
    data = Envelope.from_json(envelope.to_json()).data
    assert data == {"path": "p", "point": {"x": 1.5, "y": 0.0}, "label": None}
    rebuilt = jobs.PlotJob(**data)  # what a worker does
    assert rebuilt.point == point and isinstance(rebuilt.point, jobs.Point)
    assert rebuilt.data == data
    labelled = jobs.PlotJob(path="p", point={"x": "2"}, label={"x": 3, "y": 4})
    assert labelled.point == jobs.Point(x=2.0) and labelled.label == jobs.Point(x=3, y=4)
    assert labelled.data["point"] == {"x": 2.0, "y": 0.0}  # validated, then dumped


def test_a_dict_that_does_not_fit_the_model_names_the_job_argument_and_fields():
    with pytest.raises(JobDataError, match=r"PlotJob argument 'point' is not a valid Point: x: "):
        jobs.PlotJob(path="p", point={"y": "north"}, label=None)


def test_an_argument_declared_without_a_default_is_required_at_dispatch():
    with pytest.raises(JobDataError, match=r"PlotJob needs argument\(s\) 'label', 'point'"):
        jobs.PlotJob(path="p")

    class Optional(Job):
        note: str = "none"  # a default: may be left out

    assert Optional().note == "none"


def test_a_model_argument_without_an_annotation_arrives_as_its_dict():
    job = jobs.RecordJob(path="p", value=jobs.Point(x=1))
    data = Envelope.from_json(build_envelope(job, registry=registry()).to_json()).data
    assert jobs.RecordJob(**data).value == {"x": 1.0, "y": 0.0}


def test_envelope_carries_the_class_policy_and_absolute_retry_until():
    envelope = build_envelope(
        jobs.ShortDeadlineJob(path="p"), queue="q2", registry=registry(), now=1000.0
    )
    assert envelope.job == "ShortDeadlineJob"
    assert envelope.queue == "q2"
    assert envelope.max_tries == 5
    assert envelope.retry_until == pytest.approx(1000.3)
    assert envelope.created_at == 1000.0
    failing = build_envelope(jobs.FailingJob(path="p", value=1), registry=registry())
    assert failing.backoff == [0.2, 0.5] and failing.max_tries == 3 and failing.queue == "default"


def test_retry_until_may_be_a_method_returning_a_datetime():
    class Deadline(Job):
        def retry_until(self) -> datetime:
            return datetime.fromtimestamp(5000.0)

    assert Deadline().retry_deadline(1000.0) == 5000.0


def test_registry_finds_every_job_of_the_package_by_name():
    names = registry().names()
    assert {"RecordJob", "FailingJob", "AsyncJob", "custom-name"} <= set(names)
    assert "AbstractBase" not in names  # abstract = True
    assert "Renamed" not in names  # registered under its `name`
    assert registry().resolve("custom-name") is jobs.Renamed


def test_unknown_job_name_names_the_package_and_imports_nothing():
    reg = registry()
    with pytest.raises(
        UnknownJobError, match=f"unknown job 'os.system': not registered in {PACKAGE}"
    ):
        reg.resolve("os.system")
    with pytest.raises(UnknownJobError):
        reg.resolve("tests.jobs_fixture.outside.evil.Evil")
    assert "tests.jobs_fixture.outside.evil" not in sys.modules


def test_two_classes_with_one_name_are_refused_at_registration():
    reg = JobRegistry(PACKAGE)

    class One(Job):
        name = "same"

    class Two(Job):
        name = "same"

    reg.register(One)
    with pytest.raises(DuplicateJobError, match="'same' is used by both"):
        reg.register(Two)


def test_dispatching_an_unregistered_class_fails_before_queueing():
    class Stray(Job):
        def handle(self) -> None:
            pass

    with pytest.raises(UnregisteredJobError, match=f"'Stray'.*not registered in {PACKAGE}"):
        build_envelope(Stray(), registry=registry())


def test_jobs_package_comes_from_the_settings_so_dotenv_counts(tmp_path, monkeypatch):
    monkeypatch.setattr(connections, "_settings", None)  # restored after the test
    dotenv = tmp_path / ".env"
    dotenv.write_text("JOBS_PACKAGE=tests.jobs_fixture\n")
    connections.configure(load_settings({}, dotenv_path=dotenv))
    try:
        assert default_package() == "tests.jobs_fixture"
        assert get_registry().package == "tests.jobs_fixture"
        connections.configure(load_settings({}, dotenv_path=None))
        assert default_package() == "app.jobs"
    finally:
        connections.reset()


def test_backoff_list_is_per_attempt_and_its_last_value_repeats():
    assert [backoff_delay([1, 5, 30], n) for n in (1, 2, 3, 4, 9)] == [1, 5, 30, 30, 30]
    assert backoff_delay(2.5, 7) == 2.5


def test_exponential_backoff_has_full_jitter_under_a_doubling_cap():
    rng = random.Random(7)
    for attempt in range(1, 20):
        ceiling = min(EXPONENTIAL_CAP, 2 ** (attempt - 1))
        delays = [backoff_delay("exponential", attempt, rng) for _ in range(50)]
        assert all(0 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1  # jittered, not lockstep


def test_backoff_flag_parses_number_list_and_exponential():
    assert parse_backoff("5") == 5.0
    assert parse_backoff("1,5,30") == [1.0, 5.0, 30.0]
    assert parse_backoff("exponential") == "exponential"
    with pytest.raises(ValueError, match="--backoff"):
        parse_backoff("soon")
    with pytest.raises(ValueError, match=">= 0"):
        validate_backoff([-1])
