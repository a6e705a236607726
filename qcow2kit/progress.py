"""A progress bar on stderr for whole-image work, shown only on a terminal and only
once a run has taken about a second."""
from __future__ import annotations

import sys
import time
from typing import Optional, TextIO

DELAY = 1.0  # seconds before the bar appears
INTERVAL = 0.1  # seconds between redraws
WIDTH = 30


class Progress:
    """Count work done out of total; use as a context manager so the bar is cleared."""

    def __init__(self, label: str, total: int, stream: Optional[TextIO] = None) -> None:
        self.label = label
        self.total = max(total, 1)
        self.done = 0
        self.stream = sys.stderr if stream is None else stream
        self.enabled = self.stream.isatty()
        self.start = time.monotonic()
        self.drawn_at = 0.0
        self.visible = False

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.visible:
            self.stream.write("\r\033[K")
            self.stream.flush()

    def advance(self, amount: int = 1) -> None:
        self.done += amount
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self.start < DELAY or now - self.drawn_at < INTERVAL:
            return
        self.drawn_at = now
        self.visible = True
        share = min(self.done / self.total, 1.0)
        bar = "#" * int(share * WIDTH)
        self.stream.write(f"\r{self.label} [{bar:<{WIDTH}}] {share:4.0%}")
        self.stream.flush()
