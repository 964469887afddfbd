"""The dashboard in a real headless Chromium against a live Redis with real jobs.

`main.py --dashboard` and a `--queue-work` worker run as subprocesses; Playwright
(tests/browser, `npm install` there; `.ci/run` does it) drives Debian's
/usr/bin/chromium: the page shows the queue counts, the failed job with its
exception and traceback, and after a click on retry (with the token) the
worker runs the job again, this time to success; a batch shows its progress.
The screenshot goes to
benchmarks/results/dashboard.png for the README.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from config.settings import PROJECT_ROOT
from queues import batch
from queues.envelope import Envelope
from tests.conftest import services_required
from tests.driver_factories import make_driver
from tests.http_helpers import free_port, get_json, wait_for
from tests.jobs_fixture.jobs import RecordJob
from tests.jobs_fixture.support import main_env, registry, start_main

BROWSER_DIR = PROJECT_ROOT / "tests" / "browser"
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT = PROJECT_ROOT / "benchmarks" / "results" / "dashboard.png"
#: Seconds the browser script may take in all.
BROWSER_TIMEOUT = 120


def _need_browser() -> str:
    node = shutil.which("node")
    missing = []
    if node is None:
        missing.append("node")
    if not CHROMIUM.exists():
        missing.append(str(CHROMIUM))
    if not (BROWSER_DIR / "node_modules" / "playwright-core").is_dir():
        missing.append("tests/browser/node_modules (npm install in tests/browser)")
    if missing:
        reason = f"the browser test needs {', '.join(missing)}"
        if services_required():
            pytest.fail(f"{reason} (REQUIRE_SERVICES=1)")
        pytest.skip(reason)
    assert node is not None
    return node


def _stop(process: subprocess.Popen[str]) -> str:
    if process.poll() is None:
        process.terminate()
    try:
        _, err = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        _, err = process.communicate()
    return err


def test_the_page_shows_counts_and_a_click_on_retry_runs_the_failed_job(
    tmp_path: Path, redis_client: Any
) -> None:
    node = _need_browser()
    driver = make_driver("redis", tmp_path)
    shown, work = f"shown-{uuid.uuid4().hex[:6]}", f"work-{uuid.uuid4().hex[:6]}"
    for value in range(3):
        data = {"path": str(tmp_path / "never"), "value": value}
        driver.push(shown, Envelope(job="RecordJob", data=data, queue=shown).to_json())
    delayed = Envelope(
        job="RecordJob", data={"path": str(tmp_path / "never"), "value": 9}, queue=shown
    )
    driver.later(shown, delayed.to_json(), 3600)
    flaky_path = tmp_path / "flaky"
    flaky = Envelope(job="FlakyJob", data={"path": str(flaky_path), "succeed_on": 2}, queue=work)
    driver.push(work, flaky.to_json())
    never = [RecordJob(path=str(tmp_path / "never"), value=v) for v in range(2)]
    batch_id = batch(never, name="shown").dispatch(driver, registry=registry())  # queue "default"

    token = uuid.uuid4().hex
    port = free_port()
    env = main_env("redis", tmp_path, DASHBOARD_PORT=str(port), DASHBOARD_TOKEN=token)
    worker = start_main(["--queue-work", "--queue", work, "--sleep", "0.2"], env)
    dashboard = start_main(["--dashboard"], env)
    try:
        store = driver.failed_store
        assert wait_for(lambda: store.all(work)), _stop(worker)
        failed_id = store.all(work)[0].id
        url = f"http://127.0.0.1:{port}/"
        assert wait_for(lambda: get_json(url + "api/overview")[0] == 200), _stop(dashboard)

        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        plan = {
            "url": url,
            "token": token,
            "userDataDir": str(tmp_path / "chromium-profile"),
            "screenshot": str(SCREENSHOT),
            "expect": [
                {"queue": f"redis/{shown}", "pending": 3, "delayed": 1, "failed": 0},
                {"queue": f"redis/{work}", "failed": 1},
            ],
            "batch": {"id": batch_id, "total": 2, "pending": 2},
            "retryId": failed_id,
            "workQueue": work,
            "doneAtLeast": 2,
            "timeoutMs": 60_000,
        }
        result = subprocess.run(
            [node, str(BROWSER_DIR / "dashboard_check.mjs"), json.dumps(plan)],
            cwd=BROWSER_DIR,
            capture_output=True,
            text=True,
            timeout=BROWSER_TIMEOUT,
        )
        seen = json.loads(result.stdout.strip().splitlines()[-1]) if result.stdout.strip() else {}
        assert result.returncode == 0, f"{result.stderr}\nseen: {seen}"
        assert seen["counts"][f"redis/{shown}:pending"] == 3
        assert seen["counts"][f"redis/{shown}:delayed"] == 1
        assert seen["counts"][f"redis/{work}:failed"] == 1
        assert "RuntimeError: not yet (attempt 1)" in seen["exception"]
        assert seen["retryDisabledWithoutToken"] is True
        assert seen["batch"] == {"total": 2, "pending": 2}
        assert seen["steps"] == ["counts", "batch", "show", "retried", "ran"]
        assert (flaky_path.parent / "flaky.done").read_text() == "ok\n", (
            "the retried job did not run"
        )
        assert store.all(work) == [], "the retried job failed again"
        assert SCREENSHOT.stat().st_size > 10_000
    finally:
        _stop(worker)
        _stop(dashboard)
        driver.close()
