"""One logging format for the main process and every `--workers` child process."""

from __future__ import annotations

import logging

#: Log line layout; the process name tells `--workers N` children apart.
LOG_FORMAT = "%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s"


def configure_logging(level: str) -> None:
    """Send records at `level` and above to stderr in `LOG_FORMAT`, replacing prior setup."""
    logging.basicConfig(level=level, format=LOG_FORMAT, force=True)
