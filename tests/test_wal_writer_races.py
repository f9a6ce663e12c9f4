"""The WAL writer's thread interleavings, each forced deterministically
(issue 5: branch coverage of lsm/wal/writer.py, target 100%).

Group commit has branches that only a particular interleaving reaches: a
rotation that finds a sync still in flight, a flush or a lower-level append
that waits for the sync leader's write of the staged records, two threads
starting the syncer at once, a fence arriving while a sync runs. Sleeping
until a race "probably" happened would make those tests flaky and their
coverage a matter of luck, so every interleaving here is driven by events:

* :class:`GateFS` (a CrashFS) holds the next matching write, sync or
  directory sync until the test releases it, and can make closing a file
  fail;
* :class:`SpyLock` wraps a lock or a sync gate and signals when a thread has
  to *block* on it, so the test knows a thread waits at exactly that point
  before it lets the holder go.

The writer is driven directly (as ``lsm/doctor.py`` does), with
:class:`Log` playing the DB: sequence numbers and the DB write lock. Each
test checks an outcome the branch decides (records in the files once and
in order, what a power cut keeps, the error raised, the fence), and each
was checked by breaking the branch (the report that added this file lists
the mutations).
"""

from __future__ import annotations

import errno
import re
import threading
from collections.abc import Callable

import pytest

from lsm.base import filenames
from lsm.base.crashfs import CrashFS
from lsm.base.fs import makedirs_durable
from lsm.options import Sync
from lsm.wal.format import encode_record
from lsm.wal.reader import scan_segment
from lsm.wal.writer import WalWriter

WAL_DIR = "/w"
TIMEOUT = 30  # seconds a test waits for an event before it fails (never a timing assertion)


# --------------------------------------------------------------- harness
class Hold:
    """The next operation of ``kind`` on a path matching ``path`` waits
    (``entered`` set) until :meth:`release`."""

    def __init__(self, kind: str, path: str):
        self.kind = kind
        self.path = path
        self.entered = threading.Event()
        self.go = threading.Event()

    def wait_entered(self) -> None:
        assert self.entered.wait(TIMEOUT), f"no {self.kind} of {self.path} was held"

    def release(self) -> None:
        self.go.set()


class GateFS(CrashFS):
    """CrashFS with holds (:class:`Hold`) on "write", "sync" (fdatasync or
    fsync) and "sync_dir", and ``close_error``: a regex; closing a
    matching file raises OSError (after the descriptor is released)."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self._holds: list[Hold] = []
        self._holds_mu = threading.Lock()
        self.close_error: str | None = None

    def hold(self, kind: str, path: str = r"\.wal$") -> Hold:
        h = Hold(kind, path)
        with self._holds_mu:
            self._holds.append(h)
        return h

    def _maybe_hold(self, kind: str, path: str) -> None:
        with self._holds_mu:
            h = next((h for h in self._holds if h.kind == kind and re.search(h.path, path)), None)
            if h is not None:
                self._holds.remove(h)
        if h is not None:
            h.entered.set()
            assert h.go.wait(TIMEOUT), f"a held {kind} of {path} was never released"

    def _write_some(self, f, data):
        self._maybe_hold("write", f.path)
        return super()._write_some(f, data)

    def _sync(self, f, data_only):
        self._maybe_hold("sync", f.path)
        super()._sync(f, data_only)

    def sync_dir(self, path):
        self._maybe_hold("sync_dir", path)
        super().sync_dir(path)

    def _close(self, f, fd):
        super()._close(f, fd)
        if self.close_error is not None and re.search(self.close_error, f.path):
            raise OSError(errno.EIO, "injected close failure", f.path)


class SpyLock:
    """A lock (or a sync gate: a lock created held) that sets ``contended``
    when a thread has to block on it. Wrapping a gate that other threads
    hold by its plain name is fine: they release the same lock."""

    def __init__(self, lock: threading.Lock | None = None, *, held: bool = False):
        if lock is None:
            lock = threading.Lock()
            if held:
                lock.acquire()
        self._lock = lock
        self.contended = threading.Event()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if self._lock.acquire(False):
            return True
        if not blocking:
            return False
        self.contended.set()
        return self._lock.acquire(True, timeout)

    def release(self) -> None:
        self._lock.release()

    def locked(self) -> bool:
        return self._lock.locked()

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class SpyCondition:
    """Wraps a Condition: ``with`` sets ``contended`` when it has to block
    (counting the blocked entries in ``blocked``), ``waits`` counts
    ``wait`` calls; the rest is the Condition's."""

    def __init__(self, cv: threading.Condition):
        self._cv = cv
        self._raw = cv._lock  # the lock the Condition is built on
        self.blocked = 0
        self.waits = 0
        self._count_mu = threading.Lock()
        self.contended = threading.Event()

    def __enter__(self):
        if not self._raw.acquire(False):
            with self._count_mu:
                self.blocked += 1
            self.contended.set()
            self._raw.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self._raw.release()

    def wait(self, timeout=None):
        self.waits += 1
        return self._cv.wait(timeout)

    def __getattr__(self, name):
        return getattr(self._cv, name)


