"""Progress of a long command on stderr, shown only when it is a terminal."""

from __future__ import annotations

import shutil
import sys
import time
from typing import Any


class Progress:
    """Progress on stderr while it is a terminal: tqdm when installed,
    else a plain line rewritten in place (at most 10 times a second).
    Piped or redirected, it prints nothing."""

    def __init__(self, desc: str, total: float | None = None, unit: str = "it", *, enabled: bool | None = None):
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.desc = desc
        self.total = total
        self.unit = unit
        self.n = 0.0
        self._last = 0.0
        self._bar: Any = None
        if self.enabled:
            try:
                from tqdm import tqdm  # optional: the bench extra installs it

                # A terminal that reports a size of 0 (a fresh pty) would get no bar at all from tqdm's own
                # detection; shutil falls back to 80x24.
                cols, rows = shutil.get_terminal_size()
                self._bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, leave=False,
                                 unit_scale=unit == "B", ncols=cols, nrows=rows)
            except ImportError:
                pass

    def set(self, n: float, desc: str | None = None) -> None:
        if not self.enabled:
            return
        if desc is not None:
            self.desc = desc
        if self._bar is not None:
            if desc is not None:
                self._bar.set_description_str(desc)
            self._bar.update(n - self.n)
            self.n = n
            return
        self.n = n
        now = time.monotonic()
        if now - self._last < 0.1:
            return
        self._last = now
        if self.total:
            shown = f"{self.desc}: {min(100.0, 100.0 * n / self.total):3.0f}%"
        else:
            shown = f"{self.desc}: {n:,.0f} {self.unit}"
        sys.stderr.write("\r" + shown.ljust(60)[:79])
        sys.stderr.flush()

    def close(self) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.close()
        else:
            sys.stderr.write("\r" + " " * 79 + "\r")
            sys.stderr.flush()
