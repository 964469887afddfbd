"""support/supervisor.py: N `main.py` children (`--queue-work`/`--run --workers N`) kept running.

Restarts with a jittered, capped backoff; planned exits at INFO; children named in
their log lines; SIGTERM/SIGINT forwarded once; children gone within seconds when
the supervisor dies, SIGKILL included.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest

from queues import dispatch
from support import supervisor as supervisor_module
from support.supervisor import SUPERVISOR_PID_ENV, Child, Supervisor
from tests.conftest import MQTT_HOST, MQTT_PORT
from tests.driver_factories import make_driver
from tests.jobs_fixture import jobs
from tests.jobs_fixture.support import MAIN, PROJECT_ROOT, main_env, registry, start_main

#: Seconds to wait for processes to appear, restart or finish jobs.
PATIENCE = 20.0
#: Seconds within which children must be gone after their supervisor was killed.
PARENT_DEATH_PATIENCE = 5.0


def children_of(pid: int) -> set[int]:
    """Pids whose parent is `pid` (from /proc)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(entry.name))
    return found


def wait_for(predicate, what: str) -> None:
    deadline = time.monotonic() + PATIENCE
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


@pytest.fixture
def queue() -> str:
    return f"s-{uuid.uuid4().hex[:12]}"


def test_supervisor_restarts_a_killed_worker_and_stops_all_on_sigterm(tmp_path, queue):
    driver = make_driver("sqlite", tmp_path)
    args = ["--queue-work", "--workers", "2", "--sleep", "0.2", "--queue", queue]
    supervisor = start_main(args, main_env("database", tmp_path))
    try:
        wait_for(lambda: len(children_of(supervisor.pid)) == 2, "two workers")
        first = children_of(supervisor.pid)
        victim = min(first)
        os.kill(victim, signal.SIGKILL)
        wait_for(
            lambda: (
                len(children_of(supervisor.pid)) == 2 and victim not in children_of(supervisor.pid)
            ),
            "the killed worker to be replaced",
        )
        out = tmp_path / "out"
        dispatch(
            jobs.RecordJob(path=str(out), value=1),
            connection=driver,
            queue=queue,
            registry=registry(),
        )
        wait_for(lambda: lines(out) == ["1"], "the job to run")
        workers = children_of(supervisor.pid)
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(timeout=PATIENCE) == 0
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
    for pid in workers:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()
    driver.close()


def test_workers_that_exit_after_max_jobs_are_restarted_and_logged_at_info_by_name(tmp_path, queue):
    driver = make_driver("sqlite", tmp_path)
    out = tmp_path / "out"
    for value in range(3):
        dispatch(
            jobs.RecordJob(path=str(out), value=value),
            connection=driver,
            queue=queue,
            registry=registry(),
        )
    args = ["--queue-work", "--workers", "2", "--max-jobs", "1", "--sleep", "0.2", "--queue", queue]
    supervisor = start_main(args, main_env("database", tmp_path))
    try:
        wait_for(lambda: sorted(lines(out)) == ["0", "1", "2"], "three jobs by one-job workers")
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(timeout=PATIENCE) == 0
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
    _, stderr = supervisor.communicate()
    assert "processed 1 jobs (--max-jobs 1)" in stderr
    # A planned exit is INFO, and every line names the process that wrote it.
    planned = re.findall(r" (\w+) main support\.supervisor: queue-worker-\d .*planned exit", stderr)
    assert planned and set(planned) == {"INFO"}, stderr
    assert "restarting" in stderr
    for name in ("queue-worker-0", "queue-worker-1"):
        assert re.search(rf" INFO {name} queues\.worker: worker \d+ started", stderr), stderr
    assert "MainProcess" not in stderr and " WARNING " not in stderr, stderr
    driver.close()


# -- the restart policy, on throwaway child scripts ---------------------------------


@pytest.fixture
def quick_restarts(monkeypatch):
    monkeypatch.setattr(supervisor_module, "POLL_INTERVAL", 0.02)
    monkeypatch.setattr(supervisor_module, "RESTART_DELAY", 0.05)
    monkeypatch.setattr(supervisor_module, "RESTART_DELAY_CAP", 0.2)


def supervise_script(tmp_path, caplog, body: str, logged: str, times: int) -> Supervisor:
    """Supervise one child running `body` until the supervisor logged `logged` `times` times."""
    script = tmp_path / "child.py"
    script.write_text(body)
    sup = Supervisor([Child("child-0", ())], stop_timeout=5, script=script)
    thread = threading.Thread(target=sup.run)
    with caplog.at_level("INFO", logger="support.supervisor"):
        thread.start()
        try:
            wait_for(lambda: caplog.text.count(logged) >= times, f"{times} x {logged!r}")
        finally:
            sup.stop()
            thread.join(PATIENCE)
    assert not thread.is_alive()
    return sup


def test_a_crashing_child_is_restarted_after_jittered_pauses_under_the_cap(
    tmp_path, quick_restarts, caplog
):
    supervise_script(tmp_path, caplog, "import sys\nsys.exit(3)\n", "exited with code 3", 6)
    pauses = [
        float(p) for p in re.findall(r"code 3 after .* restarting in ([\d.]+) s", caplog.text)
    ]
    assert len(pauses) >= 6
    assert all(0 <= pause <= 0.2 for pause in pauses), pauses
    assert len(set(pauses)) > 1, f"no jitter: {pauses}"
    crashes = [r for r in caplog.records if "exited with code 3" in r.getMessage()]
    assert {r.levelname for r in crashes} == {"WARNING"}


