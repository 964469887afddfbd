"""One logging format for every process: each line names the process that wrote it.

A process started by hand is `main`; a supervised child carries the name its
supervisor gave it (`run-worker-0`, `queue-worker-1`, see support/supervisor.py),
so the interleaved output of `--workers N` tells the children apart.

`LOG_FORMAT=text` (the default) writes one readable line per record;
`LOG_FORMAT=json` writes one JSON object per line with `time` (UTC, ISO 8601),
`level`, `logger`, `role` (router, worker, dashboard, command), `process` (its
name), `worker` (the number of a supervised child, else null), `message`, and
`job_id` / `job` / `topic` when the record was logged while a job or a message
was being handled (support/log_context.py); `exception` holds a traceback.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime

from support import log_context

#: Name in the log lines of a process no supervisor started.
MAIN_PROCESS_NAME = "main"
#: Log line layout; `{process}` is replaced by the process's name.
LOG_FORMAT = "%(asctime)s %(levelname)s {process} %(name)s: %(message)s"
#: Role of a process that runs an operator command (not --run, --queue-work, --dashboard).
DEFAULT_ROLE = "command"
#: The number at the end of a supervised child's name (`queue-worker-3` is worker 3).
_WORKER_NUMBER = re.compile(r"-(\d+)$")

_process_name = MAIN_PROCESS_NAME


def process_name() -> str:
    """The name this process logs under (`main`, or `queue-worker-1` in a supervised child)."""
    return _process_name


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object on one line (see the module docstring)."""

    def __init__(self, role: str, process_name: str) -> None:
        super().__init__()
        self.role = role
        self.process_name = process_name
        number = _WORKER_NUMBER.search(process_name)
        self.worker = int(number.group(1)) if number else None

    def format(self, record: logging.LogRecord) -> str:
        """The record as a JSON object: fixed fields, then the bound job or topic."""
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "role": self.role,
            "process": self.process_name,
            "worker": self.worker,
            "message": record.getMessage(),
        }
        entry.update(log_context.current())
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure_logging(
    level: str,
    process_name: str | None = None,
    role: str = DEFAULT_ROLE,
    log_format: str = "text",
) -> None:
    """Send records at `level` and above to stderr in `log_format`, replacing prior setup.

    `process_name` (default `MAIN_PROCESS_NAME`) appears in every line; `role`
    only in JSON lines (the text line's logger name already says it).
    """
    global _process_name
    name = _process_name = process_name or MAIN_PROCESS_NAME
    if log_format == "json":
        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter(role, name))
        logging.basicConfig(level=level, handlers=[handler], force=True)
        return
    layout = LOG_FORMAT.replace("{process}", name.replace("%", "%%"))
    logging.basicConfig(level=level, format=layout, force=True)
