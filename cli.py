"""The command line of main.py: every command, the options each one takes, and what runs it.

Commands are flags, exactly one per call (`python main.py --queue-work
--connection redis --queue a,b`). Each `Command` in `COMMANDS` declares its own
options; an option that belongs to another command is refused with one line,
as argparse refuses an unknown flag, and so is a value an option cannot take.
`--help` lists the commands, then each command's options.

A command's implementation lives beside its subject and is imported only when
chosen (so `--help` and `--queue-status` never load paho): a
`module:function` with the signature `command(args, settings) -> exit code`.
The namespace it gets has every option, at its default when not given.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from config.settings import ConfigError, Settings, load_settings
from support.logging_setup import configure_logging
from support.supervisor import join_supervisor

CommandFunction = Callable[[argparse.Namespace, Settings], int]
#: Checks one option's value: None when fine, else the whole one-line error.
Check = Callable[[str, Any], str | None]

#: Exit code of a command line the parser refuses.
EXIT_USAGE = 2
#: Help line of -h/--help.
HELP = "show this help and exit"
#: The queue connections a flag may name.
CONNECTIONS = ("redis", "database")


def at_least(low: int) -> Check:
    """A check refusing numbers below `low`."""
    return lambda flag, value: (
        f"{flag} must be at least {low}, got {value}" if value < low else None
    )


def not_negative(unit: str = "") -> Check:
    """A check refusing negative numbers; `unit` (e.g. "seconds") is named in the error."""
    what = f"{unit} >= 0" if unit else ">= 0"
    return lambda flag, value: f"{flag} must be {what}, got {value}" if value < 0 else None


def positive_seconds(flag: str, value: float) -> str | None:
    """Refuse a duration that is zero or negative."""
    return f"{flag} must be > 0 seconds, got {value}" if value <= 0 else None


def backoff_policy(flag: str, value: str) -> str | None:
    """Refuse a `--backoff` that is not seconds, a list of seconds or `exponential`."""
    from queues.backoff import parse_backoff

    try:
        parse_backoff(value)
    except ValueError as exc:
        return str(exc)
    return None


@dataclass(frozen=True)
class Option:
    """One option: its flag, how argparse reads it, its default and the check of its value."""

    flag: str
    help: str
    type: Callable[[str], Any] | None = str
    default: Any = None
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    dest: str | None = None
    check: Check | None = None
    hidden: bool = False  #: internal (set by a supervisor for its children), not in --help

    @property
    def attribute(self) -> str:
        """Name of the namespace attribute holding the value."""
        return self.dest or self.flag.lstrip("-").replace("-", "_")


def _switch(flag: str, help: str, hidden: bool = False) -> Option:
    """An option without a value (False unless given)."""
    return Option(flag, help, type=None, default=False, hidden=hidden)


CONNECTION = Option(
    "--connection", "queue connection (default: QUEUE_CONNECTION)", choices=CONNECTIONS
)
QUEUE = Option("--queue", "queue name(s), comma-separated in priority order", metavar="Q[,Q]")
ONE_QUEUE = Option("--queue", "only this queue", metavar="Q")
JOB_QUEUE = Option("--queue", "queue to put the job on (default: the job's own)", metavar="Q")
WORKERS = Option(
    "--workers",
    "number of processes (default 1)",
    int,
    default=1,
    metavar="N",
    check=at_least(1),
)
SLEEP = Option(
    "--sleep",
    "seconds to wait for a job when idle (default 3)",
    float,
    default=3.0,
    metavar="S",
    check=not_negative(),
)
MAX_JOBS = Option(
    "--max-jobs",
    "exit after N jobs (0: never)",
    int,
    default=0,
    metavar="N",
    check=not_negative(),
)
MAX_TIME = Option(
    "--max-time",
    "exit after S seconds (0: never)",
    float,
    default=0,
    metavar="S",
    check=not_negative(),
)
MEMORY = Option(
    "--memory",
    "exit above this many MB (0: never)",
    int,
    default=0,
    metavar="MB",
    check=not_negative(),
)
PREFETCH = Option(
    "--prefetch",
    "most jobs a worker reserves per round trip; fewer when jobs are slow (default 64)",
    int,
    default=64,
    metavar="N",
    check=at_least(1),
)
CONCURRENCY = Option(
    "--concurrency",
    "jobs run at once by threads of one worker process, for I/O-bound jobs (default 1)",
    int,
    default=1,
    metavar="N",
    check=at_least(1),
)
TIMEOUT = Option(
    "--timeout", "default job timeout in seconds", float, metavar="S", check=positive_seconds
)
TRIES = Option("--tries", "default max tries of a job", int, metavar="N", check=at_least(1))
BACKOFF = Option(
    "--backoff",
    "default backoff: seconds, a list like 1,5,30, or exponential",
    metavar="POLICY",
    check=backoff_policy,
)
DATA = Option("--data", "job data as a JSON object (default {})", default="{}", metavar="JSON")
DELAY = Option(
    "--delay",
    "seconds before the job is due",
    float,
    default=0,
    metavar="S",
    check=not_negative("seconds"),
)
FROM = Option("--from", "connection to move jobs from", choices=CONNECTIONS, dest="from_connection")
TO = Option("--to", "connection to move jobs to", choices=CONNECTIONS, dest="to_connection")
OLDER_THAN = Option(
    "--older-than",
    "only failed jobs older than this many days",
    float,
    metavar="DAYS",
    check=not_negative("days"),
)
JSON = _switch("--json", "machine-readable output")
ONCE = _switch("--once", "run one job (if one is waiting) and exit")
STOP_WHEN_EMPTY = _switch("--stop-when-empty", "exit once no job is waiting")
FORCE = _switch("--force", "do not ask for confirmation")
RANGE = Option(
    "--range",
    "retry the failed jobs with ids FIRST to LAST (database failed store)",
    metavar="FIRST-LAST",
)
HOURS = Option(
    "--hours",
    "only failed jobs older than this many hours",
    float,
    metavar="H",
    check=not_negative("hours"),
)
CLEAR_CONNECTION = Option(
    "--connection", "queue connection of the queue (default: QUEUE_CONNECTION)", choices=CONNECTIONS
)

# What a `--run --workers N` supervisor tells each child (core/app.py child_arguments).
CHILD_INDEX = Option("--child-index", "", int, hidden=True)
CHILD_COUNT = Option("--child-count", "", int, hidden=True)
CHILD_CLIENT_ID = Option("--child-client-id", "", hidden=True)
CHILD_MQTT_HOST = Option("--child-mqtt-host", "", hidden=True)
CHILD_MQTT_PORT = Option("--child-mqtt-port", "", int, hidden=True)
CHILD_NO_SHARED = _switch("--child-no-shared", "", hidden=True)
CHILD_ROUTES = Option("--child-routes", "", hidden=True)


def run_command(args: argparse.Namespace, settings: Settings) -> int:
    """`--run`: route MQTT messages (core/app.py), with the queues configured for `dispatch()`.

    Handlers' dispatches go through the queues' outbox: stored per batch of
    messages before their acks (queues/outbox.py). The process's server gets the
    queue backend's readiness and depth gauges, and the dashboard when DASHBOARD=true.
    """
    from core.app import run_command as run_app
    from queues import connections
    from queues.outbox import DispatchOutbox
    from support.ops import Ops

    connections.configure(settings)

    def ops_setup(ops: Ops) -> None:
        from queues.queue_metrics import QueueDepths

        if settings.queue_connection != "sync" and ops.metrics is not None:
            depths = QueueDepths(lambda: [connections.get_driver(None, settings)])
            ops.metrics.add_collector(depths)
            ops.health.add_readiness("queue", depths.check)
        if settings.dashboard:
            mount_dashboard(ops, settings)

    return run_app(args, settings, DispatchOutbox(), ops_setup)


def mount_dashboard(ops: Any, settings: Settings) -> None:
    """Serve the dashboard (queues/dashboard.py) on DASHBOARD_HOST:DASHBOARD_PORT of `ops`,
    with the route table of the ROUTES_PACKAGE."""
    from core.discovery import load_routes
    from core.routes_table import route_rows
    from queues.dashboard import Dashboard

    rows = route_rows(load_routes(settings.routes_package), settings.mqtt_group_name)
    dashboard = Dashboard(settings, rows)
    dashboard.mount(ops.server(settings.dashboard_host, settings.dashboard_port))


def dashboard_command(args: argparse.Namespace, settings: Settings) -> int:
    """`--dashboard`: serve the dashboard alone until SIGTERM/SIGINT (with /health)."""
    import signal
    import threading

    from queues import connections
    from support.ops import Ops

    connections.configure(settings)
    ops = Ops(settings)
    mount_dashboard(ops, settings)
    ops.health.mount(ops.server(settings.dashboard_host, settings.dashboard_port))
    try:
        urls = ops.start()
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"dashboard: {urls[0]}/" if urls else "dashboard: not served", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: stop.set())
    stop.wait()
    ops.stop()
    return 0


def version_command(args: argparse.Namespace, settings: Settings) -> int:
    """`--version`: print the framework's version."""
    print(f"mqtt-jobs {project_version()}")
    return 0


