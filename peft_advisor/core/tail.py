"""Follow a growing file as lines, in bounded memory: the one file tailer behind events.jsonl and
train.log (`core.events.EventTail`, `core.watch.RunWatcher`).

Each `poll()` reads at most `max_bytes_per_poll` bytes after the last offset, so a 100 MB file
is read in steps a caller can show as they come, and `at_eof` says whether the file was read to
its end (a watcher judges a run only then). A line longer than `max_line_bytes` is dropped as it
streams past, never held whole, and counted in `overlong`: one runaway line (a 50 MB tensor
dump) costs a count, not the memory or the lines after it. Files are opened without blocking
and must be regular files: a FIFO in a run folder would otherwise hang the reader forever.

Pure: imports neither torch nor textual.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

CHUNK_BYTES = 1 << 20  # read per poll: a caller polls again at once while `at_eof` is False
MAX_LINE_BYTES = 1 << 20  # a longer line is skipped; an event or a log line is a few hundred bytes


class LineBuffer:
    """Cuts a byte stream into lines, keeping the unfinished last line for the next chunk.

    Works on bytes, so a chunk that ends inside a multi-byte UTF-8 character is harmless. With
    `max_line_bytes`, a longer line is dropped (counted in `overlong`) as soon as it is known to
    be too long, and the bytes up to its newline are thrown away unread.
    """

    def __init__(self, max_line_bytes: int | None = None) -> None:
        self.max_line_bytes = max_line_bytes
        self.overlong = 0
        self._tail = b""
        self._skipping = False  # inside a line being dropped, until its newline

    @property
    def pending(self) -> bytes:
        return self._tail

    def reset(self) -> None:
        """Forget the unfinished line (the file was replaced); the count stays."""
        self._tail, self._skipping = b"", False

    def skip_to_next_line(self) -> None:
        """The next bytes start mid-line (reading began inside a file): drop them up to a newline."""
        self._tail, self._skipping = b"", True

    def feed(self, chunk: bytes | str) -> list[str]:
        if isinstance(chunk, str):
            chunk = chunk.encode("utf-8")
        if self._skipping:
            cut = chunk.find(b"\n")
            if cut < 0:
                return []
            chunk, self._skipping = chunk[cut + 1 :], False
        *lines, self._tail = (self._tail + chunk).split(b"\n")
        return [line.decode("utf-8", "replace").rstrip("\r") for line in self._bounded(lines)]

    def _bounded(self, lines: list[bytes]) -> list[bytes]:
        limit = self.max_line_bytes
        if limit is None:
            return lines
        if len(self._tail) > limit:  # still growing: drop it now rather than hold it
            self.overlong += 1
            self.skip_to_next_line()
        kept = [line for line in lines if len(line) <= limit]
        self.overlong += len(lines) - len(kept)
        return kept

    def flush(self) -> list[str]:
        """The unfinished line, once the writer is known to be done."""
        tail, skipping = self._tail, self._skipping
        self.reset()
        return [tail.decode("utf-8", "replace").rstrip("\r")] if tail.strip() and not skipping else []


def not_a_regular_file(path) -> OSError:
    """The error for a FIFO, a device or a folder where a file was expected (said, never waited on)."""
    if Path(path).is_dir():
        return IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    return OSError(errno.EINVAL, "not a regular file", str(path))


class LineTail:
    """Complete lines of the first readable file of `paths`, from the last byte read.

    Several paths: a new run's train.log starts in the launcher's staging folder and is renamed
    into the run folder; the same file (same inode) keeps its offset across the move. A file
    that does not exist yet gives no lines; one that shrank or was replaced is read from its
    start. `offset` set before the first poll starts there (a resumed run's new events);
    `start_bytes` starts the first read that far from the end (re-attaching to a long log).
    `strict` raises OSError for a file that exists but cannot be read (else it is passed over).
    """

    def __init__(self, *paths, max_bytes_per_poll: int = CHUNK_BYTES, max_line_bytes: int | None = MAX_LINE_BYTES,
                 start_bytes: int | None = None, strict: bool = True) -> None:
        self.paths = [Path(p) for p in paths if p is not None]
        self.offset = 0
        self.bytes_read = 0
        self.at_eof = False
        self.max_bytes_per_poll = max_bytes_per_poll
        self.start_bytes = start_bytes
        self.strict = strict
        self._buffer = LineBuffer(max_line_bytes)
        self._identity: tuple[int, int] | None = None

    @property
    def path(self) -> Path:
        return self.paths[0]

    @property
    def overlong(self) -> int:
        return self._buffer.overlong

    def poll(self, final: bool = False) -> list[str]:
        """New complete lines; `final=True` (the writer is gone) also gives an unterminated last
        line, once the file was read to its end."""
        opened = self._open()
        if opened is None:
            self.at_eof = True
            return []
        with opened as fh:
            st = os.fstat(fh.fileno())
            size = st.st_size
            self._follow((st.st_dev, st.st_ino), size)
            fh.seek(self.offset)
            data = fh.read(self.max_bytes_per_poll)
        self.offset += len(data)
        self.bytes_read += len(data)
        self.at_eof = self.offset >= size  # all that was there when we looked (a grown file: next poll)
        lines = self._buffer.feed(data)
        return lines + self._buffer.flush() if final and self.at_eof else lines

    def _follow(self, identity: tuple[int, int], size: int) -> None:
        """Where to read from: the same file goes on; a new or shorter one starts over."""
        if identity == self._identity:
            if size < self.offset:  # truncated
                self.offset = 0
                self._buffer.reset()
            return
        first, self._identity = self._identity is None, identity
        self._buffer.reset()
        start = self.offset if first and self.offset <= size else 0
        if first and self.start_bytes is not None and size - self.start_bytes > start:
            start = size - self.start_bytes
            self._buffer.skip_to_next_line()  # we landed mid-line
        self.offset = start

    def _open(self):
        """The first of `paths` that is a regular file, opened without blocking (a FIFO would)."""
        for path in self.paths:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
            except (FileNotFoundError, NotADirectoryError):
                continue
            except OSError:
                if self.strict:
                    raise
                continue
            if stat.S_ISREG(os.fstat(fd).st_mode):
                return open(fd, "rb", closefd=True)
            os.close(fd)
            if self.strict:
                raise not_a_regular_file(path)
        return None

    def text(self) -> str:
        """What is left to read, to the end (bounded by the ceilings), as one string."""
        lines = []
        while True:
            lines += self.poll(final=True)
            if self.at_eof:
                return "\n".join(lines)


def last_lines(*paths, count: int = 10, max_bytes: int = 65_536) -> list[str]:
    """The last `count` non-blank lines of the first readable file of `paths`, from its last
    `max_bytes` only (a dead trainer's traceback, without loading a huge log)."""
    tail = LineTail(*paths, start_bytes=max_bytes, strict=False)
    return [line for line in tail.text().splitlines() if line.strip()][-count:]
