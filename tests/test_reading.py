"""A newcomer's questions answered by folder and file names, as the README's layout says.

Each question's answer is read from README's "Where things are" list; the test
holds that the path exists, that its name says what it holds (the hint), and
that it really holds it (the evidence, a pattern found in the file).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: question -> (a word the path must contain, a pattern the answer's code must contain)
QUESTIONS: dict[str, tuple[str, str]] = {
    "Where is the command line?": ("cli", r"^COMMANDS\b"),
    "Where does a message become a `Message`?": ("delivery", r"\bMessage\("),
    "Where are the handler threads, batches and acks (the intake)?": ("intake", r"^class Intake\b"),
    "Where is the router?": ("router", r"^class Router\b"),
    "Where is `dispatch()`?": ("dispatch", r"^def dispatch\("),
    "Where is the worker loop?": ("worker", r"^class Worker\b"),
    "Where do idle database workers get woken?": ("wakeup", r"^class LocalWaker\b"),
    "Where is the job middleware (rate limits, overlap locks)?": (
        "job_middleware",
        r"^class WithoutOverlapping\b",
    ),
    "Where are the locks and rate limits shared by processes?": (
        "coordination",
        r"^class Coordinator\b",
    ),
    "Where is the scheduler?": ("schedule", r"^class Scheduler\b"),
    "Where are the operator commands?": ("commands", r"^status_command = "),
    "Where are the metrics of the router?": ("metrics", r"^class RouterMetrics\b"),
    "Where are the metrics, health and board entry of a worker?": (
        "worker_monitor",
        r"^class WorkerMonitor\b",
    ),
    "Where is the dashboard?": ("dashboard", r"^class Dashboard\b"),
    "Where is the HTTP server of /metrics, /health and /ready?": (
        "http_server",
        r"^class HttpServer\b",
    ),
    "Where are the Redis scripts?": ("redis_scripts", r"^-- pop\.lua: .*\n(?s:.*)redis\.call\("),
    "Where is the SQL engine?": ("sql_engine", r"^def get_engine\("),
    "Where are the queue tables?": ("tables", r'__tablename__ = "queue_jobs"'),
    "Where is `--migrate`?": ("migrat", r"^def migrate_command\("),
    "Where is the Redis client?": ("redis", r"^def get_redis\("),
    "Where are the Sentinel and Cluster clients built?": (
        "redis_client",
        r"^\s+sentinel = Sentinel\(",
    ),
    "Where are a queue's Redis keys named (plain and cluster)?": ("redis", r"^def hash_tag\("),
    "Where do jobs publish MQTT?": ("publisher", r"^def get_publisher\("),
    "Where is the supervisor?": ("supervisor", r"^class Supervisor\b"),
    "Where is the backoff?": ("backoff", r"^def full_jitter\("),
    "Where are chains and batches?": ("workflows", r"^def chain\("),
    "Where is the hook for job outcomes?": ("lifecycle", r"^def before_settle\("),
    "Where is the test client for your app's tests?": ("testing", r"^class TestClient\b"),
    "Where is the fault harness (`make faults`)?": ("faults", r"^FAMILIES = "),
    "Where do idle PostgreSQL workers wait for NOTIFY?": ("wakeup", r"^class PostgresWaker\b"),
}


def readme_answers() -> dict[str, str]:
    """Question -> path, from the README's "Where things are" list."""
    text = (ROOT / "README.md").read_text()
    return dict(re.findall(r"^- (Where [^\n]*\?) `([^`]+)`$", text, flags=re.M))


def answer_text(path: Path) -> str:
    """The code at `path`: a file, or every file of a folder."""
    if path.is_dir():
        return "\n".join(f.read_text() for f in sorted(path.iterdir()) if f.is_file())
    return path.read_text()


@pytest.mark.parametrize("question", list(QUESTIONS))
def test_the_readme_answers_where_things_are_and_the_answer_holds(question):
    hint, evidence = QUESTIONS[question]
    answers = readme_answers()
    assert question in answers, f"README's 'Where things are' list lacks {question!r}"
    path = ROOT / answers[question]
    assert path.exists(), f"{question} README says {answers[question]}, which does not exist"
    assert hint in answers[question], f"the name {answers[question]} does not say {hint!r}"
    assert re.search(evidence, answer_text(path), flags=re.M), (
        f"{answers[question]} does not hold the answer to {question!r}"
    )


def test_the_readme_asks_only_questions_this_test_checks():
    assert set(readme_answers()) == set(QUESTIONS)
