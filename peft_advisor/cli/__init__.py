"""The headless front end: parse flags, call the core, print data (the user-facing words are DESCRIPTION).

stdout is data (tables or JSON) and nothing else; diagnostics go to stderr. Every user error is
one line on stderr and an exit code from `ExitCode`, never a traceback. With no subcommand the
terminal UI opens, on a terminal; without one (a pipe, a script, CI) the help is printed instead.

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
    "runs": "peft_advisor.cli.runs_list",
    "bench": "peft_advisor.cli.bench_cmd",
    "merge": "peft_advisor.cli.merge_cmd",
    "try": "peft_advisor.cli.try_cmd",
}


DESCRIPTION = """\
Pick the fine-tuning method that fits your GPU, export it as a recipe, train it and watch it.

Run `peft-advisor` alone, on a terminal, to open the app (advisor, recipe, monitor and runs
screens; `peft-advisor --data PATH` advises from that data, as recommend --data); give a COMMAND
to work without it. `peft-advisor COMMAND --help` lists its flags."""

EPILOG = """\
examples:
  peft-advisor recommend --vram 12 --model qwen3-8b --export recipe.toml
  peft-advisor train recipes/demo/lora.toml
  peft-advisor runs
  peft-advisor try runs/demo-lora "What is 12+7?"

Errors are one line on stderr with an exit code: 2 usage, 3 unknown model, 7 bad recipe,
8 bad data, 9 would overwrite, 10 training failed, 11 out of GPU memory, 130 interrupted."""


class _Parser(argparse.ArgumentParser):
    """argparse prints usage plus an error; we keep its one-line error and exit code 2."""

    def error(self, message: str):  # noqa: D401
        where = self.prog.removeprefix("peft-advisor").strip()  # "train" for a subcommand's parser
        raise UserError(f"{where}: {message}" if where else message, ExitCode.USAGE)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole parser, or (for speed) only the module that defines `command`."""
    import importlib

    parser = _Parser(prog="peft-advisor", description=DESCRIPTION, epilog=EPILOG,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"peft-advisor {__version__}")
    parser.add_argument("--data", dest="app_data", metavar="PATH",
                        help="with no COMMAND: open the app advising from this training data (a file, a folder, "
                             "demo or a cached Hub id), as recommend --data does")
    parser.add_argument("--packing", dest="app_packing", action="store_true",
                        help="with --data: rows packed into seq len tokens, as recommend --packing")
    for flag, what in (("--columns", "your columns as the format's fields, e.g. instruction=question,output=answer"),
                       ("--data-config", "a Hub dataset's configuration (subset)"),
                       ("--data-split", "the split trained on (default train)")):
        parser.add_argument(flag, dest="app_" + flag[2:].replace("-", "_"), default="", help=f"with --data: {what}",
                            metavar="FIELD=COLUMN,..." if flag == "--columns" else "NAME")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser, metavar="COMMAND", title="commands")
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
            return _open_tui() if _on_terminal() else _no_terminal()
        args = _parse(argv)
        if getattr(args, "app_data", None) is not None or any(_app_data_choice(args).values()) \
                or getattr(args, "app_packing", False):
            return _open_app_with_data(args)
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


def _on_terminal() -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty()


def _no_terminal() -> int:
    """Bare `peft-advisor` from a script, a pipe or CI: the app would write escape codes to a file
    and wait for keys that never come, so the help goes to stderr and the exit is a usage error
    (a script that forgot its command must not look as if it succeeded)."""
    build_parser().print_help(sys.stderr)
    print("peft-advisor: no COMMAND given and no terminal to open the app on", file=sys.stderr)
    return int(ExitCode.USAGE)


def _open_app_with_data(args) -> int:
    """`peft-advisor --data PATH`: the app, its advice from that data. A local path that is not
    there is one line before the app opens; a Hub id is looked up (cache only) by the advice."""
    choice = _app_data_choice(args)
    named = [APP_DATA_FLAGS[key] for key, value in choice.items() if value]
    flag = "--data" if args.app_data is not None else "--packing" if args.app_packing else named[0]
    if getattr(args, "func", None):
        raise UserError(f"{flag} before {args.command} is the app's; put it after the command: "
                        f"peft-advisor {args.command} {flag}{' PATH' if flag == '--data' else ''}", ExitCode.USAGE)
    if args.app_data is None:
        value = {"--packing": "", "--columns": " FIELD=COLUMN,..."}.get(flag, " NAME")
        raise UserError(f"{flag} goes with --data: peft-advisor --data PATH {flag}{value}", ExitCode.USAGE)
    if choice["data.columns"]:
        from peft_advisor.core.advise import check_columns

        check_columns("--columns", choice["data.columns"])
    if args.app_data != "demo":
        from peft_advisor.core.sources import local_data

        local_data(args.app_data, None)
    return (_open_tui(data=args.app_data, packing=args.app_packing, data_choice=choice) if _on_terminal()
            else _no_terminal())


APP_DATA_FLAGS = {"data.columns": "--columns", "data.config": "--data-config", "data.split": "--data-split"}


def _app_data_choice(args) -> dict:
    """The app's --columns, --data-config and --data-split as the recipe keys they set."""
    return {key: getattr(args, "app_" + flag[2:].replace("-", "_"), "") for key, flag in APP_DATA_FLAGS.items()}


def _open_tui(**kwargs) -> int:
    from peft_advisor.tui.app import run_app

    return int(run_app(**kwargs) or 0)