def project_version() -> str:
    """The version in pyproject.toml (the project is run from its checkout, not installed)."""
    import tomllib
    from pathlib import Path

    pyproject = Path(__file__).resolve().parent / "pyproject.toml"
    with pyproject.open("rb") as handle:
        return str(tomllib.load(handle)["project"]["version"])


def migrate_command(args: argparse.Namespace, settings: Settings) -> int:
    """`--migrate`: the queue tables (backends/migrations.py), then the app's own tables:
    every table declared on `AppBase` in `app/models.py`, when the app has one."""
    from backends.migrations import migrate_command as migrate

    return migrate(args, settings, app_tables())


def app_tables() -> list[Any]:
    """The SQLAlchemy metadata of the app's tables (`app.models.AppBase`), if any."""
    try:
        from app.models import AppBase
    except ModuleNotFoundError as exc:
        if exc.name in ("app", "app.models"):
            return []  # an app without tables of its own
        raise
    return [AppBase.metadata]


@dataclass(frozen=True)
class Command:
    """One command: its flag, what runs it, the options it takes, those it requires."""

    flag: str
    target: str | CommandFunction  #: the function, or "module:function" to import on use
    help: str
    options: tuple[Option, ...] = ()
    required: tuple[Option, ...] = ()
    metavar: str | None = None  #: the command flag takes a value (e.g. an id)
    nargs: str | None = None  #: "*": the flag takes several values (e.g. ids)
    role: str = "command"  #: the process's role in JSON log lines

    @property
    def attribute(self) -> str:
        """Name of the namespace attribute set when this command is chosen."""
        return self.flag.lstrip("-").replace("-", "_")


