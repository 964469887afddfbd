"""The dashboard's API on a live Redis: counts, failed jobs, and actions that need the token."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from config.settings import load_settings
from queues import connections
from queues.dashboard import Dashboard, Throughput
from queues.envelope import Envelope
from support.http_server import HttpServer
from tests.http_helpers import get, get_json
from tests.jobs_fixture.support import main_env

ROUTES = [{"pattern": "devices/{device_id}/telemetry", "subscription": "devices/+/telemetry"}]


def _serve(tmp_path: Path, **extra: str) -> tuple[str, Any]:
    settings = load_settings(main_env("redis", tmp_path, **extra), dotenv_path=None)
    server = HttpServer("127.0.0.1", 0)
    Dashboard(settings, ROUTES).mount(server)
    server.start()
    return f"http://127.0.0.1:{server.port}", server


@pytest.fixture
def failed_job(tmp_path: Path, redis_client: Any) -> Iterator[tuple[str, str, Any]]:
    """(queue, failed id, driver): one failed RecordJob on the test Redis."""
    settings = load_settings(main_env("redis", tmp_path), dotenv_path=None)
    with connections.configured(settings):
        driver = connections.get_driver("redis", settings)
        queue = f"d-{uuid.uuid4().hex[:8]}"
        data = {"path": str(tmp_path / "out"), "value": 1}
        driver.push(queue, Envelope(job="RecordJob", data=data, queue=queue).to_json())
        reserved = driver.pop([queue])
        assert reserved is not None
        driver.fail(reserved, "ValueError: boom\n\nTraceback (most recent call last):\nValueError")
        yield queue, driver.failed_store.all(queue)[0].id, driver


def test_overview_shows_counts_failed_jobs_and_routes(tmp_path: Path, failed_job: Any) -> None:
    queue, failed_id, driver = failed_job
    driver.push(
        queue, Envelope(job="RecordJob", data={"path": "x", "value": 2}, queue=queue).to_json()
    )
    url, server = _serve(tmp_path)
    try:
        status, body = get_json(f"{url}/api/overview")
        assert status == 200
        row = next(q for q in body["queues"] if q["queue"] == queue and q["connection"] == "redis")
        assert (row["pending"], row["failed"]) == (1, 1)
        assert [f["id"] for f in body["failed"]] == [failed_id]
        assert body["failed"][0]["exception"] == "ValueError: boom"
        assert body["routes"] == ROUTES and body["actions"] is False
        status, page = get(f"{url}/")
        assert status == 200 and b'<script src="/dashboard.js">' in page
        status, detail = get_json(f"{url}/api/failed/{failed_id}")
        assert status == 200 and "Traceback" in detail["exception"]
        assert detail["payload"]["job"] == "RecordJob"
    finally:
        server.stop()


def test_actions_are_refused_without_a_configured_token(tmp_path: Path, failed_job: Any) -> None:
    _, failed_id, driver = failed_job
    url, server = _serve(tmp_path)
    try:
        status, body = get_json(f"{url}/api/failed/{failed_id}/retry", "POST")
        assert status == 403 and "DASHBOARD_TOKEN" in body["error"]
        status, _ = get_json(f"{url}/api/failed/{failed_id}/forget", "POST")
        assert status == 403
        assert driver.failed_store.get(failed_id) is not None, "a refused action changed state"
    finally:
        server.stop()


def test_actions_need_the_right_token_then_retry_and_forget_work(
    tmp_path: Path, failed_job: Any
) -> None:
    queue, failed_id, driver = failed_job
    token = uuid.uuid4().hex
    url, server = _serve(tmp_path, DASHBOARD_TOKEN=token)
    try:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            status, _ = get_json(f"{url}/api/failed/{failed_id}/retry", "POST", headers)
            assert status == 401
        status, _ = get_json(f"{url}/api/failed/{failed_id}/retry", "GET")
        assert status == 404  # GET on the action path shows a failed job by that id: none
        auth = {"Authorization": f"Bearer {token}"}
        status, body = get_json(f"{url}/api/failed/{failed_id}/retry", "POST", auth)
        assert status == 200 and body["retried"] == failed_id
        assert driver.contains(queue, body["job_id"])
        assert driver.failed_store.get(failed_id) is None
        reserved = driver.pop([queue])
        driver.fail(reserved, "ValueError: again")
        again = driver.failed_store.all(queue)[0].id
        status, _ = get_json(f"{url}/api/failed/{again}/forget", "POST", auth)
        assert status == 200 and driver.failed_store.get(again) is None
        status, _ = get_json(f"{url}/api/failed/{again}/forget", "POST", auth)
        assert status == 404
    finally:
        server.stop()


def test_throughput_adds_per_worker_growth_and_survives_a_worker_restart() -> None:
    reports: list[list[dict[str, Any]]] = [
        [{"id": "a", "connection": "redis", "processed": {"q": 10}}],
        [{"id": "a", "connection": "redis", "processed": {"q": 20}}],
        # worker a restarted as b with fresh counts: no negative rate, no jump
        [{"id": "b", "connection": "redis", "processed": {"q": 5}}],
    ]
    throughput = Throughput(lambda: reports.pop(0))
    for _ in range(3):
        throughput.sample()
    series = throughput.series()["redis/q"]
    assert len(series) == 2 and all(rate >= 0 for rate in series)
    assert series[0] > 0


def test_batches_show_their_progress(tmp_path: Path, redis_client: Any) -> None:
    from queues import batch
    from tests.jobs_fixture.jobs import RecordJob
    from tests.jobs_fixture.support import registry

    settings = load_settings(main_env("redis", tmp_path), dotenv_path=None)
    with connections.configured(settings):
        driver = connections.get_driver("redis", settings)
        jobs = [RecordJob(path=str(tmp_path / "out"), value=v) for v in range(3)]
        batch_id = batch(jobs, name="nightly").dispatch(driver, registry=registry())
        url, server = _serve(tmp_path)
        try:
            status, body = get_json(f"{url}/api/overview")
            assert status == 200
            [shown] = [b for b in body["batches"] if b["id"] == batch_id]
            assert (shown["name"], shown["total"], shown["pending"], shown["connection"]) == (
                "nightly",
                3,
                3,
                "redis",
            )
            status, one = get_json(f"{url}/api/batches/{batch_id}")
            assert status == 200 and one["done"] == 0
            status, _ = get_json(f"{url}/api/batches/no-such-batch")
            assert status == 404
        finally:
            server.stop()
