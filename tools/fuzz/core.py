"""What every fuzz target shares: the lsm modules it may use (``L``, filled
by :func:`load`), the contract helpers, and the ``Target`` record."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any


class L:
    """The lsm modules, imported by :func:`load` (under atheris'
    instrumentation when that engine runs)."""

    loaded = False


def load(instrument: bool = False) -> None:
    if L.loaded:
        return
    ctx: Any = contextlib.nullcontext()
    if instrument:
        import atheris

        ctx = atheris.instrument_imports(include=["lsm"])
    with ctx:
        import lsm.base.checksum
        import lsm.base.coding
        import lsm.base.compression
        import lsm.base.crashfs
        import lsm.base.errors
        import lsm.base.filenames
        import lsm.batch
        import lsm.manifest.edit
        import lsm.manifest.version
        import lsm.manifest.version_set
        import lsm.sstable.block
        import lsm.sstable.bloom
        import lsm.sstable.cache
        import lsm.sstable.format
        import lsm.sstable.reader
        import lsm.sstable.writer
        import lsm.wal.format
        import lsm.wal.reader
    L.checksum, L.filenames, L.compression = lsm.base.checksum, lsm.base.filenames, lsm.base.compression
    L.MAX_SEQ, L.ValueKind, L.CrashFS = (
        lsm.base.coding.MAX_SEQ,
        lsm.base.coding.ValueKind,
        lsm.base.crashfs.CrashFS,
    )
    L.CorruptionError, L.InvalidDatabaseError = (
        lsm.base.errors.CorruptionError,
        lsm.base.errors.InvalidDatabaseError,
    )
    L.batch, L.edit, L.version, L.version_set = (
        lsm.batch,
        lsm.manifest.edit,
        lsm.manifest.version,
        lsm.manifest.version_set,
    )
    L.block, L.bloom, L.cache = lsm.sstable.block, lsm.sstable.bloom, lsm.sstable.cache
    L.format = lsm.sstable.format
    L.reader, L.writer = lsm.sstable.reader, lsm.sstable.writer
    L.wal_format, L.wal_reader = lsm.wal.format, lsm.wal.reader
    L.loaded = True


class Violation(AssertionError):
    """A decoder broke its contract (wrong data, not an exception type)."""


class Hang(BaseException):
    """No answer within the timeout. A BaseException, so that no decoder's
    ``except Exception`` can turn it into a CorruptionError."""


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise Hang in the main thread after ``seconds`` (0: no limit)."""
    if not seconds or not hasattr(signal, "setitimer"):
        yield
        return

    def on_alarm(_sig: int, _frame: object) -> None:
        raise Hang(f"no answer within {seconds} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def check(cond: bool, what: str) -> None:
    if not cond:
        raise Violation(what)


@dataclass
class Target:
    name: str
    run: Callable[[bytes], str]
    """Feed the input to the decoder; "accepted" or "rejected" (the
    documented error). Anything else it raises is a violation."""
    seeds: Callable[[], list[bytes]]
    fix: Callable[[bytes], bytes] | None = None
    """Recompute the checksums along the input's (mutated) framing."""
    doc: str = ""
    _seeds: list[bytes] = field(default_factory=list)

    def seed_list(self) -> list[bytes]:
        if not self._seeds:
            self._seeds = self.seeds()
        return self._seeds
