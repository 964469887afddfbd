"""LOG_FORMAT=json: one JSON object per line, naming role, process, worker, job id or topic."""

from __future__ import annotations

import io
import json
import logging
import uuid
from pathlib import Path
from typing import Any

import pytest

from queues.envelope import Envelope
from support import log_context
from support.logging_setup import JsonFormatter, configure_logging
from tests.driver_factories import make_driver
from tests.jobs_fixture.support import main_env, run_main


def _record(message: str, exc_info: Any = None) -> logging.LogRecord:
    return logging.LogRecord("queues.worker", logging.INFO, __file__, 1, message, ("x",), exc_info)


def test_a_json_line_has_the_fixed_fields_and_the_bound_job_id() -> None:
    formatter = JsonFormatter("worker", "queue-worker-3")
    binding = log_context.bind(job_id="j-1")
    try:
        line = formatter.format(_record("job %s started"))
    finally:
        log_context.unbind(binding)
    entry = json.loads(line)
    assert "\n" not in line
    assert entry["level"] == "INFO" and entry["logger"] == "queues.worker"
    assert (entry["role"], entry["process"], entry["worker"]) == ("worker", "queue-worker-3", 3)
    assert entry["job_id"] == "j-1"
    assert entry["time"].endswith("+00:00")
    after = json.loads(formatter.format(_record("idle %s")))
    assert "job_id" not in after, "a binding outlived its unbind"


def test_a_traceback_stays_inside_one_json_line() -> None:
    formatter = JsonFormatter("router", "main")
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        import sys

        line = formatter.format(_record("failed %s", exc_info=sys.exc_info()))
    assert len(line.splitlines()) == 1
    entry = json.loads(line)
    assert entry["worker"] is None
    assert "ValueError: bad" in entry["exception"]


def test_text_stays_the_default_format(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", "main")
    logging.getLogger("x").info("plain")
    err = capsys.readouterr().err
    assert " INFO main x: plain" in err
    with pytest.raises(ValueError):
        json.loads(err.strip())


def test_a_topic_bound_by_the_intake_reaches_the_handlers_own_log_lines() -> None:
    from core.delivery import Delivery, Inbound

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("router", "main"))
    app_log = logging.getLogger("app.test")
    app_log.addHandler(handler)
    app_log.setLevel(logging.INFO)

    class Router:
        def dispatch(self, message: Any) -> bool:
            app_log.info("handling")
            return True

    delivery = Delivery(
        Router(), lambda *a: None, 1, "dead/", 60_000, lambda *a: True, lambda *a: True
    )
    try:
        assert delivery.route(Inbound("devices/d1/telemetry", b"{}", 1, False, None)) is not None
    finally:
        app_log.removeHandler(handler)
    entry = json.loads(stream.getvalue())
    assert entry["topic"] == "devices/d1/telemetry" and entry["message"] == "handling"


def test_worker_lines_carry_the_role_and_the_job_id_in_a_real_process(tmp_path: Path) -> None:
    driver = make_driver("sqlite", tmp_path)
    queue = f"j-{uuid.uuid4().hex[:8]}"
    envelope = Envelope(
        job="RecordJob", data={"path": str(tmp_path / "out"), "value": 1}, queue=queue
    )
    driver.push(queue, envelope.to_json())
    env = main_env("database", tmp_path, LOG_FORMAT="json", LOG_LEVEL="DEBUG")
    result = run_main(["--queue-work", "--queue", queue, "--once", "--sleep", "0.1"], env)
    assert result.returncode == 0, result.stderr
    entries = [json.loads(line) for line in result.stderr.splitlines() if line.strip()]
    assert entries and all(e["role"] == "worker" for e in entries)
    about_job = [e for e in entries if e.get("job_id") == envelope.id]
    assert any("started" in e["message"] for e in about_job), entries
    assert any("finished" in e["message"] for e in about_job), entries
    driver.close()
