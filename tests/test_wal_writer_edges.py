"""The WAL writer's rarer branches, one deterministic test each (issue 5:
branch coverage of lsm/wal/writer.py and spare.py, target 100%): fences met
on the flush, rotation and directory-sync paths, a failed write of staged
records, a sync failing after another error fenced, commit_wait and
wait_durable when there is nothing to do, and close in its corner cases.
Threads are ordered by events (tests/test_wal_writer_races.py: GateFS,
SpyLock), never by sleeps.
"""

from __future__ import annotations

import errno
import re

import pytest

from lsm.base.crashfs import CrashFS
from lsm.base.errors import ClosedError, NeedsRecoveryError
from lsm.base.fs import makedirs_durable
from lsm.wal.reader import scan_segment
from lsm.wal.spare import SpareSegment
from lsm.wal.writer import WalWriter
from tests.test_wal_writer_races import (
    BARRIER,
    FULL,
    NORMAL,
    OFF,
    TIMEOUT,
    WAL_DIR,
    GateFS,
    Log,
    Run,
    SpyLock,
    durable,
    records,
    seg,
)


def _leader_held_in_sync(fs: GateFS, log: Log) -> tuple[Run, object, int]:
    """A FULL commit whose sync leader wrote its record and is held in
    the fdatasync."""
    a = log.append(FULL)
    hold = fs.hold("sync", re.escape(seg(1)))
    ta = Run(lambda: log.w.commit_wait(a, FULL), "leader")
    ta.start()
    hold.wait_entered()
    return ta, hold, a


def test_flush_refuses_staged_records_once_fenced():
    """A group's sync fails while the next commit's record is staged: the
    flush a checkpoint or a seal does must raise, not write that record
    after the failure (the file would then hold a commit that the log's
    owner was told failed)."""
    fs = GateFS()
    log = Log(fs)
    ta, hold, a = _leader_held_in_sync(fs, log)
    b = log.append(FULL)  # staged behind the running sync
    fs.fail("sync", path=re.escape(seg(1)))
    hold.release()
    assert isinstance(ta.finish().error, NeedsRecoveryError)
    assert log.w.fenced is not None and log.w._staged
    with pytest.raises(NeedsRecoveryError):
        log.flush()
    assert records(fs.clone()) == {seg(1): [a]}, f"commit {b}'s record was written after the fence"
    log.w.close()


def test_failed_write_of_staged_records_fences():
    """A commit below FULL writes the staged records with its own; that
    write fails: the commit raises NeedsRecoveryError naming the segment,
    the writer fences, nothing of either record is in the file, and the
    next commit is refused."""
    fs = GateFS()
    log = Log(fs)
    ta, hold, a = _leader_held_in_sync(fs, log)
    log.append(FULL)  # staged
    fs.fail("write", path=re.escape(seg(1)))
    with pytest.raises(NeedsRecoveryError, match=re.escape(seg(1))):
        log.append(OFF)
    assert isinstance(log.w.fenced, OSError)
    hold.release()
    assert ta.finish().error is None  # its sync began before the failure, and succeeded
    with pytest.raises(NeedsRecoveryError):
        log.append(OFF)
    assert log.seq == a + 1  # the failed commit took no sequence number
    assert records(fs.clone()) == {seg(1): [a]}
    log.w.close()


def test_a_sync_failing_after_a_fence_keeps_the_first_error():
    """A write fails (ENOSPC) and fences while a sync is running; that sync
    then fails too (EIO). ``fenced`` keeps the first error (the cause an
    operator must see), and the sync's committer raises."""
    fs = GateFS()
    log = Log(fs)
    ta, hold, a = _leader_held_in_sync(fs, log)
    fs.fail("write", path=re.escape(seg(1)), err=errno.ENOSPC)
    with pytest.raises(NeedsRecoveryError):
        log.append(OFF)
    fs.fail("sync", path=re.escape(seg(1)), err=errno.EIO)
    hold.release()
    assert isinstance(ta.finish().error, NeedsRecoveryError)
    assert log.w.fenced.errno == errno.ENOSPC, log.w.fenced
    assert log.w.durable_seq < a
    log.w.close()


def test_commit_wait_returns_when_another_sync_covered_it():
    """Two FULL records staged; the later commit's sync covers both, so the
    earlier commit's commit_wait does no sync of its own."""
    fs = CrashFS()
    log = Log(fs)
    a = log.append(FULL)
    b = log.append(FULL)
    log.w.commit_wait(b, FULL)
    syncs = log.w.syncs
    assert log.w.durable_seq == b
    log.w.commit_wait(a, FULL)
    assert log.w.syncs == syncs
    assert durable(fs) == {seg(1): [a, b]}
    log.w.close()


