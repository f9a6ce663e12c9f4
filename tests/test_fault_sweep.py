"""Fault sweep (issue 5, family 3): for each workload, for N = 1, 2, ...
until the workload completes without reaching its Nth mutating operation,
fail that operation with EIO and with ENOSPC, once and persistently
(SQLite's "fail the Nth I/O for every N" loop, on
:class:`~lsm.base.crashfs.CrashFS`).

Each run checks:

* every public call either succeeds or raises a typed ``lsm.Error``
  (``NeedsRecoveryError``, ``CorruptionError``, ...); only ``lsm.open`` may
  raise ``OSError`` (documented: a disk that still fails fails the open).
  Any other exception escaping a public API is a violation;
* after a typed error the database is fenced (``health == "fenced"``) or
  reports a background error, and later calls raise typed errors too;
* a fault that fired while every call succeeded ("absorbed") must have hit
  an operation whose failure is harmless: a best-effort unlink, or the
  FENCE marker; the live state must still equal the model;
* with the persistent fault still in place, reopening fails with
  ``OSError``/``lsm.Error`` (and releases the lock) or succeeds;
* after ``faults.clear()``: reopening succeeds on the same filesystem (the
  process restarted) and on a power cut of it taken at the failure
  (``mode="drop"``: only what was synced); then, after one more FULL
  commit on the reopened database and a second power cut, once more. Each
  time the oracle holds: the state equals the model after a prefix of the
  commit order that ends on a commit, contains every acknowledged FULL
  (and EXTRA) commit, and on the same filesystem every acknowledged commit.

``LSM_SWEEP_SCALE`` (default 1) multiplies the workloads' sizes (and so the
number of operations swept). Counts per workload are printed and, when
``LSM_RELIABILITY_LOG`` names a file, appended to it as JSON lines.
"""

from __future__ import annotations

import errno
import os
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import pytest

import lsm
from lsm.base import filenames
from lsm.base.crashfs import CrashFS
from tests.reliability_log import record
from tests.test_power_cut import OPTS as POWER_CUT_OPTS

S = lsm.Sync
DB = "/db"
SCALE = float(os.environ.get("LSM_SWEEP_SCALE", "1"))
VARIANTS = [(errno.EIO, False), (errno.ENOSPC, False), (errno.EIO, True), (errno.ENOSPC, True)]
MAX_N = 100_000  # a workload that never completes is a bug in the sweep

OPTS = dict(
    POWER_CUT_OPTS,
    sync_interval=3600,  # no timer-driven syncs: the op sequence is deterministic
    background="inline",
)



def n_(k: int) -> int:
    return max(1, int(k * SCALE))


# ------------------------------------------------------------------ the oracle
@dataclass
class Commit:
    last_seq: int
    ops: list[tuple[bytes, bytes | None]]
    level: int
    acked: bool


class Raw(Exception):
    """A non-lsm exception escaped a public API (a violation)."""


class Typed(Exception):
    """A public call raised a typed lsm error; the workload stops writing."""

    def __init__(self, err: lsm.Error):
        super().__init__(repr(err))
        self.err = err