def wait_until(cond, what: str) -> None:
    """Wait (at most TIMEOUT s) for ``cond()``: ordering, not timing."""
    ev = threading.Event()
    for _ in range(TIMEOUT * 1000):
        if cond():
            return
        ev.wait(0.001)
    raise AssertionError(f"timed out waiting for {what}")


class Run(threading.Thread):
    """A thread running ``fn()``; ``result`` or ``error`` after join."""

    def __init__(self, fn, name: str):
        super().__init__(name=name, daemon=True)
        self.fn = fn
        self.result = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.fn()
        except BaseException as e:  # noqa: BLE001 - checked by the test
            self.error = e

    def finish(self):
        self.join(TIMEOUT)
        assert not self.is_alive(), f"{self.name} hangs"
        return self


class Log:
    """The DB's part: sequence numbers and the DB write lock (``mu``)."""

    def __init__(self, fs: CrashFS, **kw):
        makedirs_durable(fs, WAL_DIR)
        self.fs = fs
        kw.setdefault("segment_size", 1 << 20)
        kw.setdefault("sync_interval", 3600.0)
        self.w = WalWriter(fs, WAL_DIR, **kw)
        self.mu = threading.Lock()
        self.seq = 0
        self.rotate()

    def append(self, level: int) -> int:
        """Append one commit record (body ``r<seq>``); returns its seq."""
        with self.mu:
            seq = self.seq + 1
            self.w.append_locked(encode_record(seq, 1, 0, b"r%d" % seq, self.w.synced_offset), seq, 1, level)
            self.seq = seq
        return seq

    def commit(self, level: int) -> int:
        seq = self.append(level)
        self.w.commit_wait(seq, level)
        return seq

    def rotate(self) -> str:
        with self.mu:
            return self.w.start_segment_locked(self.seq + 1)

    def flush(self) -> None:
        with self.mu:
            self.w.flush_locked()


def seg(first_seq: int) -> str:
    return filenames.join(WAL_DIR, filenames.wal_name(first_seq))


def records(fs: CrashFS) -> dict[str, list[int]]:
    """{segment path: [seq of each record]}; every segment must be intact
    and each record's body must be ``r<seq>``."""
    out = {}
    for name in sorted(fs.listdir(WAL_DIR)):
        if not name.endswith(".wal"):
            continue
        path = filenames.join(WAL_DIR, name)
        scan = scan_segment(fs, path)
        assert scan.damage is None, scan.damage.describe()
        assert all(r.body == b"r%d" % r.seq for r in scan.records)
        out[path] = [r.seq for r in scan.records]
    return out


def durable(fs: CrashFS) -> dict[str, list[int]]:
    """What a power cut that drops every unsynced byte and directory
    change leaves (records per segment)."""
    return records(fs.power_cut(mode="drop"))


FULL, OFF, NORMAL, BARRIER, EXTRA = Sync.FULL, Sync.OFF, Sync.NORMAL, Sync.BARRIER, Sync.EXTRA


