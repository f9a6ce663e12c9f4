"""The WAL writer's sync path: group commit, the sync leader and its
gates, the adaptive linger, the background syncer, fencing. A mixin of
:class:`lsm.wal.writer.WalWriter` (the state it shares with the append
path is set up by :meth:`GroupSync._init_sync`; the writer's docstring has
the commit protocol, staging and the sync levels).

Group commit: syncs are shared, and so are the writes of FULL/EXTRA
records. The first committer that needs a sync becomes the sync leader:
it writes every staged record in one write(2) and fdatasyncs (outside
every lock but ``_cv``'s wait, and ``_io_mu`` for the write) while later
committers stage their records and queue up behind it; when it finishes,
the next leader's single write and fdatasync cover all of them. One
write(2) and one fdatasync per group, however many committers wait.

Failure: any error from write(2) or a sync fences the writer: ``fenced``
holds the error, every waiter and every later call raises
NeedsRecoveryError, and the failed sync is never retried (the kernel may
have dropped the dirty pages; a retry could falsely succeed).

Group size: a group may form before its sync so that the committers the
previous sync released can append first (a fixed ``commit_linger_us``, or
by default adaptive: only while several threads commit, for as many
commits as the last sync released plus those staged behind it,
``_want``). While no sync runs, the first committer that needs one forms
the group (``_forming``; its gate is ``_sync_gate``) and waits on its gate
with a timer; the committer whose commit completes the group leads the
sync itself (no hand-off back to the first: one context switch less per
group), or the timer's holder does when the linger time is up. A fence
opens a forming group's gate (its sync will never run).

Durable offset (WAL format version 2): ``synced_offset`` is the offset in
the live segment up to which it is known durable: the segment's size when
a sync that completed started (0 for a new segment). Each record carries
the value it had when it was appended (``encode_record(..., synced)``), so
that recovery can tell a never-synced hole from damage to synced bytes
(docs/format/wal.md, "Version 2"). It is WRITTEN under ``_cv`` (by the
sync leader, only while the synced file is still the live one, and reset
by ``start_segment_locked``, which swaps ``_file`` under ``_cv`` too) and
READ by the DB under the DB write lock without ``_cv``: a stale (smaller)
value is safe, a read never sees a value larger than the truth.

Locks: ``_cv`` (a Condition) guards ``durable_seq``, the sync gates,
``synced_offset`` (writes) and the
counters (a follower joining a forming group reads the gate and the
counters without it, then waits on the gate: :meth:`GroupSync.sync_to`,
"Fast path"). ``_io_mu`` serializes writes to the live segment while records
are staged (and guards unstaging). Lock order: DB write lock, then
``_io_mu``, then ``_cv`` (taken under ``_io_mu`` only to fence); the sync
leader takes ``_io_mu`` without the DB write lock and never while holding
``_cv``; ``_cv`` is never held across I/O.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left as _bisect_left
from collections.abc import Callable

from lsm.base.errors import ClosedError, NeedsRecoveryError
from lsm.base.fs import FileSystem, WritableFile, io_site
from lsm.base.fs import enter_site as _enter_site
from lsm.base.fs import exit_site as _exit_site
from lsm.options import Sync

_perf_counter = time.perf_counter


_UNBOUNDED = 1 << 63  # a sync target above every sequence number


_Lock = threading.Lock


def _new_gate() -> threading.Lock:
    gate = threading.Lock()
    gate.acquire()
    return gate

_FULL = Sync.FULL
_BARRIER = Sync.BARRIER
_EXTRA = Sync.EXTRA
_NORMAL = Sync.NORMAL

GROUP_HIST_BOUNDS = (1, 2, 4, 8, 16, 32, 64, 128)
"""Upper bounds of the commits-per-sync histogram buckets (last is +inf)."""

SYNC_LATENCY_SAMPLES = 1024
"""WAL syncs whose durations are kept (a ring) for the latency percentiles
(:meth:`GroupSync.sync_latency`). A power of two."""
_LAT_MASK = SYNC_LATENCY_SAMPLES - 1


class GroupSync:
    """The sync half of the WAL writer (module docstring). REQUIRES of the
    class that extends it: the append-side attributes declared below, set
    before :meth:`_init_sync` is called."""

    # -- set up by WalWriter.__init__ (lsm/wal/writer.py)
    fs: FileSystem
    wal_dir: str
    sync_interval: float
    commit_linger: float
    _on_fence: Callable[[BaseException], None] | None
    _mu: threading.Lock
    _cv: threading.Condition
    _staged: list[bytes]
    _io_mu: threading.Lock
    _file: WritableFile | None
    written_seq: int
    _written_commits: int
    bytes_written: int

    def _init_sync(self) -> None:
        # -- guarded by self._cv:
        self.durable_seq = 0
        self._synced_commits = 0
        # Sync gates (group commit): a gate is a Lock created held. The
        # leader holds ``_sync_gate`` for its sync and releases it after
        # publishing the result; waiters acquire-and-release it, each
        # waking the next (no Condition wait/notify round, no thundering
        # herd on ``_cv``: in tools/sync_lab.py a Condition cost ~5-8 us
        # more CPU and ~0.9 more context switches per commit, per-waiter
        # locks all released by the leader ~2 us and ~0.6). ``_next_gate``
        # is the gate the next sync will use, created by the first
        # committer that waits for it.
        self._sync_gate: threading.Lock | None = None
        self._next_gate: threading.Lock | None = None
        # A group forms while no sync runs (``_forming``, its gate is
        # ``_sync_gate``): the commit that completes it leads its sync, or
        # the thread that formed it (its timer) when the linger time is up.
        self._forming = False
        self._formed_at = 0.0
        self._sync_target = 0  # written_seq the running (or last) sync covers
        self._barrier_seq = 0  # guarded by the DB write lock: the last BARRIER commit's seq, set by its
        # append (a later append syncs up to it first while it is above durable_seq)
        self._dir_synced = True  # the live segment's directory entry is durable
        self.fenced: BaseException | None = None
        self.synced_offset = 0  # the live segment is durable up to here (module docstring)
        self.syncs = 0
        self.dir_syncs = 0
        self.sync_seconds = 0.0
        self._sync_lat = [0.0] * SYNC_LATENCY_SAMPLES  # durations of the last syncs, a ring indexed by syncs
        self.synced_bytes = 0  # bytes_written covered by the last sync
        self.unsynced_since = 0.0  # time.monotonic() of the oldest unsynced commit, about (no lock)
        self.group_hist = [0] * (len(GROUP_HIST_BOUNDS) + 1)
        self.linger_seconds = 0.0  # time leaders spent waiting for a group to form
        self._last_group = 1  # commits covered by the last sync
        self._want = 1  # commits a forming group waits for (set when a sync ends)
        self._sync_ewma = 0.0002  # seconds, a moving average of one WAL sync
        self._waiting = 0  # threads in _cv.wait() (sync_to, wait_durable): notify only when > 0
        self._closed = False
        self._syncer: threading.Thread | None = None
        self._kick = threading.Event()
        # With nothing unsynced the syncer waits on _wake with no timeout:
        # a NORMAL commit sets it (commit_wait), a kick (_kick_syncer) sets
        # both. _syncer_idle is written by the syncer only.
        self._wake = threading.Event()
        self._syncer_idle = False

    def sync_to(self, seq: int, level: int = _FULL) -> None:
        """Block until every record up to ``seq`` is durable (and the live
        segment's directory entry too). Group commit: at most one sync runs
        at a time; waiters that arrive during it are covered by the next.

        Waiting is on sync gates (see ``__init__``): a committer whose
        record the running sync covers waits for that sync's gate; the
        others wait for the next sync's gate, except the first of them,
        which waits for the running sync and then leads the next one. The
        result (``durable_seq``, or ``fenced``) is published under ``_cv``
        before a gate opens, so a waiter never starts a sync after a failed
        one (a failed sync is never retried). The leader first writes the
        staged records (one write(2), under ``_io_mu``); a failed write is
        published like a failed sync. This is also the lone FULL writer's
        path, once per commit: it takes ``_cv``'s lock twice (as ``_mu``:
        a Condition's ``with`` costs two Python calls) and ``_io_mu`` once,
        each by ``acquire()`` and ``release()`` in ``try``/``finally`` (a
        ``with`` on a lock builds and frees two bound methods and calls
        ``__exit__`` with three arguments: ~1.5k instructions per commit
        with 8 threads, ~3.5k for a lone committer, tools/group_callgrind.py),
        and does a few attribute updates around the fdatasync. A waiter
        that the sync it waited for covered returns when the gate opens,
        without another round on ``_cv``. While several threads commit, a
        group forms first (module docstring, "Group size"): its first
        committer waits with a timer, and the commit that completes it (or
        the timer) leads.

        Fast path, without ``_cv``'s lock: a committer that finds a group
        forming that its own commit does not complete (the common case
        with many threads: every member but the first and the last) waits
        on that group's gate at once, and re-checks under the lock (the
        loop below) if the gate opens without making it durable. The
        unlocked reads may be stale or mixed (a sync may publish between
        them); each outcome is safe: any gate read from ``_sync_gate``
        opens (its leader, its timer, a close or a fence opens it), a
        stale gate only sends the committer round the loop, and a group
        that the committer's own commit completed (counted before this
        call, by ``append_locked``) reads as complete, so it takes the
        loop and leads (a mixed read that says "not complete" then only
        leaves the group to its timer). Saves the lock round and the
        loop's checks for most followers (tools/group_callgrind.py).
        ``DB.put`` inlines this fast path before it calls here (one frame
        less per follower): keep the two in step."""
        gate = self._sync_gate
        if (gate is not None and self._forming and self.fenced is None and self.durable_seq < seq
                and (self._written_commits - self._synced_commits < self._want or self.commit_linger)):
            gate.acquire()  # blocks until the group's sync is published (or its group is dissolved)
            gate.release()  # and lets the next waiter through
            if self.durable_seq >= seq and self._dir_synced and self.fenced is None:
                return
        mu = self._mu
        designated: threading.Lock | None = None  # the next sync's gate, if this thread is to lead it
        timer: threading.Lock | None = None  # the forming group's gate, while this thread holds its timer
        while True:
            mu.acquire()
            try:
                if self.fenced is not None:
                    self._raise_fenced()  # (a fence opens a forming group's gate: _open_next_gate_locked)
                cur = self._sync_gate
                if timer is not None and (cur is not timer or not self._forming):
                    timer = None  # its group was led by the commit that completed it
                if (self.durable_seq >= seq and self._dir_synced and (designated is None or self._next_gate is not designated)
                        and (timer is None or cur is not timer)):
                    return  # (a designated leader, or a forming group's timer, stays: others wait for its gate)
                # Not durable yet, so a segment was started (a record was
                # written or staged). close() sets _closed before it drops
                # the segment: read in this order, f is the live segment
                # unless the writer is closed, and a record staged or
                # written now was never synced.
                f = self._file
                if f is None or self._closed:
                    if timer is not None:  # (close(sync=False) while its group formed) its waiters raise too
                        self._forming = False
                        self._sync_gate = None
                        timer.release()
                    if designated is not None and self._next_gate is designated:  # the next sync's waiters too
                        self._next_gate = None
                        designated.release()
                    raise ClosedError(f"WAL writer for {self.wal_dir} is closed: commit {seq} cannot be made durable")
                if cur is None:  # no group: form one (it covers every record staged before its claim)
                    gate = self._next_gate
                    if gate is None:
                        gate = _Lock()  # _new_gate(), inlined: once per sync
                        gate.acquire()
                    else:
                        self._next_gate = None
                    self._sync_gate = gate
                    # Committers arriving while the group forms or its
                    # leader writes the staged records are covered by this
                    # sync (its target is read after; a waiter that reads
                    # _UNBOUNDED re-checks durable_seq when the gate opens).
                    self._sync_target = _UNBOUNDED
                    want = self._want
                    if not self.commit_linger and (want <= 1 or self._written_commits - self._synced_commits >= want):
                        break  # a lone committer, or the group is complete: lead at once
                    self._forming = True
                    timer = gate
                    t0 = self._formed_at = _perf_counter()
                    deadline = t0 + (self.commit_linger or min(max(self._sync_ewma, 0.00005), 0.002))
                elif self._forming:
                    # A group is forming: the commit that completes it leads
                    # its sync (no hand-off back to the thread that formed
                    # it), or the timer's holder when its time is up.
                    gate = cur
                    if ((self._written_commits - self._synced_commits >= self._want and not self.commit_linger)
                            or (timer is cur and _perf_counter() >= deadline)):
                        self._forming = False
                        self.linger_seconds += _perf_counter() - self._formed_at
                        break
                elif seq <= self._sync_target and self._dir_synced:
                    gate = cur  # the running sync covers seq
                else:
                    gate = self._next_gate
                    if gate is None:  # lead the next sync once this one ends
                        designated = self._next_gate = _new_gate()
                        gate = cur
            finally:
                mu.release()
            if timer is gate:
                left = deadline - _perf_counter()
                if left > 0 and self._linger_wait(gate, left):
                    gate.release()
                    timer = None
                    if self.durable_seq >= seq and self._dir_synced and self.fenced is None:
                        return
                continue  # timed out: lead if still forming (above)
            gate.acquire()  # blocks until that sync's result is published
            gate.release()  # and lets the next waiter through
            if designated is None and self.durable_seq >= seq and self._dir_synced and self.fenced is None:
                return  # covered (published before the gate opened): no second round on _cv
        need_dir = not self._dir_synced
        err: BaseException | None = None
        token = _enter_site("wal")
        # Write the staged records (this group's and any staged since) in
        # one write(2). written_seq is read before the staged list: every
        # record up to ``target`` is then in the list or already written.
        # Not under _cv: direct appends wait on _io_mu only while records
        # are staged, and never hold _cv while they wait.
        staged = self._staged
        io_mu = self._io_mu
        io_mu.acquire()
        try:
            target = self.written_seq
            target_bytes = self.bytes_written
            commits = self._written_commits
            n = len(staged)
            if self.fenced is not None:
                # Fenced since this leader checked (a write that failed
                # while it lingered or waited here for _io_mu, maybe after
                # a short write that tore the file): it must neither write
                # nor sync, and its commit must not return (a record
                # written behind the damage is lost with it).
                err = self.fenced
            elif n:
                try:
                    f.write(staged[0] if n == 1 else b"".join(staged[:n]))
                    del staged[:n]
                except BaseException as e:  # noqa: BLE001 - fences below, like a failed sync
                    err = e
            target_off = f.size  # all written before the sync starts
        finally:
            io_mu.release()
        self._sync_target = target  # one store, read under _cv (the comment above)
        t0 = _perf_counter()
        try:
            if err is not None:
                raise err
            f.datasync() if level < _EXTRA else f.fsync()
            if need_dir:
                self.fs.sync_dir(self.wal_dir)
        except BaseException as e:  # noqa: BLE001 - any failure fences
            err = e
        dt = _perf_counter() - t0
        _exit_site(token)
        mu.acquire()
        try:
            self._sync_gate = None
            if err is not None:
                if self.fenced is None:
                    self.fenced = err  # before the gate opens: no waiter may retry the sync
                self._open_next_gate_locked()
            else:
                if target > self.durable_seq:
                    self.durable_seq = target
                # f is still the live segment: rotation swaps it only under
                # _cv while no sync gate is set, and this one was cleared
                # in this same hold of _cv.
                if target_off > self.synced_offset:
                    self.synced_offset = target_off
                group = commits - self._synced_commits
                self._synced_commits = commits
                n = self.syncs
                self._sync_lat[n & _LAT_MASK] = dt
                self.syncs = n + 1
                self.sync_seconds += dt
                self.synced_bytes = target_bytes
                if self.written_seq > target:  # appended during the sync: at most about this old
                    self.unsynced_since = t0
                self._sync_ewma += (dt - self._sync_ewma) * 0.125
                if need_dir:
                    self.dir_syncs += 1
                    self._dir_synced = True  # f's entry, and f is live (above)
                if group > 0:  # (groups and synced_commits: properties, from this)
                    self._last_group = group
                    # The next group: the commits this sync released (their
                    # threads commit again) and those staged behind it.
                    # Not half of that, nor 1 (sync what is staged as soon as
                    # this sync ends), nor ceil(S / w) from the measured sync
                    # and per-commit times: with 8 FULL threads they gave
                    # ~4 commits per sync (the S/w rule 6-8) and lost, in
                    # tools/sync_lab.py at every simulated sync (50-400 us)
                    # and in the harness on the real disk. A thread back from
                    # its fdatasync must retake the GIL behind the other
                    # threads' Python work: a 4-commit cycle measured about
                    # S plus that work, not max(S, 4w).
                    self._want = group + self._written_commits - commits
                    self.group_hist[_bisect_left(GROUP_HIST_BOUNDS, group)] += 1
            if self._waiting:
                self._cv.notify_all()
        finally:
            mu.release()
        gate.release()
        if err is not None:
            self._fence(err)
            self._raise_fenced()

    @property
    def groups(self) -> int:
        """Syncs that covered at least one commit (the histogram's total:
        derived, one counter less to bump per sync)."""
        return sum(self.group_hist)

    @property
    def synced_commits(self) -> int:
        """Commits made durable by those syncs (``_synced_commits``: every
        sync that covers commits moves it by its group)."""
        return self._synced_commits

    def sync_latency(self) -> dict[str, float]:
        """Durations of the last ``SYNC_LATENCY_SAMPLES`` WAL syncs, in
        seconds: ``samples``, ``p50``, ``p90``, ``p99``, ``max`` (nearest
        rank; all 0 before the first sync). A sync's duration is what its
        group's commits waited for: the fdatasync (fsync under EXTRA), plus
        any sealed segment's and the directory's sync when due."""
        with self._cv:
            n = min(self.syncs, SYNC_LATENCY_SAMPLES)
            xs = self._sync_lat[:n]
        xs.sort()
        out: dict[str, float] = {"samples": n}
        for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99)):
            out[name] = xs[max(0, -int(-q * n) - 1)] if n else 0.0
        out["max"] = xs[-1] if n else 0.0
        return out

    def _linger_wait(self, gate: threading.Lock, timeout: float) -> bool:
        """The forming group's first committer (the timer's holder): wait up
        to ``timeout`` seconds for the group's ``gate`` to open (its sync,
        led by the commit that completed the group, published); True when
        it opened (then this thread holds it and releases it at once).
        ``_cv``'s lock NOT held. A plain lock rather than a Condition: a
        Condition's wait and notify are Python code, and cost ~2-3 us of CPU
        per commit with 8 FULL threads (docs/durability.md, "Group
        commit")."""
        return gate.acquire(True, timeout)

    def sync_all(self) -> int:
        """Make everything written so far durable; return that seq."""
        seq = self.written_seq
        self.sync_to(seq, _FULL)
        return seq

    def wait_durable(self, seq: int, timeout: float | None = None) -> bool:
        """Block until ``durable_seq >= seq`` or ``timeout`` seconds pass;
        True when durable. Starts the background syncer, so commits made at
        OFF become durable within ``sync_interval`` without a sync of their
        own. Raises NeedsRecoveryError if fenced, ValueError for a sequence
        number never written."""
        if seq > self.written_seq:
            raise ValueError(f"sequence number {seq} was never written (the last written is {self.written_seq})")
        if self.durable_seq >= seq:
            return True
        self._ensure_syncer()
        self._kick_syncer()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cv:
            while self.durable_seq < seq:
                if self.fenced is not None:
                    self._raise_fenced()
                if deadline is None:
                    left = None
                else:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                self._waiting += 1
                try:
                    self._cv.wait(left)
                finally:
                    self._waiting -= 1
        return True

    def sync_dir_extra(self) -> None:
        """EXTRA: make the WAL directory's entries durable now (after a
        segment was deleted or archived)."""
        with io_site("wal"):
            try:
                self.fs.sync_dir(self.wal_dir)
            except BaseException as e:
                self._fence(e)
                self._raise_fenced()
        with self._cv:
            self.dir_syncs += 1

    # ---------------------------------------------------------- syncer thread
    def _ensure_syncer(self) -> None:
        if self._syncer is None and not self._closed:
            with self._cv:
                if self._syncer is not None:
                    return
                t = threading.Thread(target=self._syncer_loop, name="lsm-wal-syncer", daemon=True)
                self._syncer = t
            t.start()

    def _kick_syncer(self) -> None:
        """Make the syncer sync now (BARRIER, wait_durable, close), idle or not."""
        self._kick.set()
        self._wake.set()

    def _syncer_loop(self) -> None:
        """NORMAL: fdatasync every sync_interval when there is unsynced data.
        BARRIER: sync at once when kicked.

        With nothing unsynced the thread waits on ``_wake`` with no timeout
        (an idle database wakes no thread; it woke every sync_interval).
        ``_syncer_idle`` is set before ``written_seq`` is read again, and a
        NORMAL commit moves ``written_seq`` before it reads the flag
        (commit_wait), so one of the two sees the other and no commit is
        left unsynced (under the GIL both are plain reads and writes). Woken
        by a NORMAL commit alone, the thread waits sync_interval first (its
        sync batches the commits that follow, as before); woken by a kick
        (``_kick`` set too: a barrier, wait_durable, close) it syncs at
        once."""
        while not self._closed:
            if self.written_seq <= self.durable_seq:
                self._syncer_idle = True
                if self.written_seq <= self.durable_seq:
                    self._wake.wait()
                self._syncer_idle = False
            self._kick.wait(self.sync_interval)  # at once after a kick; after a NORMAL commit's wake, the interval
            self._kick.clear()
            self._wake.clear()  # (a kick sets both: consumed together)
            if self._closed or self.fenced is not None:
                return
            seq = self.written_seq
            if seq > self.durable_seq:
                try:
                    self.sync_to(seq, _FULL)
                except (NeedsRecoveryError, ClosedError):  # fenced (the committers raise it), or closed under it
                    return

    # ------------------------------------------------------------- fencing
    def _fence(self, err: BaseException) -> None:
        with self._cv:
            if self.fenced is None:
                self.fenced = err
            self._open_next_gate_locked()
            self._cv.notify_all()
        if self._on_fence is not None:
            self._on_fence(err)

    def _open_next_gate_locked(self) -> None:
        """REQUIRES: ``_cv`` held and ``fenced`` set. Release the waiters of
        the next sync, which will never run: the committer that was to lead
        it raises instead of leading (the running sync's leader releases its
        own gate whatever happens)."""
        gate = self._next_gate
        if gate is not None:
            self._next_gate = None
            gate.release()
        if self._forming:  # a forming group's sync will not run either: its waiters raise
            self._forming = False
            gate, self._sync_gate = self._sync_gate, None
            gate.release()  # type: ignore[union-attr]

    def _check_fence(self) -> None:
        if self.fenced is not None:
            self._raise_fenced()

    def _raise_fenced(self) -> None:
        err = self.fenced
        raise NeedsRecoveryError(
            f"the WAL failed an I/O operation ({err!r}); the database is fenced: close and reopen it to recover",
            err,
        )

