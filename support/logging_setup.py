"""One logging format for every process: each line names the process that wrote it.

A process started by hand is `main`; a supervised child carries the name its
supervisor gave it (`run-worker-0`, `queue-worker-1`, see support/supervisor.py),
so the interleaved output of `--workers N` tells the children apart.
"""

from __future__ import annotations

import logging

#: Name in the log lines of a process no supervisor started.
MAIN_PROCESS_NAME = "main"
#: Log line layout; `{process}` is replaced by the process's name.
LOG_FORMAT = "%(asctime)s %(levelname)s {process} %(name)s: %(message)s"


def configure_logging(level: str, process_name: str | None = None) -> None:
    """Send records at `level` and above to stderr in `LOG_FORMAT`, replacing prior setup.

    `process_name` (default `MAIN_PROCESS_NAME`) appears in every line.
    """
    name = (process_name or MAIN_PROCESS_NAME).replace("%", "%%")
    logging.basicConfig(level=level, format=LOG_FORMAT.replace("{process}", name), force=True)