@dataclass
class Ledger:
    """The commits of one run, in commit order (one writer thread, so the
    order of attempts is the order of sequence numbers; a refused attempt
    would have taken the numbers right after the previous commit)."""

    commits: list[Commit] = field(default_factory=list)
    raw: list[str] = field(default_factory=list)

    def call(self, what: str, fn: Callable, *, open_call: bool = False):
        try:
            return fn()
        except lsm.Error as e:
            raise Typed(e) from e
        except OSError as e:
            if open_call:
                raise
            self.raw.append(f"{what}: {type(e).__name__}: {e}\n{traceback.format_exc(limit=-6)}")
            raise Raw(what) from e
        except Exception as e:
            self.raw.append(f"{what}: {type(e).__name__}: {e}\n{traceback.format_exc(limit=-6)}")
            raise Raw(what) from e

    def commit(self, db: lsm.DB, ops: list[tuple[bytes, bytes | None]], level: int) -> int:
        before = db.last_seq
        c = Commit(before + len(ops), ops, level, False)
        self.commits.append(c)
        if len(ops) == 1:
            k, v = ops[0]
            if v is None:
                seq = self.call("delete", lambda: db.delete(k, sync=level))
            else:
                seq = self.call("put", lambda: db.put(k, v, sync=level))
        else:
            b = lsm.WriteBatch()
            for k, v in ops:
                b.put(k, v) if v is not None else b.delete(k)
            seq = self.call("write", lambda: db.write(b, sync=level))
        assert seq == c.last_seq, f"commit got seq {seq}, expected {c.last_seq}"
        c.acked = True
        return seq

    def model(self, upto: int) -> dict[bytes, bytes]:
        m: dict[bytes, bytes] = {}
        for c in self.commits:
            if c.last_seq > upto:
                break
            for k, v in c.ops:
                if v is None:
                    m.pop(k, None)
                else:
                    m[k] = v
        return m

    def check(self, db: lsm.DB, *, everything: bool, where: str) -> None:
        """The recovered state is the model after a prefix ending on a
        commit, holding every acknowledged FULL/EXTRA commit (every
        acknowledged commit when ``everything``)."""
        last = db.last_seq
        ends = {0} | {c.last_seq for c in self.commits}
        assert last in ends, f"{where}: recovered last_seq {last} is not the end of a commit"
        need = [c.last_seq for c in self.commits if c.acked and (everything or c.level >= S.FULL)]
        if need:
            assert last >= max(need), f"{where}: acknowledged commit {max(need)} lost (recovered up to {last})"
        got = dict(db.items())
        want = self.model(last)
        if got != want:
            diff = {k: (got.get(k), want.get(k)) for k in set(got) | set(want) if got.get(k) != want.get(k)}
            raise AssertionError(f"{where}: state differs from the model at seq {last}: {dict(list(diff.items())[:5])}")


# ------------------------------------------------------------------ workloads
class Workload:
    """``setup`` (before the fault rule exists) and ``run`` (swept); both
    commit through the ledger. ``opts`` are lsm.open keyword arguments."""

    name = ""
    opts: ClassVar[dict] = {}

    def __init__(self):
        self.opts = dict(OPTS, **type(self).opts)

    def open(self, fs: CrashFS, ledger: Ledger) -> lsm.DB:
        db = ledger.call("open", lambda: lsm.open(DB, fs=fs, **self.opts), open_call=True)
        self.after_open(db)
        self.db = db  # the database a run works on, even when the run raises
        return db

    def after_open(self, db: lsm.DB) -> None:
        pass

    def setup(self, fs: CrashFS, ledger: Ledger) -> lsm.DB | None:
        return self.open(fs, ledger)

    def run(self, db: lsm.DB | None, fs: CrashFS, ledger: Ledger) -> lsm.DB:
        raise NotImplementedError


def _puts(db, ledger, n, *, levels=(S.FULL,), keys=40, tag=b"", big=False):
    for i in range(n):
        level = levels[i % len(levels)]
        k = b"k%03d" % ((i * 7) % keys)
        if i % 11 == 5:
            ledger.commit(db, [(k, None)], level)
        elif i % 13 == 7:
            ledger.commit(db, [(b"k%03d" % ((i + j) % keys), tag + b"b%d.%d" % (i, j)) for j in range(3)], level)
        else:
            ledger.commit(db, [(k, tag + b"v%d-" % i + b"x" * (40 + (i * 37) % (200 if big else 60)))], level)


class PutFull(Workload):
    """FULL puts, deletes and batches across WAL segment rotations (no flush)."""

    name = "put_full"
    opts: ClassVar[dict] = dict(memtable_size=1 << 20)

    def run(self, db, fs, ledger):
        _puts(db, ledger, n_(60), big=True)
        return db


class MixedLevels(Workload):
    """One writer cycling OFF, NORMAL, BARRIER, FULL, EXTRA, with rotations
    and flushes (a small memtable)."""

    name = "mixed_levels"
    opts: ClassVar[dict] = dict(memtable_size=4000)

    def run(self, db, fs, ledger):
        _puts(db, ledger, n_(80), levels=(S.OFF, S.NORMAL, S.BARRIER, S.FULL, S.EXTRA))
        ledger.call("sync_wal", db.sync_wal)
        return db


