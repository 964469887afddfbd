"""cli.py: one command line whose commands each declare their own options."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

from cli import COMMANDS, Command, Option, Parser
from core.app import WorkerSpec, child_arguments, spec_of_child
from tests.jobs_fixture.support import main_env, run_main

ROOT = Path(__file__).resolve().parent.parent


def parse(argv: list[str]):
    return Parser().parse_command(argv)


def refusal(argv: list[str], capsys) -> str:
    """The one stderr line of a refused command line (exit code 2)."""
    with pytest.raises(SystemExit) as exited:
        parse(argv)
    assert exited.value.code == 2
    lines: list[str] = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def sample(option: Option) -> list[str]:
    """The option on a command line with a value it accepts."""
    if option.type is None:
        return [option.flag]
    value = option.choices[0] if option.choices else "1"
    return [option.flag, value]


def invocation(command: Command) -> list[str]:
    return [command.flag, "x"] if command.metavar else [command.flag]


def test_options_of_another_command_are_refused_in_one_line_naming_them(tmp_path):
    argv = ["--queue-status", "--max-jobs", "5", "--delay", "3", "--workers", "9"]
    result = run_main([*argv, "--from", "redis"], main_env("database", tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "main.py: error: --queue-status does not take --max-jobs, --delay, --workers, --from"
    )
    assert result.stdout == ""


def test_every_command_takes_its_own_options_and_refuses_all_others(capsys):
    every = {option.flag: option for command in COMMANDS for option in command.options}
    for command in COMMANDS:
        own = [option for option in command.options if not option.hidden]
        chosen, args = parse(invocation(command) + [part for o in own for part in sample(o)])
        assert chosen is command
        for option in own:
            assert getattr(args, option.attribute) not in (None, False), option.flag
        for flag, option in every.items():
            if flag in {o.flag for o in command.options}:
                continue
            line = refusal(invocation(command) + sample(option), capsys)
            assert line == f"main.py: error: {command.flag} does not take {flag}"


def test_options_not_given_have_their_defaults_for_the_command():
    _, args = parse(["--queue-work"])
    assert (args.sleep, args.workers, args.max_jobs, args.queue, args.backoff) == (
        3.0,
        1,
        0,
        None,
        None,
    )
    assert args.queue_work is True and args.run is False and args.queue_retry is None


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], "choose one command"),
        (["--run", "--queue-work"], "not allowed with argument --run"),
        (["--queue-migrate"], "--queue-migrate needs --from and --to"),
        (["--queue-work", "--sleep", "-1"], "--sleep must be >= 0, got -1.0"),
        (["--queue-work", "--timeout", "0"], "--timeout must be > 0 seconds, got 0.0"),
        (["--dispatch", "Job", "--delay", "-2"], "--delay must be seconds >= 0, got -2.0"),
        (["--queue-flush", "--older-than", "-1"], "--older-than must be days >= 0, got -1.0"),
        (["--queue-status", "--connection", "kafka"], "invalid choice: 'kafka'"),
        (["--queue-status", "--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_a_wrong_command_line_is_refused_in_one_line(argv, expected, capsys):
    assert expected in refusal(argv, capsys)


def test_help_lists_the_commands_then_each_commands_options_under_it():
    text = Parser().format_help()
    sections = dict(re.findall(r"^(\S[^\n]*):\n((?:  [^\n]*\n?)+)", text, flags=re.M))
    assert all(command.flag in sections["commands (choose one)"] for command in COMMANDS)
    for command in COMMANDS:
        shown = [option for option in command.options if not option.hidden]
        if not shown:
            assert f"{command.flag} options" not in sections
            continue
        listed = re.findall(r"^  (--[\w-]+)", sections[f"{command.flag} options"], flags=re.M)
        assert listed == [option.flag for option in shown]
    assert "--child-" not in text, "internal flags of supervised children stay out of --help"


def documented_invocations() -> list[str]:
    """Every `main.py ...` command line in README, Makefile, compose file and Dockerfile."""
    found: list[str] = []
    readme = (ROOT / "README.md").read_text().replace("\\\n", " ")
    for line in readme.splitlines():
        for match in re.finditer(r"python main\.py ([^`#\n|;)]*)", line):
            found.append(match.group(1).replace("[", "").replace("]", "").strip())
    for match in re.finditer(r"main\.py ([^;)&\n]*)", (ROOT / "Makefile").read_text()):
        found.append(match.group(1).strip())
    for service in yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"].values():
        command = service.get("command") or []
        if "main.py" in command:
            found.append(shlex.join(command[command.index("main.py") + 1 :]))
    for cmd in re.findall(r"^CMD \[(.*)\]", (ROOT / "Dockerfile").read_text(), flags=re.M):
        found.append(" ".join(re.findall(r'"(--[^"]*)"', cmd)))
    return found


def test_every_documented_invocation_still_parses():
    invocations = documented_invocations()
    assert len(invocations) >= 15, invocations
    for text in invocations:
        argv = [part.replace("ID|all", "all") for part in shlex.split(text)]
        argv = [part if part != "N" else "4" for part in argv]
        if argv == ["--help"]:
            with pytest.raises(SystemExit) as exited:
                parse(argv)
            assert exited.value.code == 0
            continue
        command, _ = parse(argv)
        assert command.flag == argv[0], text


def test_a_run_child_reads_back_exactly_the_spec_its_supervisor_wrote():
    for shared in (True, False):
        spec = WorkerSpec(
            index=1,
            count=3,
            client_id="app-1",
            mqtt_host="::1",
            mqtt_port=18830,
            shared_supported=shared,
            routes_package="my_routes",
        )
        command, args = parse(child_arguments(spec))
        assert command.flag == "--run"
        assert spec_of_child(args) == spec
