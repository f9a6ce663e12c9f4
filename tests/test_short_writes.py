"""Short writes (issue 5, the fault layer): for each workload, for N = 1, 2,
... until the workload completes without reaching its Nth write, the Nth
``os.write`` writes only a prefix of its bytes and returns the short count
(:class:`~lsm.base.crashfs.CrashFS` ``fail("write", N, short=True)``).

The contract under test (``lsm/base/fs.py``, :class:`WritableFile`): a short
write is not an error; the fs layer writes the rest at once, so a short
write followed by success leaves the file byte-identical to a full write,
and an error on the rest leaves a prefix that the caller treats as a failed
write (fence, abandon the file). Two variants per N:

* **short, then success** (``keep`` half, and 1 byte): every public call
  succeeds and the database stays healthy (a short write must never fence);
  every write leaves the file holding exactly the bytes asked for at the
  offset it started from (checked on every write of the run, not only the
  short one); the live state and, after close, a reopen on the same
  filesystem and on a power cut (``mode="drop"``) hold the oracle.
* **short, then ENOSPC** (the disk fills in the middle of a write: a short
  write, then ENOSPC on every later write): everything tests/test_fault_sweep.py
  checks of a persistent fault (typed error or fence, no raw exception, and
  after the fault is cleared the oracle holds on the same filesystem, on a
  power cut at the failure and after a recovered session).

The workloads are the fault sweep's: WAL appends (``put_full``,
``mixed_levels``), flush, compaction, manifest roll-over, WAL archive and
open/recovery. ``LSM_SWEEP_SCALE`` scales them; counts are printed and
recorded (family ``short_writes``) through tests/reliability_log.py.
"""

from __future__ import annotations

import errno
import traceback
from collections import Counter
from dataclasses import dataclass, field

import pytest

import lsm
from lsm.base.crashfs import CrashFS
from tests.reliability_log import record
from tests.test_fault_sweep import (
    DB,
    MAX_N,
    Compaction,
    Flush,
    Ledger,
    ManifestRollover,
    MixedLevels,
    OpenRecovery,
    PutFull,
    Raw,
    RetentionArchive,
    Stats,
    Typed,
    run_one,
)

S = lsm.Sync
WORKLOADS = [PutFull, MixedLevels, Flush, Compaction, ManifestRollover, RetentionArchive, OpenRecovery]
KEEPS = [None, 1]  # bytes the short write keeps: half, and one


class CheckedFS(CrashFS):
    """A CrashFS that checks the write contract on every write: when
    ``WritableFile.write`` returns, the file holds exactly the bytes asked
    for, from the offset the write started at."""

    def __init__(self) -> None:
        super().__init__(trace=True)
        self.writes = 0
        self.mismatches: list[str] = []

    def _write(self, f, data):
        start = f.size
        super()._write(f, data)
        self.writes += 1
        with self._mu:
            node = self._fds.get(f.fd)
            got = bytes(node.data[start:start + len(data)]) if node is not None else None
        if got != bytes(data) or f.size != start + len(data):
            self.mismatches.append(f"write {self.writes} to {f.path} at {start}: {len(data)} bytes asked, "
                                   f"file holds {None if got is None else len(got)} matching={got == bytes(data)}, "
                                   f"size {f.size}")


@dataclass
class OnceStats:
    runs: int = 0
    short_writes: int = 0
    writes_checked: int = 0
    sites: Counter = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)


