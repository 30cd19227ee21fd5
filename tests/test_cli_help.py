"""`--help` is written for the user, and bare `peft-advisor` without a terminal prints it and exits
instead of drawing the app into a pipe (item 3 of issue 14)."""

from __future__ import annotations

import argparse
import subprocess
import sys

from peft_advisor.cli import build_parser
from peft_advisor.core.errors import ExitCode


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "peft_advisor", *args], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=60)


def test_bare_command_without_a_terminal_prints_help_and_exits():
    proc = _cli()
    assert proc.returncode == ExitCode.USAGE
    assert proc.stdout == ""  # stdout is data; no escape codes either
    assert "\x1b" not in proc.stderr
    assert "usage: peft-advisor" in proc.stderr
    assert proc.stderr.rstrip().splitlines()[-1] == "peft-advisor: no COMMAND given and no terminal to open the app on"


def test_help_says_that_the_command_alone_opens_the_app():
    proc = _cli("--help")
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split())
    assert "Run `peft-advisor` alone, on a terminal, to open the app" in text
    assert "headless front end" not in text  # the module's docstring is for the project, not the user
    for command in ("recommend", "train", "runs", "merge", "try"):
        assert f"\n    {command}" in proc.stdout


def _subparsers(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            yield from action.choices.items()


def test_every_flag_has_help_text():
    missing = [f"{name} {'/'.join(a.option_strings)}"
               for name, sub in _subparsers(build_parser()) for a in sub._actions
               if a.option_strings and not a.help and a.help is not argparse.SUPPRESS]
    assert missing == []


def test_the_apps_data_flag(monkeypatch, tmp_path):
    """`peft-advisor --data PATH` opens the app with that data (checked first); a missing file is
    one line (exit 8), and --data before a command is said to belong after it."""
    from peft_advisor import cli

    missing = _cli("--data", str(tmp_path / "nope.jsonl"))
    assert missing.returncode == ExitCode.BAD_DATA
    assert missing.stderr == f"peft-advisor: data: no such file or folder: {tmp_path / 'nope.jsonl'}\n"
    misplaced = _cli("--data", "demo", "recommend")
    assert misplaced.returncode == ExitCode.USAGE and misplaced.stderr.count("\n") == 1
    assert "put it after the command: peft-advisor recommend --data PATH" in misplaced.stderr
    piped = _cli("--data", "demo")
    assert piped.returncode == ExitCode.USAGE and "no terminal to open the app on" in piped.stderr

    opened = {}
    monkeypatch.setattr(cli, "_on_terminal", lambda: True)
    monkeypatch.setattr(cli, "_open_tui", lambda **kwargs: opened.update(kwargs) or 0)
    data = tmp_path / "rows.jsonl"
    data.write_text('{"text": "x"}\n')
    none = {"data.columns": "", "data.config": "", "data.split": ""}
    assert cli.main(["--data", str(data)]) == 0
    assert opened == {"data": str(data), "packing": False, "data_choice": none}
    assert cli.main(["--data", str(data), "--packing", "--columns", "text=body"]) == 0
    assert opened == {"data": str(data), "packing": True, "data_choice": {**none, "data.columns": "text=body"}}
    alone = _cli("--packing")
    assert alone.returncode == ExitCode.USAGE and alone.stderr == (
        "peft-advisor: --packing goes with --data: peft-advisor --data PATH --packing\n")
    alone = _cli("--columns", "text=body")
    assert alone.returncode == ExitCode.USAGE and alone.stderr == (
        "peft-advisor: --columns goes with --data: peft-advisor --data PATH --columns FIELD=COLUMN,...\n")
