"""`python main.py --make-job Name` and `--make-route name`: a documented skeleton and its test.

`--make-job SendReport` writes `app/jobs/send_report.py` (in the JOBS_PACKAGE)
and `tests/app/test_send_report.py`; `--make-route fleet` writes
`routes/fleet.py` (in the ROUTES_PACKAGE) and `tests/app/test_fleet_routes.py`.
Each skeleton says what to fill in, and its test passes as written (with no
server), so `make test` stays green until you change the behaviour. An
existing file is never overwritten.
"""

from __future__ import annotations

import argparse
import keyword
import re
import sys
from pathlib import Path

from config.settings import PROJECT_ROOT, Settings

#: Exit code of a name that cannot be used (or a file that exists already).
EXIT_USAGE = 2
#: Where the app's tests go, under the project root.
APP_TESTS = Path("tests") / "app"

JOB_TEMPLATE = '''\
"""`{name}`: TODO say what this job does and who dispatches it."""

from __future__ import annotations

import logging

from queues import Job

logger = logging.getLogger(__name__)


class {name}(Job):
    """TODO: what one run does. A job may run twice (at-least-once): make that harmless."""

    queue = "default"  # workers take it with --queue default
    max_tries = 3  # attempts before failed() runs and the job goes to the failed store
    backoff = "exponential"  # seconds between attempts: a number, a list, or "exponential"
    timeout = 30  # seconds one attempt may run

    # Its arguments, `{name}(subject_id="s1")`: JSON values or pydantic models.
    # A declared argument without a default is required at dispatch.
    subject_id: str

    def handle(self) -> None:
        """Do the work; an exception fails this attempt (it is retried)."""
        logger.info("%s for %s (attempt %d)", type(self).__name__, self.subject_id, self.attempts)

    def failed(self, exc: BaseException) -> None:
        """Called once, after the last attempt failed."""
        logger.error("%s for %s failed for good: %s", type(self).__name__, self.subject_id, exc)
'''

JOB_TEST_TEMPLATE = '''\
"""{name}: run for real through the sync queue, with no worker and no server."""

import logging

from {module} import {name}
from queues import dispatch
from testing import fake_queue, sync_queue


def test_{snake}_runs(caplog):
    caplog.set_level(logging.INFO)
    with sync_queue():
        dispatch({name}(subject_id="s1"))
    assert "{name} for s1 (attempt 1)" in caplog.text


def test_{snake}_goes_to_its_queue():
    with fake_queue() as queue:
        dispatch({name}(subject_id="s1"))
    queue.assert_dispatched({name}, subject_id="s1", queue="default")
'''

ROUTE_TEMPLATE = '''\
"""Routes under `{name}/`: TODO say which devices or services publish here."""

from __future__ import annotations

from pydantic import BaseModel

from core.message import Message
from core.router import Router

router = Router()  # every module of the routes package with a `router` is served


class {camel}Event(BaseModel):
    """The JSON body of a `{name}/{{device_id}}/event` message: `{{"value": 21.5}}`."""

    value: float


@router.on("{name}/{{device_id}}/event", qos=1)
def event(message: Message, body: {camel}Event) -> None:
    """TODO: handle one event; dispatch a job for anything slow or fallible.

    A body that does not fit {camel}Event never gets here: it is dead-lettered.
    """
    device = message.params["device_id"]
    message.publish(f"{name}/{{device}}/received", {{"device": device, "received": body.value}})
'''

ROUTE_TEST_TEMPLATE = '''\
"""{module_path}: its routes fed in-process by the test client, no broker."""

from {module} import router
from testing import TestClient


def test_an_event_is_handled_and_answered():
    result = TestClient(router).publish("{name}/d1/event", {{"value": 21.5}}, qos=1)
    assert result.handled
    (answer,) = result.published_to("{name}/d1/received")
    assert answer.json() == {{"device": "d1", "received": 21.5}}


def test_an_event_that_is_not_a_number_is_dead_lettered():
    result = TestClient(router).publish("{name}/d1/event", {{"value": "hot"}}, qos=1)
    assert result.dead_lettered
'''


class ScaffoldError(ValueError):
    """The name cannot be used, or a file to write exists already; one line for the operator."""


def snake_case(name: str) -> str:
    """`SendReport` -> `send_report`."""
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


def package_path(root: Path, package: str) -> Path:
    """The folder of a dotted package under the project root."""
    return root.joinpath(*package.split("."))


def make_job(name: str, settings: Settings, root: Path = PROJECT_ROOT) -> list[Path]:
    """Write the job `name` and its test; return the paths written (relative to `root`)."""
    if not re.fullmatch(r"[A-Z][A-Za-z0-9]*", name) or keyword.iskeyword(name):
        raise ScaffoldError(f"--make-job needs a class name such as SendReport, got {name!r}")
    snake = snake_case(name)
    module = f"{settings.jobs_package}.{snake}"
    job_file = package_path(root, settings.jobs_package) / f"{snake}.py"
    test_file = root / APP_TESTS / f"test_{snake}.py"
    fields = {"name": name, "snake": snake, "module": module}
    return _write(
        root,
        {job_file: JOB_TEMPLATE.format(**fields), test_file: JOB_TEST_TEMPLATE.format(**fields)},
    )


def make_route(name: str, settings: Settings, root: Path = PROJECT_ROOT) -> list[Path]:
    """Write the route module `name` and its test; return the paths written."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name) or keyword.iskeyword(name):
        raise ScaffoldError(
            f"--make-route needs a module name such as fleet or cold_rooms, got {name!r}"
        )
    route_file = package_path(root, settings.routes_package) / f"{name}.py"
    test_file = root / APP_TESTS / f"test_{name}_routes.py"
    fields = {
        "name": name,
        "camel": "".join(part.capitalize() for part in name.split("_")),
        "module": f"{settings.routes_package}.{name}",
        "module_path": route_file.relative_to(root).as_posix(),
    }
    return _write(
        root,
        {
            route_file: ROUTE_TEMPLATE.format(**fields),
            test_file: ROUTE_TEST_TEMPLATE.format(**fields),
        },
    )


def _write(root: Path, files: dict[Path, str]) -> list[Path]:
    """Write every file, or none if one exists already; the test folders become packages."""
    for path in files:
        if path.exists():
            raise ScaffoldError(f"{path.relative_to(root)} exists already; nothing was written")
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for folder in (root / "tests", root / APP_TESTS):
        marker = folder / "__init__.py"
        if not marker.exists():
            marker.write_text("")
    return [path.relative_to(root) for path in files]


def _command(kind: str, args: argparse.Namespace, settings: Settings) -> int:
    make = make_job if kind == "job" else make_route
    try:
        written = make(getattr(args, f"make_{kind}"), settings)
    except ScaffoldError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"created {' and '.join(str(path) for path in written)}")
    return 0


def make_job_command(args: argparse.Namespace, settings: Settings) -> int:
    """`--make-job Name`: write `app/jobs/name.py` and its test; 2 if the name is unusable."""
    return _command("job", args, settings)


def make_route_command(args: argparse.Namespace, settings: Settings) -> int:
    """`--make-route name`: write `routes/name.py` and its test; 2 if the name is unusable."""
    return _command("route", args, settings)
