"""`make bench`: run every `benchmarks/bench_*.py` module's `run()` and print ratios.

A module whose server is absent prints why and is skipped; figures are ratios
against baselines measured in the same run, since these machines are noisy.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path

from benchmarks.common import BenchResult


def main() -> int:
    """Run each benchmark module given on the command line, or all of them."""
    folder = Path(__file__).parent
    names = sys.argv[1:] or sorted(
        m.name for m in pkgutil.iter_modules([str(folder)]) if m.name.startswith("bench_")
    )
    for name in names:
        module = importlib.import_module(f"benchmarks.{name}")
        print(f"== {name}", flush=True)
        try:
            results: list[BenchResult] = module.run()
        except ConnectionError as exc:
            print(f"   skipped: {exc}")
            continue
        for result in results:
            print("   " + result.line(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
