"""A one-line progress bar for training epochs: batches done, loss, metrics, samples/s.

Written to stderr, and only when stderr is a terminal and progress was asked for: logs,
pipes and CI stay quiet. It redraws at most ten times a second, so it costs nothing next to
a training step, and fits the line into the terminal's width.
"""

from __future__ import annotations

import shutil
import sys
import time

__all__ = ["ProgressBar", "format_logs"]


def format_logs(logs):
    parts = []
    for key, value in logs.items():
        if isinstance(value, float):
            parts.append(f"{key} {value:.4g}")
        elif value is not None:
            parts.append(f"{key} {value}")
    return "  ".join(parts)


class ProgressBar:
    """``start(epoch, epochs, total_batches)``, ``update(n_samples, logs)`` per batch,
    ``end(logs)`` per epoch. Does nothing when disabled."""

    WIDTH = 20
    INTERVAL = 0.1

    def __init__(self, enabled=True, stream=None):
        self.stream = sys.stderr if stream is None else stream
        isatty = getattr(self.stream, "isatty", None)
        self.enabled = bool(enabled) and callable(isatty) and bool(isatty())
        self.open_line = False

    def start(self, epoch, epochs, total=None):
        self.prefix = f"epoch {epoch}/{epochs}"
        self.total = total
        self.batches = 0
        self.samples = 0
        self.t0 = time.perf_counter()
        self.elapsed = 0.0        # training time so far (validation is not throughput)
        self.last_draw = 0.0

    def update(self, n_samples, logs):
        self.batches += 1
        self.samples += n_samples
        now = time.perf_counter()
        self.elapsed = now - self.t0
        if self.enabled and now - self.last_draw >= self.INTERVAL:
            self.last_draw = now
            self._draw(logs, end=False)

    def end(self, logs):
        if self.enabled:
            self._draw(logs, end=True)

    def close(self):
        """End a line left open (an interrupted epoch), so the traceback starts clean."""
        if self.enabled and getattr(self, "open_line", False):
            self.stream.write("\n")
            self.stream.flush()
            self.open_line = False

    def rate(self):
        return self.samples / self.elapsed if self.elapsed > 0 else 0.0

    def _draw(self, logs, end):
        width = shutil.get_terminal_size((100, 20)).columns - 1
        rate = f"{self.rate():.0f} samples/s"
        if end:   # the epoch's record: complete, never cut
            took = f"{time.perf_counter() - self.t0:.1f}s"
            line = "  ".join(s for s in (self.prefix, format_logs(logs), took, rate) if s)
            self.stream.write("\r" + line.ljust(width) + "\n")
            self.open_line = False
        else:
            if self.total:
                filled = int(min(self.batches / self.total, 1.0) * self.WIDTH)
                bar = ("=" * filled + ">" + "." * self.WIDTH)[:self.WIDTH]
                count = f"{self.batches}/{self.total} [{bar}]"
            else:
                count = f"{self.batches}"
            line = "  ".join(s for s in (self.prefix, count, format_logs(logs), rate) if s)
            if len(line) > width:
                line = line[:max(width - 3, 0)] + "..."
            self.stream.write("\r" + line.ljust(width))
            self.open_line = True
        self.stream.flush()