def run_short_once(w, n: int, keep: int | None, stats: OnceStats) -> bool:
    """The Nth write is short, the rest of it succeeds. Returns whether the
    rule fired (the workload reached its Nth write)."""
    fs = CheckedFS()
    ledger = Ledger()
    where = f"{w.name} write N={n} short (keep {keep or 'half'}), then success"
    w.db = None
    db = w.setup(fs, ledger)
    rule = fs.fail("write", n, short=True, keep=keep)
    try:
        db = w.run(db, fs, ledger)
    except Typed as t:
        stats.violations.append(f"{where}: a short write failed a call: {t.err!r}")
    except Raw:
        pass
    except OSError as e:  # lsm.open (OpenRecovery)
        stats.violations.append(f"{where}: a short write failed the open: {e!r}")
    db = w.db
    if not rule.fired:
        if db is not None:
            db.close()
        return False
    stats.runs += 1
    stats.short_writes += rule.fired
    hit = fs.trace[rule.fired_at[0] - 1]
    stats.sites[f"{hit[1]}@{hit[3]}"] += 1
    try:
        if ledger.raw:
            raise AssertionError(f"unhandled exception escaped a public API: {ledger.raw[0]}")
        if db is None or db.health != "ok":
            raise AssertionError(f"the database is not healthy after a short write: "
                                 f"{None if db is None else db.health}")
        ledger.check(db, everything=True, where=where + " (live)")
        ledger.call("close", db.close)
        stats.writes_checked += fs.writes
        if fs.mismatches:
            raise AssertionError("a write did not leave the bytes asked for: " + fs.mismatches[0])
        image = fs.power_cut(mode="drop")
        db2 = w.open(fs, Ledger())
        ledger.check(db2, everything=True, where=where + " (reopen, same fs)")
        db2.close()
        db3 = w.open(image, Ledger())
        ledger.check(db3, everything=False, where=where + " (reopen after a power cut)")
        db3.close()
    except (AssertionError, Typed, Raw, OSError, lsm.Error) as e:
        stats.violations.append(f"{where}: {type(e).__name__}: {e}\n{traceback.format_exc(limit=-4)}")
    return True


@pytest.mark.parametrize("wl", WORKLOADS, ids=[w.name for w in WORKLOADS])
def test_short_writes(wl):
    w = wl()
    once = OnceStats()
    enospc = Stats()
    n = 0
    while True:
        n += 1
        assert n < MAX_N, f"{w.name}: the workload never completes"
        fired = False
        for keep in KEEPS:
            fired |= run_short_once(w, n, keep, once)
        fired |= run_one(w, n, errno.ENOSPC, True, enospc, kind="write", short=True)
        if not fired:
            break
    violations = once.violations + enospc.violations
    top = ", ".join(f"{k} {v}" for k, v in once.sites.most_common())
    print(f"short writes {w.name}: write N = 1..{n - 1}; short then success: {once.runs} runs, "
          f"{once.writes_checked} writes checked byte for byte; short then ENOSPC: {enospc.runs} runs, "
          f"outcomes {dict(enospc.outcomes)}; short write by kind@site: {top}; {len(violations)} violations")
    record("short_writes", workload=w.name, writes=n - 1, runs=once.runs + enospc.runs,
           faults_injected=once.short_writes + enospc.faults, writes_checked=once.writes_checked,
           outcomes=dict(enospc.outcomes), sites=dict(once.sites), violations=len(violations))
    assert not violations, f"{len(violations)} violations; the first ones:\n" + "\n".join(violations[:5])
    # the fault-free run makes a few writes fewer than one that fences (the FENCE marker, LOG lines)
    assert once.runs % len(KEEPS) == 0 and once.runs >= len(KEEPS) * (n - 1) * 0.6
    assert enospc.runs >= (n - 1) * 0.9


def test_short_wal_segment_header_then_enospc_reopens():
    """A flush's WAL rotation whose segment header write is cut short and
    then meets ENOSPC: the flush raises a typed error and the database
    fences; after the disk recovers, reopening (the same filesystem, and a
    power cut of it) keeps every acknowledged commit; the half-written
    segment, which nothing was appended to, is not mistaken for data."""
    fs = CrashFS()
    opts = PutFull().opts
    db = lsm.open(DB, fs=fs, **opts)
    ledger = Ledger()
    for i in range(5):
        ledger.commit(db, [(b"k%d" % i, b"v%d" % i)], S.FULL)
    rule = fs.fail("write", 1, errno.ENOSPC, path=r"\.wal$", short=True, keep=5, persistent=True)
    with pytest.raises(lsm.Error):
        db.flush()
    assert rule.fired == 2 and db.health == "fenced"  # the short write, then ENOSPC on the rest
    with pytest.raises(lsm.Error):
        db.put(b"refused", b"x")
    db.close()
    fs.faults.clear()
    # The segment holds the 5-byte header prefix and nothing else (then the
    # zeros of a preallocated segment, when it was one: wal_preallocate).
    torn = [n for n in fs.listdir(DB) if n.endswith(".wal")
            and (d := fs.read_file(f"{DB}/{n}"))[:5] == b"lsmWA" and not any(d[5:])]
    assert torn, "the segment with the 5-byte header prefix"
    for target in (fs, fs.power_cut(mode="drop")):
        db = lsm.open(DB, fs=target, **opts)
        ledger.check(db, everything=True, where="reopen")
        db.put(b"after", b"reopen", sync=S.FULL)
        assert db.get(b"after") == b"reopen"
        db.close()