# ------------------------------------------------------------------ tests
def test_rotation_waits_for_a_sync_in_flight():
    """A designated leader leads its sync even when the sync it waited for
    already covered it (others may wait on its gate). A rotation that comes
    then has nothing to seal, and must not swap and close the live segment
    under that sync: it waits for it (start_segment_locked's swap loop).
    Broken (swap at once), the held fdatasync meets a closed file, the
    writer fences and B's commit fails."""
    fs = GateFS()
    log = Log(fs)
    w = log.w
    a = log.append(FULL)
    b = log.append(FULL)  # both staged; the segment's directory entry is not synced yet
    hold1 = fs.hold("sync", re.escape(seg(1)))
    w._next_gate = gate1 = SpyLock(held=True)  # the gate of the next sync (A's): to see B wait on it
    ta = Run(lambda: w.commit_wait(a, FULL), "A")
    ta.start()
    hold1.wait_entered()  # A leads, covering both records, its fdatasync held
    tb = Run(lambda: w.commit_wait(b, FULL), "B")
    tb.start()  # covered, but the directory entry is not durable yet: B is the designated next leader
    assert gate1.contended.wait(TIMEOUT)
    hold2 = fs.hold("sync", re.escape(seg(1)))
    hold1.release()
    ta.finish()
    hold2.wait_entered()  # B leads its sync (nothing new to write), held
    assert w.durable_seq == b
    with w._mu:
        gate2 = w._sync_gate = SpyLock(w._sync_gate)  # B's gate, to see the rotation wait on it
    rot = Run(log.rotate, "rotation")
    rot.start()
    wait_until(lambda: gate2.contended.is_set() or not rot.is_alive(), "the rotation to block or return")
    assert rot.is_alive(), "the rotation swapped segments while a sync was running on the old one"
    hold2.release()
    assert rot.finish().error is None, rot.error
    assert tb.finish().error is None, tb.error
    assert ta.error is None and w.fenced is None
    assert w.segment_path == rot.result == seg(3)
    c = log.commit(FULL)
    assert durable(fs) == {seg(1): [a, b], seg(3): [c]}
    w.close()


def _held_leader(fs: GateFS, log: Log) -> tuple[Run, Hold, SpyLock, int]:
    """A FULL commit whose leader is inside its write of the staged
    record, holding ``_io_mu`` (a SpyLock, to see others block on it)."""
    w = log.w
    w._io_mu = spy = SpyLock()
    a = log.append(FULL)
    hold = fs.hold("write", re.escape(seg(1)))
    ta = Run(lambda: w.commit_wait(a, FULL), "leader")
    ta.start()
    hold.wait_entered()
    return ta, hold, spy, a


def test_flush_waiting_for_the_leaders_write_writes_nothing():
    """flush_locked (a checkpoint's pin, a seal) sees a staged record and
    waits for ``_io_mu`` while the sync leader writes it; by then the
    record is written and unstaged, so the flush writes nothing: the
    record is in the file once. Broken (the empty case falls through), an
    empty write(2) is issued."""
    fs = GateFS()
    log = Log(fs)
    ta, hold, spy, a = _held_leader(fs, log)
    assert log.w._staged  # not written yet: the leader is inside its write
    fl = Run(log.flush, "flush")
    fl.start()
    assert spy.contended.wait(TIMEOUT)  # the flush waits for the leader's write
    writes = fs.counts["write"]
    hold.release()
    assert fl.finish().error is None, fl.error
    assert ta.finish().error is None, ta.error
    assert fs.counts["write"] == writes + 1, "the flush wrote although the leader had written the record"
    assert not log.w._staged
    assert records(fs) == {seg(1): [a]} and durable(fs) == {seg(1): [a]}
    log.w.close()


@pytest.mark.parametrize("level", [OFF, NORMAL, BARRIER])
def test_lower_level_append_waiting_for_the_leaders_write(level):
    """A commit below FULL finds a staged record and waits for ``_io_mu``
    while the leader writes it; then only its own record is left to write.
    It must be in the OS when the append returns (a kill -9 keeps it), after
    the leader's record, each once; the leader's sync covers only what was
    written before it."""
    fs = GateFS()
    log = Log(fs)
    ta, hold, spy, a = _held_leader(fs, log)
    tc = Run(lambda: log.append(level), "append")
    tc.start()
    assert spy.contended.wait(TIMEOUT)
    hold.release()
    assert tc.finish().error is None, tc.error
    c = tc.result
    assert records(fs.clone()) == {seg(1): [a, c]}  # in the OS when append returned: a kill -9 keeps it
    assert ta.finish().error is None, ta.error
    assert log.w.durable_seq >= a
    assert durable(fs)[seg(1)][0] == a
    log.w.commit_wait(c, level)
    log.w.close()
    assert durable(fs) == {seg(1): [a, c]}


