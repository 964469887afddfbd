"""Progress bars for long operator commands (`--queue-migrate`, `--queue-retry all`, ...).

A bar is drawn on stderr only when stderr is a terminal: in cron, CI or a pipe
the command prints its one result line and nothing else.
"""

from __future__ import annotations

import sys
from typing import cast

from tqdm import tqdm

#: Seconds between two redraws of a bar.
REDRAW_INTERVAL = 0.2


def progress_bar(description: str, total: int | None = None, unit: str = "job") -> tqdm[None]:
    """A bar counting `unit`s towards `total` (None: a counter without an end).

    Use as a context manager and call `update(n)`; it vanishes when closed.
    """
    bar = tqdm(
        total=total,
        desc=description,
        unit=unit,
        file=sys.stderr,
        disable=not sys.stderr.isatty(),
        leave=False,
        mininterval=REDRAW_INTERVAL,
        dynamic_ncols=True,
    )
    return cast("tqdm[None]", bar)