@pytest.mark.parametrize("level", [OFF, NORMAL, BARRIER])
def test_commit_wait_below_full(level):
    """OFF: nothing at all (no syncer thread, no sync). NORMAL: the syncer
    is started (it syncs every sync_interval). BARRIER: also kicked, so
    the barrier commit becomes durable without another commit."""
    fs = CrashFS()
    log = Log(fs)
    a = log.append(level)
    log.w.commit_wait(a, level)
    if level == OFF:
        assert log.w._syncer is None and log.w.syncs == 0
    else:
        assert log.w._syncer is not None
    if level == BARRIER:
        assert log.w.wait_durable(a, timeout=TIMEOUT)
    log.w.close()
    assert durable(fs) == {seg(1): [a]}


def test_wait_durable_paths():
    """Already durable: True at once, no syncer started. Not yet durable
    with the sync held: a zero timeout gives False. Then the syncer's sync
    fails: a waiter without a timeout raises NeedsRecoveryError instead of
    waiting forever."""
    fs = GateFS()
    log = Log(fs)
    w = log.w
    a = log.commit(FULL)
    assert w.wait_durable(a) is True and w._syncer is None
    with pytest.raises(ValueError, match="never written"):
        w.wait_durable(a + 1)
    b = log.append(OFF)
    hold = fs.hold("sync", re.escape(seg(1)))
    assert w.wait_durable(b, timeout=0) is False  # kicks the syncer, whose sync is held
    hold.wait_entered()
    fs.fail("sync", path=re.escape(seg(1)))
    waiter = Run(lambda: w.wait_durable(b), "waiter")
    waiter.start()
    hold.release()
    assert isinstance(waiter.finish().error, NeedsRecoveryError)
    assert w.durable_seq == a
    w.close()


def test_failed_directory_sync_fences():
    """sync_dir_extra (EXTRA, after a segment was deleted): success counts
    a directory sync; a failure raises NeedsRecoveryError and fences (the
    deletion's durability is unknown), so the next commit is refused."""
    fs = CrashFS()
    log = Log(fs)
    log.commit(FULL)
    n = log.w.dir_syncs
    log.w.sync_dir_extra()
    assert log.w.dir_syncs == n + 1
    fs.fail("sync_dir")
    with pytest.raises(NeedsRecoveryError):
        log.w.sync_dir_extra()
    assert log.w.fenced is not None
    with pytest.raises(NeedsRecoveryError):
        log.append(OFF)
    log.w.close()


def test_rotation_refused_once_fenced():
    """A fenced writer starts no new segment (it would let commits continue
    in a log whose durability is unknown), also when every record is
    durable (so there is no sealing sync to raise)."""
    fs = CrashFS()
    log = Log(fs)
    log.commit(FULL)
    fs.fail("sync_dir")
    with pytest.raises(NeedsRecoveryError):
        log.w.sync_dir_extra()
    assert log.w.durable_seq == log.w.written_seq
    with pytest.raises(NeedsRecoveryError):
        log.rotate()
    assert fs.listdir(WAL_DIR) == [seg(1).rsplit("/", 1)[1]]
    log.w.close()


def test_commit_after_close_is_refused_not_acknowledged():
    """A FULL record staged, then the writer closed without a sync (a
    crash simulation, or a close racing a committer): the commit must
    raise ClosedError. Before the fix commit_wait returned with
    durable_seq covering a record that was never written."""
    fs = GateFS()
    log = Log(fs)
    a = log.append(FULL)
    log.w.close(sync=False)
    with pytest.raises(ClosedError, match="closed"):
        log.w.commit_wait(a, FULL)
    assert log.w.durable_seq < a
    assert all(a not in seqs for seqs in records(fs.clone()).values())


def test_close_without_a_segment():
    """A writer closed before its first segment (an open that failed
    early) creates nothing and raises nothing."""
    fs = CrashFS()
    makedirs_durable(fs, WAL_DIR)
    w = WalWriter(fs, WAL_DIR, segment_size=1 << 20, sync_interval=3600.0)
    ops = fs.ops
    w.close()
    assert fs.ops == ops and fs.listdir(WAL_DIR) == []


