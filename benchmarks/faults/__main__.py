"""`make faults`: kill, restart and poison the real system, count from outside, print
one table, write benchmarks/results/faults.json; exit 1 if any scenario lost a job
or broke its stated expectation.

    python -m benchmarks.faults                 # every scenario (FAULTS_SCALE scales them)
    python -m benchmarks.faults --only 1,4      # scenarios whose name starts with 1 or 4
    python -m benchmarks.faults --readme        # README's delivery table from faults.json
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

from benchmarks.faults.common import Outcome, scale
from benchmarks.faults.readme import rewrite_readme
from benchmarks.faults.scenarios import Case, all_cases
from benchmarks.faults.table import format_table, write_results


def _selected(cases: list[Case], only: str | None, drivers: str | None) -> list[Case]:
    prefixes = [p.strip() for p in only.split(",")] if only else None
    allowed = drivers.split(",") if drivers else None
    return [
        case
        for case in cases
        if (prefixes is None or any(case.scenario.startswith(p + " ") for p in prefixes))
        and (allowed is None or case.driver in allowed)
    ]


def _run_case(case: Case, folder: Path) -> Outcome:
    try:
        return case.run(folder)
    except Exception as exc:  # a broken scenario is a failed row, not a crash
        traceback.print_exc()
        return Outcome(case.scenario, case.driver, 0, 0, 0, 0, 0, 0, case.expectation,
                       verdict="FAIL", explanation=f"harness error: {exc!r}"[:300])  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Run the selected scenarios; 0 when every one held its expectation."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.faults")
    parser.add_argument("--only", help="scenario numbers, comma-separated (e.g. 1,4)")
    parser.add_argument("--drivers", help="drivers, comma-separated (redis,mariadb,sqlite)")
    parser.add_argument(
        "--readme",
        action="store_true",
        help="rewrite README's delivery-guarantee table from benchmarks/results/faults.json",
    )
    args = parser.parse_args(argv)
    if args.readme:
        print(rewrite_readme())
        return 0
    cases = _selected(all_cases(), args.only, args.drivers)
    if not cases:
        parser.error("no scenario matches --only/--drivers")
    work = Path(tempfile.mkdtemp(prefix="faults-"))
    started = time.monotonic()
    rows: list[Outcome] = []
    for index, case in enumerate(cases):
        print(f"== {case.scenario} on {case.driver}", flush=True)
        row = _run_case(case, work / f"{index:02d}-{case.driver}")
        print(
            f"   {row.verdict}: {row.explanation or row.expectation} ({row.seconds} s)", flush=True
        )
        rows.append(row)
    seconds = time.monotonic() - started
    write_results(rows, scale(), seconds)
    print()
    print(format_table(rows))
    failed = [row for row in rows if row.verdict == "FAIL"]
    print(f"\n{len(rows)} runs in {seconds:.0f} s at FAULTS_SCALE={scale()}; {len(failed)} failed")
    if failed:
        print(f"logs kept in {work}")
        return 1
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