class Flush(Workload):
    """Explicit flushes: table write, directory sync, manifest edit, WAL
    deletion, new segment."""

    name = "flush"
    opts: ClassVar[dict] = dict(memtable_size=1 << 20)

    def run(self, db, fs, ledger):
        for r in range(n_(4)):
            _puts(db, ledger, 12, tag=b"r%d" % r)
            ledger.call("flush", db.flush)
        return db


class Compaction(Workload):
    """A manual compaction of several level-0 tables into the levels below
    (inputs deleted, outputs split by target_file_size)."""

    name = "compaction"
    opts: ClassVar[dict] = dict(memtable_size=1 << 20, l0_compaction_trigger=100, l0_slowdown_trigger=200, l0_stop_trigger=300)

    def setup(self, fs, ledger):
        db = self.open(fs, ledger)
        for r in range(n_(4)):
            _puts(db, ledger, 25, tag=b"r%d" % r)
            db.flush()
        return db

    def run(self, db, fs, ledger):
        ledger.call("compact_range", db.compact_range)
        ledger.commit(db, [(b"after", b"compaction")], S.FULL)
        return db


class ManifestRollover(Workload):
    """Flushes with a tiny manifest_max_size: every few edits a new manifest
    is written and CURRENT switched; old manifests deleted."""

    name = "manifest_rollover"
    opts: ClassVar[dict] = dict(memtable_size=1 << 20)

    def after_open(self, db):
        db._vs.manifest_max_size = 300

    def run(self, db, fs, ledger):
        for r in range(n_(5)):
            _puts(db, ledger, 6, tag=b"r%d" % r)
            ledger.call("flush", db.flush)
        return db


class RetentionArchive(Workload):
    """Flushes with WAL retention: segments renamed into archive/, the
    archive pruned, directories synced (EXTRA)."""

    name = "retention_archive"
    opts: ClassVar[dict] = dict(memtable_size=1 << 20, wal_retention_segments=2, sync=S.EXTRA)

    def run(self, db, fs, ledger):
        for r in range(n_(4)):
            _puts(db, ledger, 8, tag=b"r%d" % r, levels=(S.EXTRA, S.FULL))
            ledger.call("flush", db.flush)
        return db


class OpenRecovery(Workload):
    """Open itself: a database left by a crash with tables, WAL to replay
    (several segments, a torn tail), an orphan table, a FENCE marker and an
    archive; the fault hits recovery's reads-and-repairs, then a write."""

    name = "open_recovery"
    opts: ClassVar[dict] = dict(memtable_size=4000, wal_retention_segments=1)

    def setup(self, fs, ledger):
        db = self.open(fs, ledger)
        _puts(db, ledger, n_(50))
        _puts(db, ledger, 10, levels=(S.OFF,), tag=b"off")
        db._simulate_crash()
        seg = max(n for n in fs.listdir(DB) if n.endswith(".wal"))
        f = fs.open_append(f"{DB}/{seg}")
        f.write(b"\x07torn record")  # a torn tail to cut
        f.close()
        fs.write_file(f"{DB}/000999.sst", b"orphan")
        fs.write_file(f"{DB}/FENCE", b"an earlier failure\n")
        self.db = None

    def run(self, db, fs, ledger):
        db = self.open(fs, ledger)
        ledger.commit(db, [(b"after", b"open")], S.FULL)
        return db


class FlushThread(Workload):
    """Background flush and compaction threads: a fault in them reaches the
    writer as a fence."""

    name = "flush_thread"
    opts: ClassVar[dict] = dict(background="thread")

    def run(self, db, fs, ledger):
        _puts(db, ledger, n_(60))
        ledger.call("flush", db.flush)
        return db


WORKLOADS = [PutFull, MixedLevels, Flush, Compaction, ManifestRollover, RetentionArchive, OpenRecovery, FlushThread]

def absorbable(kind: str, path: str) -> bool:
    """A failure every call may absorb: a best-effort unlink (an orphan is
    removed at the next open), the human-readable LOG (never fails the
    database, by contract), the FENCE marker (best effort while fencing)
    and the preallocated spare WAL segment (a failed one is never used: the
    next segment is then created by appending, as with wal_preallocate off)."""
    name = os.path.basename(path)
    return kind == "remove" or name in ("LOG", "LOG.old", "FENCE", filenames.WAL_SPARE)


