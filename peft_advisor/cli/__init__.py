"""The headless front end: parse flags, call the core, print data.

stdout is data (tables or JSON) and nothing else; diagnostics go to stderr. Every user error is
one line on stderr and an exit code from `ExitCode`, never a traceback. With no subcommand the
terminal UI opens.

Each group of subcommands lives in its own module with a `register(subparsers)` function, so the
commands can grow without this file growing.
"""

from __future__ import annotations

import argparse
import sys

from peft_advisor import __version__
from peft_advisor.core.errors import ExitCode, UserError

# Modules that contribute subcommands; each has register(subparsers). A command named on the
# command line imports only its own module: `recommend` must start fast (a cold run < 0.3 s).
COMMANDS = {
    "recommend": "peft_advisor.cli.advise",
    "estimate": "peft_advisor.cli.advise",
    "data": "peft_advisor.cli.data_cmd",
    "matrix": "peft_advisor.cli.matrix_cmd",
    "probe": "peft_advisor.cli.probe_cmd",
    "export": "peft_advisor.cli.recipes_cmd",
    "validate": "peft_advisor.cli.recipes_cmd",
    "train": "peft_advisor.cli.runs_cmd",
    "monitor": "peft_advisor.cli.runs_cmd",
    "runs": "peft_advisor.cli.runs_cmd",
    "bench": "peft_advisor.cli.bench_cmd",
}


class _Parser(argparse.ArgumentParser):
    """argparse prints usage plus an error; we keep its one-line error and exit code 2."""

    def error(self, message: str):  # noqa: D401
        where = self.prog.removeprefix("peft-advisor").strip()  # "train" for a subcommand's parser
        raise UserError(f"{where}: {message}" if where else message, ExitCode.USAGE)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole parser, or (for speed) only the module that defines `command`."""
    import importlib

    parser = _Parser(prog="peft-advisor", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"peft-advisor {__version__}")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser, metavar="COMMAND")
    modules = [COMMANDS[command]] if command in COMMANDS else list(dict.fromkeys(COMMANDS.values()))
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name != name:  # a real import error inside the module: surface it
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if not argv:
            return _open_tui()
        args = _parse(argv)
        if not getattr(args, "func", None):
            build_parser().print_help(sys.stderr)
            return ExitCode.USAGE
        return int(args.func(args) or 0)
    except UserError as err:
        print(f"peft-advisor: {err}", file=sys.stderr)
        return int(err.code)
    except KeyboardInterrupt:
        print("peft-advisor: interrupted", file=sys.stderr)
        return int(ExitCode.INTERRUPTED)
    except BrokenPipeError:  # `peft-advisor matrix | head`
        return int(ExitCode.OK)


def _parse(argv: list[str]) -> argparse.Namespace:
    try:
        return build_parser(argv[0]).parse_args(argv)
    except UserError as err:  # argparse reports a subcommand's extra arguments from the top parser
        if argv[0] in COMMANDS and str(err).startswith("unrecognized arguments"):
            raise UserError(f"{argv[0]}: {err}", err.code) from None
        raise


def _open_tui(**kwargs) -> int:
    from peft_advisor.tui.app import run_app

    return int(run_app(**kwargs) or 0)
