"""Follow a growing text file (train.log) from the last byte read, never re-reading it.

Only complete lines are returned; a partial last line waits for its newline. On first open only
the last `start_bytes` are read, so re-attaching to a long run does not load a huge log.
"""

from __future__ import annotations

import os
from pathlib import Path


class TextTail:
    def __init__(self, path: Path, start_bytes: int = 16_384):
        self.path = Path(path)
        self.offset: int | None = None
        self.start_bytes = start_bytes
        self._partial = b""

    def poll(self) -> list[str]:
        try:
            with open(self.path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if self.offset is None:
                    self.offset = max(0, size - self.start_bytes)
                    skip_first = self.offset > 0  # we landed mid-line
                else:
                    skip_first = False
                if size < self.offset:  # truncated or replaced: start over
                    self.offset, self._partial = 0, b""
                f.seek(self.offset)
                data = f.read()
        except OSError:
            return []
        self.offset += len(data)
        data = self._partial + data
        lines = data.split(b"\n")
        self._partial = lines.pop()
        if skip_first and lines:
            lines = lines[1:]
        return [line.decode("utf-8", errors="replace") for line in lines]