def test_two_threads_starting_the_syncer_start_one():
    """Two NORMAL commits find no syncer thread at once; the second to get
    ``_cv`` sees the first one's thread and starts none (an extra syncer
    would sync twice as often and outlive close's join)."""
    fs = GateFS()
    log = Log(fs)
    w = log.w
    s1 = log.append(NORMAL)
    s2 = log.append(NORMAL)
    before = set(threading.enumerate())
    cv = w._cv
    w._cv = spy = SpyCondition(cv)
    try:
        with w._mu:  # both get past the unlocked check, then wait for _cv
            t1 = Run(lambda: w.commit_wait(s1, NORMAL), "n1")
            t2 = Run(lambda: w.commit_wait(s2, NORMAL), "n2")
            t1.start()
            t2.start()
            wait_until(lambda: spy.blocked == 2, "both commits to wait for _cv")
        t1.finish()
        t2.finish()
    finally:
        w._cv = cv
    assert t1.error is None and t2.error is None
    syncers = [t for t in set(threading.enumerate()) - before if t.name == "lsm-wal-syncer"]
    assert len(syncers) == 1 and syncers[0] is w._syncer, syncers
    assert w.wait_durable(s2, timeout=TIMEOUT)  # that syncer does the syncing
    w.close()
    assert not syncers[0].is_alive()
    assert durable(fs) == {seg(1): [s1, s2]}


def test_close_survives_a_failing_file_close():
    """close() syncs, then closes the live segment; an error from the close
    itself (EIO from close(2), as NFS may report) is swallowed: the data was
    synced before, the writer ends closed, and a second close is a no-op."""
    fs = GateFS()
    log = Log(fs)
    a = log.append(OFF)
    b = log.append(FULL)
    fs.close_error = re.escape(seg(1))
    log.w.close()
    assert log.w.segment_path is None and log.w.fenced is None
    log.w.close()  # closed already: nothing happens
    assert durable(fs) == {seg(1): [a, b]}


class LingerSpy:
    """Stands in for ``WalWriter._linger_wait`` (where the thread that formed
    a group waits, with its timer, for the group's sync; install as
    ``w._linger_wait = LingerSpy()``): sets ``lingering`` when it waits,
    then runs ``on_wait()`` and, unless that returns True (return at once:
    the linger time ran out), waits WITHOUT a timeout, so only the group's
    sync (led by the commit that completes it) ends the linger."""

    def __init__(self, on_wait=None):
        self.on_wait = on_wait
        self.lingering = threading.Event()
        self.waits = 0

    def __call__(self, gate: threading.Lock, timeout: float) -> bool:
        self.waits += 1
        self.lingering.set()
        if self.on_wait is not None and self.on_wait():
            return False
        return gate.acquire()


def _group_of_three(log: Log) -> None:
    """Three FULL commits synced by one sync: the next leader lingers
    for a group of three (adaptive linger, ``_last_group``)."""
    for _ in range(3):
        log.append(FULL)
    log.w.commit_wait(log.seq, FULL)
    assert log.w._last_group == 3


def _after_a_group_of_three() -> tuple[GateFS, Log, WalWriter]:
    """A log on a GateFS (and its writer) whose last sync covered three
    commits (:func:`_group_of_three`): the next group forms for three."""
    fs = GateFS()
    log = Log(fs)
    _group_of_three(log)
    return fs, log, log.w


def _first_two_of_a_group(log: Log, a: int, spy: LingerSpy, wait: float = 5.0,
                          between: Callable[[], object] | None = None) -> tuple[Run, Run, int]:
    """Start the first committer of a forming group (commit ``a``: it forms
    the group and waits with its timer, ``spy``) and a second (a new FULL
    commit that joins the group and waits on its gate); return both runs
    and the second's seq once both wait. ``between()``, if given, runs once
    the first waits and before the second commits."""
    w = log.w
    first = Run(lambda: w.commit_wait(a, FULL), "first")
    first.start()
    assert spy.lingering.wait(wait)
    if between is not None:
        between()
    b = log.append(FULL)
    second = Run(lambda: w.commit_wait(b, FULL), "second")
    second.start()
    _poll(lambda: in_sync_to(second))  # best effort: the joiner usually waits on the gate by now
    return first, second, b