def test_a_planned_exit_is_restarted_at_once_without_growing_the_backoff(
    tmp_path, quick_restarts, caplog
):
    sup = supervise_script(tmp_path, caplog, "import time\ntime.sleep(0.05)\n", "planned exit", 3)
    assert sup.slots[0].backoff.failures == 0
    planned = [r for r in caplog.records if "planned exit" in r.getMessage()]
    assert {r.levelname for r in planned} == {"INFO"}


def test_a_child_that_lived_a_healthy_uptime_crashes_as_if_for_the_first_time(
    tmp_path, quick_restarts, monkeypatch, caplog
):
    monkeypatch.setattr(supervisor_module, "HEALTHY_UPTIME", 0.1)
    body = "import sys, time\ntime.sleep(0.3)\nsys.exit(3)\n"
    sup = supervise_script(tmp_path, caplog, body, "exited with code 3", 3)
    assert sup.slots[0].backoff.failures == 1


# -- one parent-death rule and one Ctrl-C for both kinds of child --------------------


class Tree:
    """`main.py --run|--queue-work --workers 2` in its own session, logging to a file."""

    def __init__(self, kind: str, tmp_path: Path) -> None:
        env = main_env("database", tmp_path)
        if kind == "run":
            env.update(
                {
                    "MQTT_HOST": MQTT_HOST,
                    "MQTT_PORT": str(MQTT_PORT),
                    "MQTT_CLIENT_ID": f"test-tree-{uuid.uuid4().hex[:8]}",
                    "MQTT_GROUP_NAME": f"g{uuid.uuid4().hex[:8]}",
                    # No session left behind on the shared broker.
                    "MQTT_PERSISTENT_SESSION": "false",
                }
            )
            args = ["--run", "--workers", "2"]
            self.ready = "subscribed to"
        else:
            args = ["--queue-work", "--workers", "2", "--sleep", "0.2", "--queue", "tree"]
            self.ready = "started: connection="
        self.log_path = tmp_path / f"{kind}.log"
        with self.log_path.open("wb") as log_file:
            self.process = subprocess.Popen(
                [sys.executable, str(MAIN), *args],
                env=env,
                cwd=PROJECT_ROOT,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # our own process group, like a shell job
            )
        self.children: set[int] = set()

    def log(self) -> str:
        return self.log_path.read_text()

    def wait_ready(self) -> None:
        wait_for(lambda: len(children_of(self.process.pid)) == 2, "two children")
        wait_for(lambda: self.log().count(self.ready) >= 2, f"both children: {self.ready!r}")
        self.children = children_of(self.process.pid)

    def cleanup(self) -> None:
        for pid in [self.process.pid, *self.children]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait()


def gone(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


@pytest.fixture(params=["queue", "run"])
def tree(request, tmp_path, mqtt_broker):
    started = Tree(request.param, tmp_path)
    yield started
    started.cleanup()


def test_children_of_both_kinds_exit_within_seconds_when_the_supervisor_is_sigkilled(tree):
    tree.wait_ready()
    os.kill(tree.process.pid, signal.SIGKILL)
    tree.process.wait()
    deadline = time.monotonic() + PARENT_DEATH_PATIENCE
    while time.monotonic() < deadline and not all(gone(pid) for pid in tree.children):
        time.sleep(0.05)
    assert all(gone(pid) for pid in tree.children), f"orphans outlived the parent:\n{tree.log()}"


def test_ctrl_c_reaches_each_child_of_both_kinds_once(tree):
    tree.wait_ready()
    os.killpg(tree.process.pid, signal.SIGINT)  # what a terminal sends its foreground job
    assert tree.process.wait(timeout=PATIENCE) == 0
    log = tree.log()
    per_child = re.findall(r" (\w+-worker-\d) \S+: .*\bSIGINT\b", log)
    assert sorted(per_child) == sorted(set(per_child)) and len(per_child) == 2, log
    assert "second SIGINT" not in log


def test_without_pdeathsig_an_orphan_notices_its_parent_is_gone(tmp_path):
    child_code = textwrap.dedent(
        f"""
        import signal, sys, time
        from support import supervisor
        supervisor._set_parent_death_signal = lambda signum: False
        supervisor.join_supervisor()
        def stop(signum, frame):
            open({str(tmp_path / "stopped")!r}, "w").write(signal.Signals(signum).name)
            sys.exit(0)
        signal.signal(signal.SIGTERM, stop)
        time.sleep(60)
        """
    )
    middle_code = textwrap.dedent(
        f"""
        import os, subprocess, sys, time
        env = dict(os.environ, {SUPERVISOR_PID_ENV}=str(os.getpid()))
        child = subprocess.Popen([sys.executable, "-c", {child_code!r}], env=env)
        print(child.pid, flush=True)
        time.sleep(60)
        """
    )
    middle = subprocess.Popen(
        [sys.executable, "-c", middle_code], cwd=PROJECT_ROOT, stdout=subprocess.PIPE, text=True
    )
    assert middle.stdout is not None
    child = int(middle.stdout.readline())
    try:
        time.sleep(0.5)  # the child is past join_supervisor and watching
        middle.kill()
        middle.wait()
        wait_for(lambda: gone(child), "the orphan to stop")
        assert (tmp_path / "stopped").read_text() == "SIGTERM"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