# ------------------------------------------------------------------ one run
@dataclass
class Stats:
    runs: int = 0
    faults: int = 0
    outcomes: Counter = field(default_factory=Counter)
    sites: Counter = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)


def run_one(w: Workload, n: int, err: int, persistent: bool, stats: Stats, *, kind: str = "any",
            short: bool = False, fs: CrashFS | None = None) -> bool:
    """One run; returns whether the fault fired. ``kind``/``short``: the
    rule fails the Nth operation of that kind, a write first cut short
    (tests/test_short_writes.py); ``fs``: a fresh CrashFS (or subclass)."""
    fs = fs if fs is not None else CrashFS(trace=True)
    ledger = Ledger()
    where = (f"{w.name} {kind} N={n} {'short, then ' if short else ''}{errno.errorcode[err]} "
             f"{'persistent' if persistent else 'once'}")
    w.db = None
    db = w.setup(fs, ledger)
    rule = fs.fail(kind, n, err, persistent=persistent, short=short)
    typed: BaseException | None = None
    opened_failed = closed_err = False
    try:
        db = w.run(db, fs, ledger)
    except Typed as t:
        typed = t.err
    except Raw:
        pass
    except OSError as e:  # only from lsm.open (Ledger.call lets it through there)
        opened_failed = True
        typed = e
    db = w.db
    if typed is None and not ledger.raw:
        if rule.fired and db.health == "ok":  # every call succeeded: the failure must be harmless
            hit = fs.trace[rule.fired_at[0] - 1]
            if not absorbable(hit[1], hit[2]):
                stats.violations.append(f"{where}: the failed {hit[1]} of {hit[2]} ({hit[3]}) was swallowed: "
                                        "every call succeeded and the database is healthy")
            try:
                ledger.check(db, everything=True, where=where + " (live, fault absorbed)")
            except lsm.NeedsRecoveryError as e:
                # A background job (a compaction after the flush returned)
                # met the persistent fault after the workload's calls: the
                # database fenced, as it must. A typed outcome, checked
                # below like any other (health, refused writes, reopen).
                typed = e
            except (AssertionError, lsm.Error) as e:
                stats.violations.append(f"{where}: {type(e).__name__}: {e}")
        try:
            ledger.call("close", db.close)  # the final WAL sync is part of the workload
        except Typed as t:
            typed, closed_err = t.err, True
        except Raw:
            pass
    if rule.fired == 0:
        return False
    stats.runs += 1
    stats.faults += rule.fired
    hit = fs.trace[rule.fired_at[0] - 1]
    assert hit[0] == rule.fired_at[0]
    stats.sites[f"{hit[1]}@{hit[3]}"] += 1
    live = db if not opened_failed and isinstance(db, lsm.DB) and not db._closed else None
    # Classify, and probe the database after the fault.
    if ledger.raw:
        outcome = "raw"
    elif opened_failed:
        outcome = "open-failed"
    elif typed is not None:
        outcome = f"typed:{type(typed).__name__}" + (" at close" if closed_err else "")
    else:
        outcome = "absorbed"
    stats.outcomes[outcome] += 1
    image = fs.power_cut(mode="drop")  # power lost right after the failure
    if live is not None:
        health = live.health
        if typed is not None and health not in ("fenced", "background_error"):
            stats.violations.append(f"{where}: {type(typed).__name__} raised but health is {health!r}: {typed}")
        for what, fn in (("get", lambda: live.get(b"k001")), ("items", lambda: list(live.items())),
                         ("stats", live.stats)):
            try:
                ledger.call(what, fn)
            except Typed:
                pass
            except Raw:
                pass
        if health == "fenced":
            try:
                ledger.call("put", lambda: live.put(b"refused", b"x"))
                stats.violations.append(f"{where}: a fenced database accepted a write")
            except (Typed, Raw):
                pass
        try:
            ledger.call("close", live.close)
        except (Typed, Raw):
            pass
    if ledger.raw:
        stats.violations.append(f"{where}: unhandled exception escaped a public API: {ledger.raw[0]}")
        return True
    if persistent:
        try:
            db2 = lsm.open(DB, fs=fs, **w.opts)
            db2.close()
        except (OSError, lsm.Error):
            pass
        except Exception as e:  # noqa: BLE001 - any other exception is the violation being looked for
            stats.violations.append(f"{where}: open under a persistent fault raised {type(e).__name__}: {e}")
    rule_fired = rule.fired
    fs.faults.clear()
    # Reopen: the same filesystem (a restarted process), then power cuts.
    try:
        db2 = w.open(fs, Ledger())
        ledger.check(db2, everything=True, where=where + " (reopen, same fs)")
        # The recovered session continues from what it recovered: commits
        # beyond it are gone for good, and all it holds is now acknowledged
        # (recovery synced it).
        cont = Ledger([Commit(c.last_seq, c.ops, S.FULL, True) for c in ledger.commits
                       if c.last_seq <= db2.last_seq])
        seq = cont.commit(db2, [(b"post", b"recovery")], S.FULL)
        assert db2.get(b"post") == b"recovery"
        db2.close()
        db3 = w.open(fs.power_cut(mode="drop"), Ledger())
        cont.check(db3, everything=False, where=where + " (power cut after the recovered session)")
        assert db3.last_seq >= seq
        db3.close()
        db4 = w.open(image, Ledger())
        ledger.check(db4, everything=False, where=where + " (power cut at the failure)")
        db4.close()
    except (AssertionError, Typed, Raw, OSError) as e:
        stats.violations.append(f"{where}: {type(e).__name__}: {e}")
    return rule_fired > 0