#: Every command of main.py, in --help order.
COMMANDS: tuple[Command, ...] = (
    Command(
        "--run",
        run_command,
        "connect to MQTT and route messages",
        (
            WORKERS,
            CHILD_INDEX,
            CHILD_COUNT,
            CHILD_CLIENT_ID,
            CHILD_MQTT_HOST,
            CHILD_MQTT_PORT,
            CHILD_NO_SHARED,
            CHILD_ROUTES,
        ),
        role="router",
    ),
    Command("--routes", "core.routes_table:routes_command", "print the route table", (JSON,)),
    Command(
        "--migrate", migrate_command, "create or upgrade the queue tables and the app's tables"
    ),
    Command(
        "--queue-work",
        "queues.commands:work_command",
        "run a queue worker",
        (
            CONNECTION,
            QUEUE,
            WORKERS,
            SLEEP,
            MAX_JOBS,
            MAX_TIME,
            MEMORY,
            TIMEOUT,
            TRIES,
            BACKOFF,
            ONCE,
            STOP_WHEN_EMPTY,
            PREFETCH,
            CONCURRENCY,
        ),
        role="worker",
    ),
    Command(
        "--schedule",
        "queues.schedule_command:schedule_command",
        "run the app's schedule (SCHEDULE_MODULE): dispatch each tick once",
        role="scheduler",
    ),
    Command(
        "--queue-status",
        "queues.commands:status_command",
        "job counts per queue",
        (CONNECTION, QUEUE, JSON),
    ),
    Command(
        "--queue-failed", "queues.commands:failed_command", "list failed jobs", (ONE_QUEUE, JSON)
    ),
    Command(
        "--queue-failed-show",
        "queues.commands:failed_show_command",
        "show one failed job",
        (JSON,),
        metavar="ID",
    ),
    Command(
        "--queue-retry",
        "queues.commands:retry_command",
        "push failed jobs back: ids, all, or --range",
        (ONE_QUEUE, RANGE),
        metavar="ID|all",
        nargs="*",
    ),
    Command(
        "--job-status",
        "queues.workflow_commands:job_status_command",
        "a job's status by id (queued, running, done, failed), or each link of a chain",
        (CONNECTION, JSON),
        metavar="ID",
    ),
    Command(
        "--batch-status",
        "queues.workflow_commands:batch_status_command",
        "a batch's progress by id (total, pending, done, failed)",
        (CONNECTION, JSON),
        metavar="ID",
    ),
    Command(
        "--queue-forget", "queues.commands:forget_command", "delete one failed job", metavar="ID"
    ),
    Command(
        "--queue-flush", "queues.commands:flush_command", "delete failed jobs", (OLDER_THAN, HOURS)
    ),
    Command(
        "--queue-clear",
        "queues.control_commands:clear_command",
        "delete every pending, delayed and reserved job of a queue",
        (CLEAR_CONNECTION, FORCE),
        metavar="QUEUE",
    ),
    Command(
        "--queue-restart",
        "queues.control_commands:restart_command",
        "make every worker exit after its current job (its supervisor starts a fresh one)",
    ),
    Command(
        "--queue-monitor",
        "queues.control_commands:monitor_command",
        "exit 3 when a queue has more than N pending jobs (for cron and alerting)",
        (CONNECTION,),
        metavar="Q:N[,Q:N]",
    ),
    Command(
        "--dispatch",
        "queues.commands:dispatch_command",
        "enqueue a registered job",
        (DATA, DELAY, JOB_QUEUE, CONNECTION),
        metavar="NAME",
    ),
    Command(
        "--queue-migrate",
        "queues.commands:migrate_command",
        "move pending and delayed jobs between connections",
        (FROM, TO, QUEUE),
        required=(FROM, TO),
    ),
    Command(
        "--dashboard",
        dashboard_command,
        "serve the dashboard on DASHBOARD_HOST:DASHBOARD_PORT",
        role="dashboard",
    ),
    Command("--version", version_command, "print the version"),
    Command(
        "--make-job",
        "support.scaffold:make_job_command",
        "write a job skeleton in app/jobs/ and its test in tests/app/",
        metavar="Name",
    ),
    Command(
        "--make-route",
        "support.scaffold:make_route_command",
        "write a route module skeleton in routes/ and its test in tests/app/",
        metavar="name",
    ),
)


