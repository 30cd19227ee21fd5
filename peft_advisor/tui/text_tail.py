"""Follow a growing text file (train.log) from the last byte read, never re-reading it.

Only complete lines are returned; a partial last line waits for its newline. On first open only
the last `start_bytes` are read, so re-attaching to a long run does not load a huge log. Several
candidate paths may be given: a new run's log starts in the launcher's staging folder and is
renamed into the run folder; the same file (same inode) keeps its offset across the move.
"""

from __future__ import annotations

import os
from pathlib import Path


class TextTail:
    def __init__(self, *paths: Path, start_bytes: int = 16_384):
        self.paths = [Path(p) for p in paths if p is not None]
        self.offset: int | None = None
        self.start_bytes = start_bytes
        self._partial = b""
        self._inode: tuple[int, int] | None = None

    def _open(self):
        for path in self.paths:
            try:
                return open(path, "rb")
            except OSError:
                continue
        return None

    def poll(self) -> list[str]:
        f = self._open()
        if f is None:
            return []
        with f:
            st = os.fstat(f.fileno())
            skip_first = False
            if (st.st_dev, st.st_ino) != self._inode:
                first = self._inode is None
                self._inode, self._partial = (st.st_dev, st.st_ino), b""
                self.offset = max(0, st.st_size - self.start_bytes) if first else 0
                skip_first = self.offset > 0  # we landed mid-line
            elif st.st_size < self.offset:  # truncated: start over
                self.offset, self._partial = 0, b""
            f.seek(self.offset)
            data = f.read()
        self.offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        if skip_first and lines:
            lines = lines[1:]
        return [line.decode("utf-8", errors="replace").rstrip("\r") for line in lines]

    def text(self) -> str:
        """The whole of the first readable file (for the one-line reason of a failed start)."""
        f = self._open()
        if f is None:
            return ""
        with f:
            return f.read().decode("utf-8", errors="replace")
