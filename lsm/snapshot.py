"""Snapshots: a sequence number registered with the DB so that flush and
compaction keep the versions it reads. Reads through a snapshot use the
DB's current tables with the snapshot's sequence number as the limit."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from lsm.base.errors import ClosedError

if TYPE_CHECKING:
    from lsm.db import DB


class Snapshot:
    """A consistent read-only view of the DB as of its creation. Release it
    with ``close()`` or a ``with`` block (it also releases when garbage
    collected). Thread-safe for reads."""

    def __init__(self, db: DB, seq: int):
        self._db = db
        self.seq = seq
        self._open = True

    def _check(self) -> DB:
        if not self._open:
            raise ClosedError("snapshot used after close")
        return self._db

    def get(self, key: bytes, default: Any = None) -> Any:
        return self._check()._get(key, default, self.seq)

    def __getitem__(self, key: bytes) -> bytes:
        v = self.get(key, _MISSING)
        if v is _MISSING:
            raise KeyError(key)
        return v

    def __contains__(self, key: bytes) -> bool:
        return self.get(key, _MISSING) is not _MISSING

    def items(self, start: bytes | None = None, stop: bytes | None = None, *, prefix: bytes | None = None,
              reverse: bool = False) -> Iterator[tuple[bytes, bytes]]:
        return self._check()._items(start, stop, prefix, reverse, self.seq)

    def keys(self, start: bytes | None = None, stop: bytes | None = None, *, prefix: bytes | None = None,
             reverse: bool = False) -> Iterator[bytes]:
        return (k for k, _ in self.items(start, stop, prefix=prefix, reverse=reverse))

    def values(self, start: bytes | None = None, stop: bytes | None = None, *, prefix: bytes | None = None,
               reverse: bool = False) -> Iterator[bytes]:
        return (v for _, v in self.items(start, stop, prefix=prefix, reverse=reverse))

    def close(self) -> None:
        if self._open:
            self._open = False
            self._db._release_snapshot(self.seq)

    def __enter__(self) -> Snapshot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def __repr__(self) -> str:
        return f"Snapshot(seq={self.seq}{'' if self._open else ', closed'})"


class _Missing:
    pass


_MISSING: Any = _Missing()
