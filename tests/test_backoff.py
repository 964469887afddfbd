"""support/backoff.py: the one full-jitter backoff every sleeping retry loop uses."""

from __future__ import annotations

import ast
import random

import pytest

from backends.redis_client import RETRY_BACKOFF_CAP, JitteredBackoff
from support.backoff import Backoff, full_jitter
from tests.test_layers import EXEMPT, ROOT, project_parts


def test_full_jitter_stays_under_a_ceiling_that_doubles_up_to_the_cap():
    rng = random.Random(3)
    for attempt, ceiling in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.5), (200, 0.5)]:
        delays = [full_jitter(attempt, 0.1, 0.5, rng) for _ in range(200)]
        assert all(0.0 <= delay <= ceiling for delay in delays)
        assert max(delays) > ceiling * 0.8, "the whole range [0, ceiling] is used"


def test_full_jitter_spreads_processes_that_failed_together():
    delays = {round(full_jitter(3, 1.0, 30.0, random.Random(seed)), 6) for seed in range(20)}
    assert len(delays) == 20


def test_attempts_below_one_count_as_the_first():
    assert full_jitter(0, 1.0, 30.0, random.Random(1)) <= 1.0
    assert full_jitter(-5, 1.0, 30.0, random.Random(1)) <= 1.0


def test_backoff_grows_with_consecutive_failures_and_starts_over_after_reset():
    backoff = Backoff(1.0, 8.0, random.Random(5))
    ceilings = []
    for _ in range(6):
        delay = backoff.next_delay()
        ceilings.append(min(8.0, 2.0 ** (backoff.failures - 1)))
        assert delay <= ceilings[-1]
    assert backoff.failures == 6 and ceilings[-1] == 8.0
    backoff.reset()
    assert backoff.failures == 0
    assert backoff.next_delay() <= 1.0


def test_backoff_refuses_negative_seconds():
    with pytest.raises(ValueError, match="seconds >= 0"):
        Backoff(-1.0, 5.0)


def test_redis_connection_retries_pause_with_the_same_full_jitter():
    pauses = [JitteredBackoff().compute(failures) for failures in (1, 2, 3, 9) for _ in range(50)]
    assert all(0 <= pause <= RETRY_BACKOFF_CAP for pause in pauses)
    assert len(set(pauses)) > 100


def hand_written_backoffs(source: str) -> list[int]:
    """Lines drawing a random delay or doubling one: what only support/backoff.py may do."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            name = getattr(node.func, "attr", getattr(node.func, "id", ""))
            if name in ("uniform", "ExponentialBackoff", "FullJitterBackoff"):
                lines.append(node.lineno)
        elif (
            isinstance(node, ast.BinOp)
            and isinstance(node.op, ast.Pow)
            and isinstance(node.left, ast.Constant)
            and node.left.value in (2, 2.0)
        ):
            lines.append(node.lineno)
    return lines


def test_no_retry_loop_writes_its_own_backoff():
    own = ROOT / "support" / "backoff.py"
    found = [
        f"{path.relative_to(ROOT)}:{line}"
        for part, files in project_parts().items()
        if part not in EXEMPT
        for path in files
        if path != own
        for line in hand_written_backoffs(path.read_text())
    ]
    assert found == [], "use support.backoff (full_jitter or Backoff) instead"
    assert hand_written_backoffs("time.sleep(0.05 * 2 ** (attempt - 1))") == [1]
    assert hand_written_backoffs("time.sleep(random.uniform(0, cap))") == [1]
