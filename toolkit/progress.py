"""Progress for logs as well as terminals: a tqdm bar on a terminal, plain lines anywhere else.

A `\r`-redrawn bar written to a file, a CI log or a cluster job's output is one endless line, so
off a terminal the same progress is printed as short lines, at most one per `every_s` seconds (the
first and the last always): `samples: 120/1319 (9%), 12.3/s, eta 0:01:37`. The training console
(toolkit/engine/console.py) and `toolkit-eval` both use the formatting here.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO


def short_count(count: float) -> str:
    """4901504 -> 4.90M, 1234 -> 1.23K, 12 -> 12."""
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if count >= size:
            return f"{count / size:.2f}{suffix}"
    return f"{count:.0f}"


def clock(seconds: float) -> str:
    """83.4 -> 0:01:23."""
    whole = max(0, int(round(seconds)))
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


class LineProgress:
    """tqdm's `update` / context-manager interface, printing plain lines to `stream`."""

    def __init__(self, total: int, initial: int = 0, desc: str = "progress", every_s: float = 30.0,
                 stream: TextIO | None = None, timer=time.monotonic) -> None:
        self.total, self.done, self.description = total, initial, desc
        self.every_s, self.stream, self.timer = every_s, stream or sys.stderr, timer
        self.start_done, self.started = initial, timer()
        self.last_printed, self.last_done = float("-inf"), -1

    def __enter__(self) -> "LineProgress":
        self._print()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if exc_info[0] is None and self.last_done != self.done:
            self._print()

    def update(self, count: int) -> None:
        self.done += count
        if self.done >= self.total or self.timer() - self.last_printed >= self.every_s:
            self._print()

    def _print(self) -> None:
        now = self.timer()
        fields = [f"{self.description}: {self.done}/{self.total}"
                  + (f" ({100 * self.done / self.total:.0f}%)" if self.total else "")]
        rate = (self.done - self.start_done) / (now - self.started) if now > self.started else 0.0
        if rate > 0:
            fields.append(f"{rate:.3g}/s")
            if self.done < self.total:
                fields.append(f"eta {clock((self.total - self.done) / rate)}")
        print(", ".join(fields), file=self.stream, flush=True)
        self.last_printed, self.last_done = now, self.done


def progress(total: int, initial: int = 0, desc: str = "progress", enabled: bool = True,
             stream: TextIO | None = None):
    """A tqdm bar when `stream` (stderr) is a terminal, else `LineProgress`; nothing when disabled."""
    stream = stream or sys.stderr
    if enabled and not stream.isatty():
        return LineProgress(total, initial, desc, stream=stream)
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, disable=not enabled, dynamic_ncols=True, file=stream)