def _display(option: Option) -> argparse.Action:
    """An action only for --help: the option as one command describes it."""
    return argparse.Action(
        [option.flag],
        option.attribute,
        nargs=0 if option.type is None else None,
        choices=option.choices,
        metavar=option.metavar,
        help=option.help,
    )


def _all_options() -> list[Option]:
    """Every option of every command, once each, in declaration order."""
    seen: dict[str, Option] = {}
    for command in COMMANDS:
        for option in command.options:
            seen.setdefault(option.flag, option)
    return list(seen.values())


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors, per-command option checks and help grouped by command."""

    def __init__(self) -> None:
        super().__init__(
            prog="main.py",
            usage="main.py COMMAND [OPTIONS]",
            description="MQTT-routed job framework: route MQTT topics to handlers, "
            "run queued jobs.",
            argument_default=argparse.SUPPRESS,
        )
        chosen = self.add_mutually_exclusive_group()
        self._command_actions: list[argparse.Action] = []
        for command in COMMANDS:
            if command.metavar:
                action = chosen.add_argument(
                    command.flag, metavar=command.metavar, help=command.help, nargs=command.nargs
                )
            else:
                action = chosen.add_argument(command.flag, action="store_true", help=command.help)
            self._command_actions.append(action)
        for option in _all_options():
            self._add(option)

    def _add(self, option: Option) -> None:
        help_text = argparse.SUPPRESS if option.hidden else option.help
        if option.type is None:
            self.add_argument(
                option.flag, action="store_true", dest=option.attribute, help=help_text
            )
            return
        self.add_argument(
            option.flag,
            type=option.type,
            choices=option.choices,
            metavar=option.metavar,
            dest=option.attribute,
            help=help_text,
        )

    def error(self, message: str) -> NoReturn:
        """Refuse the command line in one line on stderr (exit code 2), as for an unknown flag."""
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")

    def format_help(self) -> str:
        """Usage, the commands, then the options of each command (with that command's help)."""
        formatter = self.formatter_class(prog=self.prog)
        formatter.add_usage(self.usage, [], [])
        formatter.add_text(self.description)
        formatter.start_section("commands (choose one)")
        formatter.add_arguments(self._command_actions)
        formatter.end_section()
        for command in COMMANDS:
            shown = [_display(option) for option in command.options if not option.hidden]
            if shown:
                formatter.start_section(f"{command.flag} options")
                formatter.add_arguments(shown)
                formatter.end_section()
        formatter.start_section("help")
        formatter.add_arguments([argparse.Action(["-h", "--help"], "help", nargs=0, help=HELP)])
        formatter.end_section()
        return formatter.format_help()

    def parse_command(self, argv: Sequence[str] | None) -> tuple[Command, argparse.Namespace]:
        """The chosen command and its arguments (every option present, defaults filled).

        Exits with one line (code 2) for no command, two commands, an option
        the command does not take, a missing required option or a wrong value.
        """
        args = self.parse_args(argv)
        given = vars(args)
        chosen = [c for c in COMMANDS if c.attribute in given]
        if not chosen:
            self.error("choose one command, for example --run or --queue-work (see --help)")
        command = chosen[0]
        options = {o.attribute: o for o in _all_options()}
        own = {o.attribute for o in command.options}
        stray = [options[name].flag for name in given if name in options and name not in own]
        if stray:
            self.error(f"{command.flag} does not take {', '.join(stray)}")
        missing = [o.flag for o in command.required if o.attribute not in given]
        if missing:
            self.error(f"{command.flag} needs {' and '.join(missing)}")
        for option in command.options:
            if option.check is not None and option.attribute in given:
                problem = option.check(option.flag, given[option.attribute])
                if problem:
                    self.error(problem)
        for other in COMMANDS:
            given.setdefault(other.attribute, None if other.metavar else False)
        if command.flag == "--queue-retry" and not given["queue_retry"] and "range" not in given:
            self.error("--queue-retry needs failed job ids, all, or --range FIRST-LAST")
        for name, option in options.items():
            given.setdefault(name, option.default)
        return command, args


def resolve(target: str | CommandFunction) -> CommandFunction:
    """The function implementing a command, imported if named as `module:function`."""
    if not isinstance(target, str):
        return target
    module_name, _, function_name = target.partition(":")
    command: CommandFunction = getattr(importlib.import_module(module_name), function_name)
    return command


def main(argv: Sequence[str] | None = None) -> int:
    """Run main.py with `argv`; return the process exit code."""
    process_name = join_supervisor()
    command, args = Parser().parse_command(argv)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(settings.log_level, process_name, command.role, settings.log_format)
    return resolve(command.target)(args, settings)