def test_commit_that_completes_a_forming_group_leads_its_sync():
    """After a sync of three, the next group forms for three commits: the
    thread that formed it waits (its timer), the second commit waits on
    the group's gate, and the third, which completes the group, leads the
    sync itself (no hand-off back to the first): one write and one sync
    cover all three, and the first never leads."""
    fs, log, w = _after_a_group_of_three()
    syncs, writes = w.syncs, fs.counts["write"]
    w._linger_wait = spy = LingerSpy()
    a = log.append(FULL)
    first, second, b = _first_two_of_a_group(log, a, spy, TIMEOUT)
    assert w.syncs == syncs and w._forming  # not full yet: nobody leads
    c = log.append(FULL)
    w.commit_wait(c, FULL)  # completes the group: leads its sync here
    assert first.finish().error is None, first.error
    assert second.finish().error is None, second.error
    assert spy.waits == 1
    assert w.durable_seq == c and w.syncs == syncs + 1 and fs.counts["write"] == writes + 1
    assert w._last_group == 3 and not w._forming and w._sync_gate is None
    assert durable(fs) == {seg(1): [1, 2, 3, a, b, c]}
    w.close()


def _poll(cond, limit: float = 2.0) -> bool:
    """Poll ``cond`` until it holds or ``limit`` seconds pass (to order a
    test's steps where the order is not what it asserts)."""
    import time

    end = time.monotonic() + limit
    while not cond():
        if time.monotonic() > end:
            return False
        time.sleep(0.001)
    return True


def in_sync_to(run: threading.Thread) -> bool:
    """``run`` is inside ``sync_to`` (waiting on a gate, in this test)."""
    import sys

    frame = sys._current_frames().get(run.ident)
    while frame is not None:
        if frame.f_code.co_name == "sync_to":
            return True
        frame = frame.f_back
    return False


def test_next_group_waits_for_the_released_and_the_staged_behind():
    """A sync covers two commits while a third is staged behind it: the
    next group forms for three (the two threads the sync released commit
    again, the third already waits), not for two (the last group alone,
    which would sync the group's first two commits without the third and
    never let the group grow back)."""
    fs = GateFS()
    log = Log(fs)
    w = log.w
    a = log.append(FULL)
    b = log.append(FULL)
    hold = fs.hold("sync")
    leader = Run(lambda: w.commit_wait(b, FULL), "leader")  # a lone committer's want: leads at once
    leader.start()
    assert hold.entered.wait(TIMEOUT)
    c = log.append(FULL)  # staged behind the running sync
    hold.go.set()
    assert leader.finish().error is None, leader.error
    assert w.durable_seq == b and w._last_group == 2 and w._want == 3
    syncs, writes = w.syncs, fs.counts["write"]
    w._linger_wait = spy = LingerSpy()  # no timeout: only the group's sync ends the first's wait
    first, second, d = _first_two_of_a_group(log, c, spy, TIMEOUT)
    assert w.syncs == syncs and w._forming  # two of three: nobody leads yet
    e = log.append(FULL)
    w.commit_wait(e, FULL)  # completes the group of three: leads here
    for run in (first, second):
        assert run.finish().error is None, (run.name, run.error)
    assert w.durable_seq == e and w.syncs == syncs + 1 and fs.counts["write"] == writes + 1
    assert w._last_group == 3
    w.close()
    assert durable(fs) == {seg(1): [a, b, c, d, e]}


def test_lingering_leader_syncs_alone_when_its_time_runs_out():
    """No other commit comes: the linger ends at its deadline (the spy's
    wait returns at once, as a timed-out wait does, until the deadline
    has passed) and the leader syncs its own commit alone; the group
    shrinks to one, so the next leader does not linger."""
    fs, log, w = _after_a_group_of_three()
    w._linger_wait = spy = LingerSpy(on_wait=lambda: True)
    leader = Run(lambda: log.commit(FULL), "leader")
    leader.start()
    a = leader.finish().result  # a linger that ignored its deadline would spin: finish() fails
    assert spy.waits >= 1 and w.durable_seq == a and w._last_group == 1
    waits = spy.waits
    b = log.commit(FULL)
    assert spy.waits == waits and w.durable_seq == b
    w.close()
    assert durable(fs) == {seg(1): [1, 2, 3, a, b]}


def test_fixed_linger():
    """commit_linger_us: the leader waits that long (a timed wait on its
    group's gate) before every sync, also when the last group was a single
    commit (the adaptive linger would not wait then)."""
    fs = GateFS()
    log = Log(fs, commit_linger_us=1)
    w = log.w
    w._linger_wait = spy = LingerSpy(on_wait=lambda: True)
    a = log.commit(FULL)
    b = log.commit(FULL)
    assert spy.waits >= 2 and w.durable_seq == b and w._last_group == 1
    w.close()
    assert durable(fs) == {seg(1): [a, b]}
