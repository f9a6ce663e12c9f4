"""Every fuzz target by name, in the order of ``--list`` (which is also
the order the random engine cycles through them)."""

from __future__ import annotations

from fuzz import batch, manifest, sstable, wal
from fuzz.core import Target, load


def targets() -> dict[str, Target]:
    """Every target by name (imports lsm if :func:`load` did not yet)."""
    load()
    ts = [*wal.targets(), *batch.targets(), *sstable.targets(), *manifest.targets()]
    return {t.name: t for t in ts}
