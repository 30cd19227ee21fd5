"""Errors a user can cause, each with its own exit code.

Front ends catch `UserError` and print its message as one line on stderr, then exit with
`code`; anything else is a bug and may show a traceback.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Exit codes are an API: scripts branch on them, so they never change meaning."""

    OK = 0
    ERROR = 1  # unexpected failure (a bug, or a library error we did not anticipate)
    USAGE = 2  # bad flag, bad value (argparse uses 2 as well)
    UNKNOWN_MODEL = 3  # model id / folder / config.json not found, unreadable or unsupported
    UNKNOWN_METHOD = 4
    NO_GPU = 5  # a GPU was needed (probe, default budget) and none was found
    DOES_NOT_FIT = 6  # nothing meets the budgets
    BAD_RECIPE = 7  # recipe file missing, unparsable or invalid
    BAD_DATA = 8  # dataset missing, wrong columns, empty
    EXISTS = 9  # refusing to overwrite without --force
    TRAIN_FAILED = 10  # the trainer child ended with an error
    OOM = 11  # the trainer child ran out of GPU memory
    INTERRUPTED = 130


class UserError(Exception):
    """A problem with what the user asked for; `str(err)` is the one line shown."""

    def __init__(self, message: str, code: ExitCode = ExitCode.USAGE):
        super().__init__(message)
        self.code = code


def closest(name: str, choices, n: int = 3) -> list[str]:
    """The nearest valid names, for 'did you mean …?' messages."""
    import difflib

    return difflib.get_close_matches(name, list(choices), n=n, cutoff=0.5)


def did_you_mean(name: str, choices) -> str:
    near = closest(name, choices)
    return f"; did you mean {' or '.join(near)}?" if near else ""
