"""Command line of `main.py`: parse flags, load settings, run one command.

Each command lives in the module that owns its subject and has the signature
`command(args, settings) -> exit code`; this module only parses and routes.
A `ConfigError` or a bad argument ends the run with one line on stderr and a
non-zero exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from config.settings import ConfigError, Settings, load_settings
from core.logging_setup import configure_logging

Command = Callable[[argparse.Namespace, Settings], int]

#: flag attribute -> "module:function" implementing it, checked in this order.
COMMANDS: dict[str, str] = {
    "run": "core.app:run_command",
    "routes": "core.routes_table:routes_command",
    "migrate": "core.database:migrate_command",
    "queue_work": "queues.cli:work_command",
    "queue_status": "queues.cli:status_command",
    "queue_failed": "queues.cli:failed_command",
    "queue_failed_show": "queues.cli:failed_show_command",
    "queue_retry": "queues.cli:retry_command",
    "queue_forget": "queues.cli:forget_command",
    "queue_flush": "queues.cli:flush_command",
    "dispatch": "queues.cli:dispatch_command",
    "queue_migrate": "queues.cli:migrate_command",
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of main.py, with every command and option."""
    parser = argparse.ArgumentParser(
        prog="main.py",
        description="MQTT-routed job framework: route MQTT topics to handlers, run queued jobs.",
    )
    commands = parser.add_argument_group("commands (exactly one)")
    commands.add_argument("--run", action="store_true", help="connect to MQTT and route messages")
    commands.add_argument("--routes", action="store_true", help="print the route table")
    commands.add_argument("--migrate", action="store_true", help="create the queue tables")
    commands.add_argument("--queue-work", action="store_true", help="run a queue worker")
    commands.add_argument("--queue-status", action="store_true", help="job counts per queue")
    commands.add_argument("--queue-failed", action="store_true", help="list failed jobs")
    commands.add_argument("--queue-failed-show", metavar="ID", help="show one failed job")
    commands.add_argument("--queue-retry", metavar="ID|all", help="push failed job(s) back")
    commands.add_argument("--queue-forget", metavar="ID", help="delete one failed job")
    commands.add_argument(
        "--queue-flush", action="store_true", help="delete failed jobs (see --older-than)"
    )
    commands.add_argument("--dispatch", metavar="NAME", help="enqueue a registered job")
    commands.add_argument(
        "--queue-migrate", action="store_true", help="move pending/delayed jobs between drivers"
    )

    options = parser.add_argument_group("options")
    options.add_argument("--connection", choices=("redis", "database"), help="queue connection")
    options.add_argument("--queue", help="queue name(s), comma-separated in priority order")
    options.add_argument("--workers", type=int, default=1, help="number of processes")
    options.add_argument("--sleep", type=float, default=3.0, help="seconds to wait when idle")
    options.add_argument("--max-jobs", type=int, default=0, help="exit after N jobs (0: never)")
    options.add_argument("--max-time", type=float, default=0, help="exit after S seconds")
    options.add_argument("--memory", type=int, default=0, help="exit above this many MB")
    options.add_argument("--timeout", type=float, help="default job timeout in seconds")
    options.add_argument("--tries", type=int, help="default max tries of a job")
    options.add_argument("--backoff", help="default backoff: seconds or a list like 1,5,30")
    options.add_argument("--data", default="{}", help="job data as a JSON object (--dispatch)")
    options.add_argument("--delay", type=float, default=0, help="seconds before the job is due")
    options.add_argument("--from", dest="from_connection", choices=("redis", "database"))
    options.add_argument("--to", dest="to_connection", choices=("redis", "database"))
    options.add_argument("--older-than", type=float, help="days (--queue-flush)")
    options.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def resolve(target: str) -> Command:
    """Import the `module:function` implementing a command."""
    module_name, _, function_name = target.partition(":")
    command: Command = getattr(importlib.import_module(module_name), function_name)
    return command


def main(argv: Sequence[str] | None = None) -> int:
    """Run main.py with `argv`; return the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    chosen = [name for name in COMMANDS if getattr(args, name) not in (None, False)]
    if len(chosen) != 1:
        parser.print_usage(sys.stderr)
        print(
            "error: choose exactly one command, for example --run or --queue-work", file=sys.stderr
        )
        return 2
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    return resolve(COMMANDS[chosen[0]])(args, settings)
