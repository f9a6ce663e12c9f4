"""The DB object: write path, point reads. Its base classes hold the
rest: DBRoom (lsm/db_room.py) the write path's room checks (memtable
switches, WAL segment rotation, fill checkpoints, stalls and pacing),
under it DBScan (lsm/db_scan.py) the range scans, and under that DBAdmin
(lsm/db_admin.py) the snapshot registry, the durability API,
maintenance, the operations wrappers, stats and close.

Threads and locks (lock order, outermost first):

1. ``_install_mu``: version installs (manifest writes), the table readers
   (``Background.readers``); ingests and checkpoints take it and then
   ``_write_mu``.
2. ``_write_mu`` (with condition ``_write_cv``): the write lock. Guards the
   live memtable, ``_last_seq``, the WAL's live segment, ``_sv`` switches
   and the write counters. Held for one commit's append and memtable insert
   (a few microseconds), never across an fdatasync. With
   ``background="inline"`` it is ``_install_mu`` itself (one reentrant
   lock: a writer there runs the flush and install it triggers while it
   holds the write lock).
3. ``_snap_mu``: the registry of live snapshot sequence numbers.
4. The WAL writer's internal condition (see lsm/wal/writer.py).
5. ``_pace_mu``: a leaf (no other lock, no I/O, no sleep under it): the
   write-pacing schedule (``Background.delay_next``) and the pacing and
   stall counters (``Background.paced``, ``_stall_seconds``,
   ``_stall_causes``). Writers take it in ``_delay_write`` without
   ``_write_mu``; ``_make_room_locked`` takes it under ``_write_mu``.

Reads take no lock: they read ``_last_seq`` and then ``_sv`` (a
:class:`SuperVersion`: memtable, immutable memtables, version and open
table readers, replaced as a whole), so a read sees every commit up to its
sequence number.

Background work (lsm/background/) runs flushes and compactions in a
worker process (default), a thread, or inline.
"""

from __future__ import annotations

import time
from bisect import bisect_left as _bisect_left
from time import monotonic as _monotonic
from typing import Any
from zlib import crc32 as _crc32

from crc32c import crc32c as _crc32c

from lsm.background import SuperVersion
from lsm.base.coding import ValueKind
from lsm.batch import WriteBatch, as_bytes
from lsm.db_room import DBRoom
from lsm.memtable import ENTRY_OVERHEAD as _ENTRY_OVERHEAD
from lsm.options import Sync
from lsm.snapshot import _MISSING
from lsm.wal.format import (
    _MASK_DELTA,
    _OP_HEADER_SIZE,
    _ROTATE_MUL,
    _SEQ_LIMIT,
    _pack_tail_op,
    _pack_u32,
    encode_record,
)
from lsm.wal.format import encode_op_record as _encode_op_record

_PUT, _DELETE, _SYNC_FULL, _SYNC_BARRIER = ValueKind.PUT, ValueKind.DELETE, Sync.FULL, Sync.BARRIER
_join = b"".join
# put's inlined encoder: the lengths encode_op_record accepts, and its constants.
_MAX_OP_BYTES = 0xFFFFFFFF - _OP_HEADER_SIZE
assert _OP_HEADER_SIZE == 9 and _ROTATE_MUL == 0x100000001 and _MASK_DELTA == 0xA282EAD8


