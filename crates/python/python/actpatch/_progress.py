"""A progress bar for sweeps: tqdm's (notebook or terminal) where tqdm is installed,
else one line on stderr rewritten in place."""

from __future__ import annotations

import sys
import time


class _Line:
    """``swept 120/480 cells (25%), 310 cells/s`` on one line of stderr."""

    def __init__(self, desc: str) -> None:
        self.desc = desc
        self.started = time.monotonic()
        self.drawn = False

    def update(self, done: int, total: int) -> None:
        if total <= 0:
            return
        rate = done / max(time.monotonic() - self.started, 1e-9)
        percent = 100 * done // total
        sys.stderr.write(
            f"\r{self.desc}: {done}/{total} cells ({percent}%), {rate:.0f} cells/s"
        )
        sys.stderr.flush()
        self.drawn = True

    def close(self) -> None:
        if self.drawn:
            sys.stderr.write("\n")
            sys.stderr.flush()


class _Tqdm:
    def __init__(self, desc: str) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(desc=desc, unit="cells", total=None)

    def update(self, done: int, total: int) -> None:
        if total <= 0:
            return
        if self.bar.total != total:
            self.bar.total = total
        self.bar.n = done
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def bar(desc: str):
    """A bar with ``update(done, total)`` and ``close()``."""
    try:
        return _Tqdm(desc)
    except ImportError:
        return _Line(desc)