@pytest.mark.parametrize("spare", ["ready", "failed"])
def test_close_with_preallocation_tidies_only_what_is_there(spare):
    """close() with preallocation: a live segment that was created (not a
    renamed spare) has no zero tail, so it is not truncated; the spare is
    removed when there is one, and not touched when its preparation
    failed. Either way the segment holds exactly its records."""
    fs = CrashFS()
    if spare == "failed":
        fs.fail("create", path=r"wal-spare", persistent=True)
    log = Log(fs, preallocate=4096, prepare_inline=True)
    a = log.commit(FULL)
    assert log.w.spare_failures == (1 if spare == "failed" else 0)
    assert fs.exists(log.w.spare_path) == (spare == "ready")
    truncates, removes = fs.counts.get("truncate", 0), fs.counts.get("remove", 0)
    log.w.close()
    assert fs.counts.get("truncate", 0) == truncates, "a segment without a zero tail was truncated"
    assert fs.counts.get("remove", 0) == removes + (spare == "ready")
    assert not fs.exists(log.w.spare_path)
    assert records(fs) == {seg(1): [a]} and fs.file_size(seg(1)) == log.w.bytes_written + 24


def test_spare_segment_idle_cases():
    """SpareSegment: a second prepare while one is ready writes nothing and
    says ready; after close, want() starts no thread and prepares nothing;
    a size of 0 never prepares."""
    fs = CrashFS()
    makedirs_durable(fs, WAL_DIR)
    sp = SpareSegment(fs, WAL_DIR, 4096, inline=False, stopped=lambda: False)
    assert sp.prepare() is True
    ops = fs.ops
    assert sp.prepare() is True and fs.ops == ops
    assert sp.take() is True and sp.take() is False
    sp.close()
    sp.want()
    assert sp._thread is None and fs.ops == ops
    assert sp.prepare() is False
    off = SpareSegment(fs, WAL_DIR, 0, inline=True, stopped=lambda: False)
    off.want()
    assert off.prepare() is False and fs.ops == ops


def test_leader_behind_a_failed_write_does_not_acknowledge():
    """A FULL commit's leader waits for ``_io_mu`` while an OFF commit
    writes the staged FULL record with its own; that write is cut short and
    then fails (a disk that filled, then freed space). The writer is fenced
    (the docstring: every waiter raises). The leader must not go on to
    write and sync: its FULL commit must not return, since the record now
    sits behind a torn one that recovery drops as a torn tail."""
    fs = GateFS()
    log = Log(fs)
    w = log.w
    w._io_mu = spy = SpyLock()
    a = log.append(FULL)
    hold = fs.hold("write", re.escape(seg(1)))
    tc = Run(lambda: log.append(OFF), "off-append")  # writes the staged record with its own, under _io_mu
    tc.start()
    hold.wait_entered()
    leader = Run(lambda: w.commit_wait(a, FULL), "leader")
    leader.start()
    assert spy.contended.wait(TIMEOUT)  # the leader waits for _io_mu
    fs.fail("write", short=True, keep=5)  # 5 bytes of the group write ...
    fs.fail("write", err=errno.ENOSPC)  # ... and the rest fails
    hold.release()
    assert isinstance(tc.finish().error, NeedsRecoveryError)
    leader.finish()
    if leader.error is None:  # acknowledged: then at least a power cut must keep it
        kept = [r.seq for r in scan_segment(fs.power_cut(mode="drop"), seg(1)).records]
        raise AssertionError(f"FULL commit {a} returned from a fenced writer; a power cut keeps {kept}")
    assert isinstance(leader.error, NeedsRecoveryError), leader.error
    assert fs.file_size(seg(1)) == 24 + 5, "the leader wrote after the fence"  # header + the torn 5 bytes
    w.close(sync=False)



def test_leader_fenced_while_lingering_does_not_acknowledge():
    """The writer fences while the next sync's leader lingers for its
    group: the linger ends (the loop checks ``fenced``), and the leader
    must then raise, not sync and return (docstring: every waiter of a
    fenced writer raises NeedsRecoveryError)."""
    from tests.test_wal_writer_races import LingerSpy, _after_a_group_of_three

    _fs, log, w = _after_a_group_of_three()

    def fence_now():
        w.fenced = OSError(errno.EIO, "another commit's write failed")  # as _fence does (under _cv, which the lingering leader has let go)
        return True

    w._linger_wait = LingerSpy(on_wait=fence_now)
    a = log.append(FULL)
    with pytest.raises(NeedsRecoveryError):
        w.commit_wait(a, FULL)
    w.close(sync=False)


def test_fence_while_a_group_forms_releases_its_waiters():
    """A group is forming (its first committer holds the timer, a second
    waits on the group's gate) when another commit's write fails and
    fences the writer: the forming group's sync will never run, so the
    fence opens its gate; both committers raise NeedsRecoveryError (none
    hangs, none returns as if durable), nothing more is written or
    synced, and no group is left forming."""
    from tests.test_wal_writer_races import LingerSpy, _after_a_group_of_three, _first_two_of_a_group

    fs, log, w = _after_a_group_of_three()
    syncs, writes = w.syncs, fs.counts["write"]
    w._linger_wait = spy = LingerSpy()  # the first waits without a timeout: only the gate ends its wait
    first, second, _ = _first_two_of_a_group(log, log.append(FULL), spy)
    assert w._forming
    w._fence(OSError(errno.EIO, "another commit's write failed"))
    for run in (first, second):
        run.finish()
        assert isinstance(run.error, NeedsRecoveryError), (run.name, run.error)
    assert not w._forming and w._sync_gate is None
    assert w.syncs == syncs and fs.counts["write"] == writes
    w.close(sync=False)


