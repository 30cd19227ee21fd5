"""Files a user names (a recipe, a data file) are read only once they are known to be what they seem.

Opening a FIFO blocks until someone writes to it, a device never ends, and a sparse or binary file
of gigabytes took minutes and gigabytes of memory before any library said what was wrong. So a file
is first checked from `stat` (which never blocks): a regular file, under its ceiling (core.limits).
Text formats are then streamed once in blocks, so a byte that is not UTF-8 or a line that cannot be
a row is named by line number without the file ever being held whole. Pure: no torch, no datasets.
"""

from __future__ import annotations

import codecs
import os
import stat
from pathlib import Path

from peft_advisor.core.errors import ExitCode, UserError
from peft_advisor.core.units import fmt_bytes

BLOCK_BYTES = 1024**2  # read size for the text check: large enough to be quick, small enough to stop early

_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def kind_of(mode: int) -> str:
    """What a non-regular file is, in words, for the one-line refusal."""
    return next((name for test, name in _KINDS if test(mode)), "not a file")


def check_regular(path: Path, max_bytes: int, code: ExitCode, what: str, prefix: str = "") -> int:
    """The size of `path`, which must be a regular file (a link to one is fine) of at most
    `max_bytes` (its apparent size: a sparse file counts in full). A missing file raises
    FileNotFoundError for the caller to word; anything else is one UserError line."""
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise UserError(f"{prefix}{path}: {kind_of(st.st_mode)}, not a regular file", code)
    if st.st_size > max_bytes:
        raise UserError(f"{prefix}{path}: {fmt_bytes(st.st_size)}; a {what} is at most {fmt_bytes(max_bytes)}"
                        f"{too_big_hint(what)}", code)
    return st.st_size


def too_big_hint(what: str) -> str:
    if what == "data file":
        return "; give data.path a folder written by datasets' save_to_disk instead (no ceiling there)"
    return " (is it the right file?)"


class _Position:
    """Line and column (in bytes) of the stream read so far, and the ceiling on one line's length."""

    def __init__(self, max_line: int | None):
        self.line, self.column, self.max_line = 1, 0, max_line

    def too_long(self) -> str:
        return f"line {self.line} is longer than {fmt_bytes(self.max_line)}, the most one row may be"

    def feed(self, block: bytes) -> str | None:
        """Advance past `block`; a problem when the line running through it passes the ceiling. Blocks are
        at most `max_line` long, so only that line can (one that starts and ends inside a block cannot)."""
        first = block.find(b"\n")
        if first < 0:
            self.column += len(block)
            return self.too_long() if self.max_line and self.column > self.max_line else None
        if self.max_line and self.column + first > self.max_line:
            return self.too_long()
        self.line += block.count(b"\n")
        self.column = len(block) - block.rfind(b"\n") - 1
        return None

    def bad_byte(self, err: UnicodeDecodeError, held: int) -> str:
        """Where the decoder's error lies: `err.object` is the `held` undecoded bytes that ended the last
        block (part of one character, never a newline) followed by this block."""
        data, at = err.object, err.start
        before = data.rfind(b"\n", 0, at)
        line = self.line + data.count(b"\n", 0, at)
        column = at - before if before >= 0 else self.column - held + at + 1
        return f"line {line}, column {column}: not UTF-8 (byte 0x{data[at]:02x}); save the file as UTF-8"


def text_problem(path: Path, max_line: int | None) -> str | None:
    """'line 7, column 3: not UTF-8 ...' or 'line 1 is longer than ...' for the first such place in a
    text file, None when it is all UTF-8 with no line over `max_line` bytes (None: no ceiling, for a
    .json document that may be one line). Reads the file once, a block at a time."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    where = _Position(max_line)
    size = min(BLOCK_BYTES, max_line) if max_line else BLOCK_BYTES
    with open(path, "rb") as fh:
        while True:
            block = fh.read(size)
            held = len(decoder.getstate()[0])
            try:
                decoder.decode(block, final=not block)
            except UnicodeDecodeError as err:
                return where.bad_byte(err, held)
            if not block:
                return None
            problem = where.feed(block)
            if problem:
                return problem