class DB(DBRoom):
    """An open database. Create with :func:`lsm.open`. Thread-safe."""

    # Attributes are set by lsm.recovery.open_db.
    def __init__(self) -> None:
        raise TypeError("use lsm.open(path, ...) to open a database")

    # ----------------------------------------------------------------- writes
    def put(self, key: bytes, value: bytes, *, sync: Sync | int | str | None = None) -> int:
        """Set ``key`` to ``value``; return the commit's sequence number."""
        # The hot path of an unsynced fill: _commit_one and MemTable.add
        # inlined (two Python calls less per put), both op and record headers
        # packed at once (encode_op_record), the sync level resolved without
        # a call when it is a Sync or None, the write lock taken with
        # acquire/release (a ``with`` looks up and calls __enter__/__exit__:
        # ~1,200 instructions more per put), one room check (``_room_at``,
        # a live-memtable size standing for both the memtable and the WAL
        # limits: no WAL segment_bytes call), no write counters (stats()
        # derives keys and bytes written from the memtables). Per-put
        # costs: docs/benchmarks.md, "Write path profile".
        if type(key) is not bytes:
            key = as_bytes(key, "key")
        if type(value) is not bytes:
            value = as_bytes(value, "value")
        level = self._sync if sync is None else sync if type(sync) is Sync else Sync.coerce(sync)
        if self._l0_delay:
            self._delay_write()
        mu = self._write_mu
        mu.acquire()
        try:
            if self._blocked is not None:
                self._raise_blocked()
            mem = self._mem
            if mem.size >= self._room_at:
                self._make_room_locked()
                mem = self._mem
            wal = self._wal
            seq = self._last_seq + 1
            # encode_op_record, inlined: one frame less, its lengths reused
            # for the memtable (18,822 -> 18,195 instructions per put,
            # tools/put_callgrind.py putb; same bytes: tests/test_put_path.py).
            kl = len(key)
            vl = len(value)
            if seq >= _SEQ_LIMIT or kl + vl > _MAX_OP_BYTES:
                _encode_op_record(seq, 0, _PUT, key, value, 0)  # raises its ValueError
            rest = _join((_pack_tail_op(kl + vl + 9, seq, 1, time.time_ns() // 1000, wal.synced_offset, _PUT, kl, vl),
                          key, value))
            # The mask of lsm.wal.format (its _ROTATE_MUL and _MASK_DELTA, as constants).
            rec = _pack_u32(((_crc32c(rest) * 0x100000001 >> 15) + 0xA282EAD8) & 0xFFFFFFFF) + rest
            if level >= _SYNC_FULL and wal.fenced is None and wal._barrier_seq <= wal.durable_seq:
                # WalWriter.append_locked's staged branch, inlined: one frame less
                # per FULL commit. Keep in step (tests/test_put_full_path.py).
                wal._staged.append(rec)  # before written_seq moves (sync_to reads them in that order)
                if wal.written_seq <= wal.durable_seq:
                    wal.unsynced_since = _monotonic()
                wal.written_seq = seq
                wal._written_commits += 1
                wal.segment_records += 1
                wal.bytes_written += len(rec)
            elif ((raw := (f := wal._file).raw_write) is None or wal._staged  # type: ignore[union-attr]  # (FULL/EXTRA here: fenced or barrier)
                    or wal.fenced is not None or wal._barrier_seq > wal.durable_seq):
                wal.append_locked(rec, seq, 1, level)
            else:
                # WalWriter.append_locked's direct write (nothing staged, no
                # barrier to sync first, not fenced, a plain file), inlined:
                # one Python frame less per put. Keep in step with it
                # (tests/test_put_path.py compares the two).
                try:
                    n = raw(rec)
                    f.size += n  # type: ignore[union-attr]  # (f: the live segment, open while _blocked is None)
                    if n != len(rec):
                        f.write_rest(rec, n)  # type: ignore[union-attr]
                except BaseException as e:  # noqa: BLE001 - re-raised there unless only the map was full
                    wal.direct_write_failed(f, rec, e)  # type: ignore[arg-type]  # (a full map: written on by write(2); else fences, raises)
                if wal.written_seq <= wal.durable_seq:
                    wal.unsynced_since = _monotonic()  # (not time.monotonic: tests patch lsm.db.time)
                wal.written_seq = seq
                wal._written_commits += 1
                wal.segment_records += 1
                wal.bytes_written += len(rec)
                if level is _SYNC_BARRIER:  # (a Sync member here; `is`: +91 instructions a put, == +167)
                    wal._barrier_seq = seq  # under the write lock, as append_locked
            # MemTable.add(seq, _PUT, key, value), inlined: keep in step with
            # it (tests/test_write_path.py compares the two).
            if mem._pending:
                mem._index()  # pending batches are older: in first
            new = (seq, _PUT, value)
            prev = mem._latest.setdefault(key, new)
            if prev is not new:
                mem._push_older(key, prev)  # before the replace: a lock-free get never misses both
                mem._latest[key] = new
            mem.size += kl + vl + _ENTRY_OVERHEAD
            self._last_seq = seq
        finally:
            mu.release()
        if level >= _SYNC_FULL:  # WalWriter.commit_wait's FULL/EXTRA branch, inlined: one frame less
            # GroupSync.sync_to's fast path (why its unlocked reads are safe:
            # its docstring), inlined: one frame less per follower. Keep in step.
            gate = wal._sync_gate
            if (gate is not None and wal._forming and wal.fenced is None and wal.durable_seq < seq
                    and (wal._written_commits - wal._synced_commits < wal._want or wal.commit_linger)):
                gate.acquire()  # blocks until the group's sync is published (or its group is dissolved)
                gate.release()  # and lets the next waiter through
                if wal.durable_seq >= seq and wal._dir_synced and wal.fenced is None:
                    return seq
            wal.sync_to(seq, level)
        elif level:
            wal.commit_wait(seq, level)
        return seq

    def delete(self, key: bytes, *, sync: Sync | int | str | None = None) -> int:
        """Delete ``key`` (a no-op if absent); return the sequence number."""
        if type(key) is not bytes:
            key = as_bytes(key, "key")
        level = self._sync if sync is None else sync if type(sync) is Sync else Sync.coerce(sync)
        return self._commit_one(_DELETE, key, b"", level)

    def _commit_one(self, kind: int, key: bytes, value: bytes, level: int) -> int:
        """The single-op commit: WAL append and memtable insert under the
        write lock, then the sync level applied outside it (``put`` is this,
        inlined)."""
        if self._l0_delay:
            self._delay_write()
        mu = self._write_mu
        mu.acquire()  # not ``with``: see put
        try:
            if self._blocked is not None:
                self._raise_blocked()
            mem = self._mem
            if mem.size >= self._room_at:  # as in put
                self._make_room_locked()
                mem = self._mem
            wal = self._wal
            seq = self._last_seq + 1
            wal.append_locked(_encode_op_record(seq, time.time_ns() // 1000, kind, key, value, wal.synced_offset), seq, 1, level)
            mem.add(seq, kind, key, value)
            self._last_seq = seq
        finally:
            mu.release()
        if level:
            wal.commit_wait(seq, level)
        return seq

    def write(self, batch: WriteBatch, *, sync: Sync | int | str | None = None) -> int:
        """Apply ``batch`` atomically (one WAL record); return the sequence
        number of its last op (the last committed seq for an empty batch)."""
        if not isinstance(batch, WriteBatch):
            raise TypeError(f"batch must be an lsm.WriteBatch, not {type(batch).__name__}")
        level = self._sync if sync is None else sync if type(sync) is Sync else Sync.coerce(sync)
        keys, values, kinds = batch.columns()
        n = len(keys)
        if n == 0:
            self._check_usable()
            return self._last_seq
        body, nbytes = batch.encode()
        if self._l0_delay:
            self._delay_write()
        mu = self._write_mu
        mu.acquire()  # not ``with``: see put
        try:
            if self._blocked is not None:
                self._raise_blocked()
            if self._mem.size >= self._memtable_size or self._wal.segment_bytes >= self._room_check_at:
                self._make_room_locked()
            first = self._last_seq + 1
            last = first + n - 1
            self._wal.append_locked(encode_record(first, n, time.time_ns() // 1000, body, self._wal.synced_offset), last, 1, level)
            self._mem.add_batch(first, keys, values, kinds, nbytes)
            if batch.has_range_dels and not self._sv.range_dels:
                sv = self._sv  # reads switch to their range-tombstone path before the seq is published
                self._sv = SuperVersion(sv.mem, sv.imms, sv.version, sv.readers)
            self._last_seq = last  # keys and bytes written: counted in the memtable (_retire_counts_locked)
        finally:
            mu.release()
        if level:
            self._wal.commit_wait(last, level)
        return last

    def delete_range(self, start: bytes, stop: bytes, *, sync: Sync | int | str | None = None) -> int:
        """Delete every key ``k`` with ``start <= k < stop``; return the
        sequence number. One range tombstone, whatever the number of keys
        (compaction later drops the covered data). Snapshots taken before
        still see the keys. ``start == stop`` deletes nothing and writes
        nothing (returns the last committed seq); ``start > stop`` raises
        ValueError (almost always swapped arguments)."""
        batch = WriteBatch()
        batch.delete_range(start, stop)
        return self.write(batch, sync=sync)

    def batch(self, *, sync: Sync | int | str | None = None) -> _BatchContext:
        """``with db.batch() as b: b.put(...)`` commits atomically on exit
        (nothing is written if the block raises)."""
        level = None if sync is None else Sync.coerce(sync)
        return _BatchContext(self, level)

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self.put(key, value)

    def __delitem__(self, key: bytes) -> None:
        if self.get(key, _MISSING) is _MISSING:
            raise KeyError(key)
        self.delete(key)

    # ------------------------------------------------------------------ reads
    def get(self, key: bytes, default: Any = None) -> Any:
        """The value of ``key``, or ``default`` when absent."""
        return self._get(key, default, None)

    def __getitem__(self, key: bytes) -> bytes:
        v = self._get(key, _MISSING, None)
        if v is _MISSING:
            raise KeyError(key)
        return v

    def __contains__(self, key: bytes) -> bool:
        return self._get(key, _MISSING, None) is not _MISSING

    def _get(self, key: bytes, default: Any, snap: int | None) -> Any:
        if type(key) is not bytes:
            key = as_bytes(key, "key")
        if self._blocked is not None:
            self._raise_blocked()
        if snap is None:
            snap = self._last_seq  # read the seq before the super version
        sv = self._sv
        if sv.range_dels:
            return self._get_covered(sv, key, default, snap)
        # MemTable.get, inlined for its common case (the newest version is
        # visible, or there is none): one Python call less per get. A
        # version newer than the snapshot takes the full method (it reads
        # _latest again, then _older: the same lock-free protocol).
        mem = sv.mem
        if mem._pending:  # batches not indexed yet (lsm/memtable.py): after snap was read
            mem._index()
        r = mem._latest.get(key)
        if r is not None and r[0] > snap:
            r = mem.get(key, snap)
        if r is None:
            for imm in sv.imms:
                r = imm.get(key, snap)
                if r is not None:
                    break
            else:
                # The tables, through the super version's plan
                # (lsm/sstable/get_plan.py: lookup is this loop, change both
                # together): the key's bloom hashes and mask once per get,
                # per table a bisect, a range check and one probe of the
                # filter's complemented words; no dict lookup, attribute or
                # counter per table the key is not in (~1.3k instructions
                # each, readrandom in docs/benchmarks.md). Rejections are
                # counted in a local, added to the last reader probed.
                masks, steps = sv.plan
                if steps:
                    h1 = _crc32c(key)
                    h2 = _crc32(key) | 1
                    m = masks[h2 >> 20]
                    neg = 0
                    for largest, smallest, nf, probes in steps:
                        i = _bisect_left(largest, key)
                        if i < nf and smallest[i] <= key:
                            holes, nw, t = probes[i]
                            if holes[h1 % nw] & m:
                                neg += 1
                                continue
                            if nw == 1:  # probed by the reader (get_plan._PASS)
                                e = t.lookup(key, (snap << 8) | 0xFF, h1, h2)
                            else:
                                t.bloom_checked += 1
                                e = t.find_entry(key, (snap << 8) | 0xFF)
                            if e is not None:
                                if neg:
                                    t.bloom_checked += neg
                                    t.bloom_useful += neg
                                return e[2] if e[1] & 0xFF == _PUT else default
                    if neg:
                        t.bloom_checked += neg
                        t.bloom_useful += neg
                return default
        return r[2] if r[1] == _PUT else default

    def _get_covered(self, sv: SuperVersion, key: bytes, default: Any, snap: int) -> Any:
        """``_get`` when some source holds range tombstones: in read order,
        track the newest tombstone seq <= snap covering ``key``; the first
        version found is hidden if that seq is above it. Once a source's
        tombstone covers the key, older sources (lower seqs for this key,
        the LSM ordering) cannot hold a visible version."""
        cover = 0
        for m in (sv.mem, *sv.imms):
            if m.range_del_count:
                cover = max(cover, m.range_del_cover(key, snap))
            r = m.get(key, snap)
            if r is not None:
                return r[2] if r[1] == _PUT and r[0] > cover else default
            if cover:
                return default
        readers = sv.readers
        for _level, meta in sv.version.files_for_key(key):
            reader = readers[meta.number]
            rd = reader.range_dels
            if rd is not None:
                cover = max(cover, rd.cover(key, snap))
            e = reader.get_entry(key, snap)
            if e is not None:
                t = e[1]
                return e[2] if t & 0xFF == _PUT and t >> 8 > cover else default
            if cover:
                return default
        return default

    # ----------------------------------------------------------------- state
    def _raise_blocked(self) -> None:
        # Without its last traceback: re-raising one instance extends it and keeps
        # every failed call's frames alive with the DB (tests/test_crash_reraise.py).
        raise self._blocked.with_traceback(None)  # type: ignore[union-attr]

    def _check_usable(self) -> None:
        if self._blocked is not None:
            self._raise_blocked()

    def __enter__(self) -> DB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<lsm.DB {self.path!r} {self.health}>"


class _BatchContext:
    def __init__(self, db: DB, level: Sync | None):
        self._db = db
        self._level = level
        self.batch = WriteBatch()
        self.seq: int | None = None

    def __enter__(self) -> WriteBatch:
        return self.batch

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.seq = self._db.write(self.batch, sync=self._level)
        self.batch._seal()