def test_close_without_sync_while_a_group_forms_releases_its_waiters():
    """close(sync=False) while a group forms: the group's sync will never
    run; its first committer (the timer) raises ClosedError when its time
    is up and opens the group's gate, so the second committer raises too
    instead of waiting forever."""
    from tests.test_wal_writer_races import LingerSpy, _after_a_group_of_three, _first_two_of_a_group

    _fs, log, w = _after_a_group_of_three()
    closed = __import__("threading").Event()
    w._linger_wait = spy = LingerSpy(on_wait=lambda: closed.wait(5) or True)  # times out once closed
    first, second, _ = _first_two_of_a_group(log, log.append(FULL), spy)
    w.close(sync=False)
    closed.set()
    for run in (first, second):
        run.finish()
        assert isinstance(run.error, ClosedError), (run.name, run.error)
    assert not w._forming and w._sync_gate is None


def test_close_without_sync_releases_the_waiters_of_the_designated_next_leader():
    """A sync runs (held); commit B waits to lead the next sync (the
    designated leader, ``_next_gate``) and commit C waits on that next
    sync's gate. close(sync=False), then the running sync succeeds (as an
    fdatasync already in the kernel does when another thread closes the
    descriptor: the test defers CrashFS's close until it ends): B finds
    the writer closed and raises ClosedError; it must open the gate it was
    to lead, or C waits forever."""
    from tests.test_wal_writer_races import _poll, in_sync_to

    fs = GateFS()
    log = Log(fs)
    w = log.w
    ta, hold, a = _leader_held_in_sync(fs, log)
    b = log.append(FULL)  # staged behind the running sync
    tb = Run(lambda: w.commit_wait(b, FULL), "designated")
    tb.start()
    assert _poll(lambda: w._next_gate is not None)  # B is the next sync's leader
    c = log.append(FULL)
    tc = Run(lambda: w.commit_wait(c, FULL), "waiter")
    tc.start()
    _poll(lambda: in_sync_to(tc))
    f, w._file = w._file, type("Deferred", (), {"close": lambda self: None})()  # close() drops it, not f
    w.close(sync=False)
    hold.release()
    assert ta.finish().error is None, ta.error
    f.close()
    for run in (tb, tc):
        run.finish()
        assert isinstance(run.error, ClosedError), (run.name, run.error)
    assert w._next_gate is None and w.fenced is None
    assert w.durable_seq == a


class _RenameHookFS(CrashFS):
    """CrashFS that runs ``before_rename(src)`` once, just before the next
    rename: the spare thread's moment inside a rotation's take-rename
    window, made deterministic."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.before_rename = None

    def rename(self, src, dst):
        hook, self.before_rename = self.before_rename, None
        if hook is not None:
            hook(src)
        super().rename(src, dst)


def test_prepare_inside_a_rotation_leaves_the_taken_spare_alone():
    """A rotation took the ready spare and is about to rename it into place
    when a prepare runs (a stale kick of the spare thread). The prepare
    must not touch the spare's path: a create there truncated the file
    being renamed (or, after the rename, wrote its zeros through its own
    descriptor over the new segment's records) and left ``_ready`` set for
    a file that had been renamed away, so the next rotation fenced on a
    missing spare. Found by crash_kill's power-cut run, seed 429180525."""
    fs = _RenameHookFS()
    log = Log(fs, preallocate=4096, prepare_inline=True)
    w = log.w
    assert fs.exists(w.spare_path), "the inline spare is prepared after the first rotation"
    a = log.commit(FULL)
    seen = []

    def spare_thread_wins(src):
        ops = fs.ops
        seen.append((src, w._spare.prepare(), fs.ops - ops))

    fs.before_rename = spare_thread_wins
    log.rotate()
    assert seen == [(w.spare_path, False, 0)], "a prepare inside the take-rename window touched the spare"
    assert fs.exists(w.spare_path) and w._spare._ready, "the rotation's want() prepares the next spare"
    b = log.commit(FULL)
    log.rotate()  # takes the spare prepared after the window: it exists
    c = log.commit(FULL)
    assert w.fenced is None
    assert records(fs) == {seg(1): [a], seg(2): [b], seg(3): [c]}
    assert durable(fs) == {seg(1): [a], seg(2): [b], seg(3): [c]}