@pytest.mark.parametrize("wl", WORKLOADS, ids=[w.name for w in WORKLOADS])
def test_fault_sweep(wl):
    w = wl()
    stats = Stats()
    n = 0
    while True:
        n += 1
        assert n < MAX_N, f"{w.name}: the workload never completes"
        fired = False
        for err, persistent in VARIANTS:
            fired |= run_one(w, n, err, persistent, stats)
        if not fired:
            break
    top = ", ".join(f"{k} {v}" for k, v in stats.sites.most_common())
    print(f"fault sweep {w.name}: N = 1..{n - 1}, {stats.runs} runs, {stats.faults} faults injected, "
          f"outcomes {dict(stats.outcomes)}, failed op by kind@site: {top}; {len(stats.violations)} violations")
    record("fault_sweep", workload=w.name, operations=n - 1, runs=stats.runs, faults_injected=stats.faults,
           outcomes=dict(stats.outcomes), sites=dict(stats.sites), violations=len(stats.violations))
    assert not stats.violations, f"{len(stats.violations)} violations; the first ones:\n" + "\n".join(
        stats.violations[:5])
    assert stats.runs >= 4 * (n - 1) * 0.9


def test_reopen_after_a_failed_manifest_sync_keeps_the_wal_it_relies_on():
    """Regression (found by the sweep and the trace-order checker): a flush's
    manifest sync fails, the database fences; the restarted process read
    the manifest through the page cache, where the unsynced flush edit
    still was, and deleted the WAL segments that edit covered without ever
    making the edit durable. A power cut then lost every acknowledged
    commit of the flushed memtable (the open failed on a WAL gap). Open now
    writes the recovered state into a new manifest before deleting."""
    fs = CrashFS()
    opts: ClassVar[dict] = dict(OPTS, memtable_size=3000)
    db = lsm.open(DB, fs=fs, **opts)
    fs.fail("sync", 1, site="manifest")
    acked = {}
    for i in range(400):
        k, v = b"k%03d" % (i % 50), b"v%d-" % i + b"x" * 40
        try:
            db.put(k, v)
        except lsm.NeedsRecoveryError:
            break
        acked[k] = v
    assert db.health == "fenced" and acked
    db.close()
    fs.faults.clear()
    lsm.open(DB, fs=fs, **opts).close()  # the restarted process
    db = lsm.open(DB, fs=fs.power_cut(mode="drop"), **opts)  # then the power fails
    assert dict(db.items()) == acked
    db.close()
