"""Kill test: SIGKILL a writer process at random moments and verify the
reopened database after every kill; optionally with a simulated power cut.

Each cycle starts a writer child on the same database directory, with tiny
options (a 16 KiB memtable, a small manifest) so that every cycle switches
memtables, rotates WAL segments, flushes, compacts and rolls the manifest
over. Its 1 to 8 threads (``--threads``, drawn per cycle) commit random
puts, deletes and batches at random sync levels (``--sync-mix``), now and
then ask ``sync_wal``/``wait_durable`` for a durability promise, and report
every *acknowledged* commit (thread, commit number, first sequence number)
and every promise through a pipe, after the call returned. The driver
SIGKILLs the child at a random moment (a few per cent of the kills land
while the child is still opening the database), reopens the database itself,
checks it, and starts the next cycle on the same directory.

Two modes:

``--mode kill`` (default): a process crash. The operating system outlives
the writer and keeps everything it wrote with write(2). Checks:

* every acknowledged commit is present, at every sync level;
* the database equals the model after a prefix of the commit order by
  sequence number: the commits of this cycle fill the sequence numbers
  after the cycle's start without a hole, nothing comes back that was never
  written, and a batch is all or nothing. A commit a thread had in flight
  at the kill (at most one per thread, its ops known because every commit's
  ops are a pure function of ``seed, cycle, thread, commit number``) may
  fill a hole, or be absent when it lies beyond the recovered end;
* (Linux) no background worker of the killed writer outlives it: the
  driver is a child subreaper, so orphaned workers become its children,
  and one still running ``--orphan-timeout`` seconds after the kill fails
  the cycle (a stale worker could clobber a table of the reopened
  database; see lsm/compaction/worker.py).

The background mode is drawn per cycle: ``--background mixed`` (default)
runs ``--process-share`` of the cycles (evenly spread) with worker
processes and the rest with a background thread.

When to kill, drawn per cycle: most cycles are killed 0 to ``--max-ms``
after the writer completed a flush and a compaction (so every such cycle
crosses both, and a manifest roll-over, however slow the machine; a fresh
worker process needs a few hundred milliseconds before its first flush);
``--time-kill-prob`` of them 0 to ``--max-ms`` after the open, whatever
was done; ``--early-kill-prob`` of them within ``--early-ms`` of the start,
many while the writer is still opening (recovering) the database; and
``--long-prob`` of the work-bounded ones write on for up to ``--long-ms``.

``--mode power``: a power cut. The writer's filesystem layer is
``tools/power_cut_fs.py``'s SyncTrackingFS, which journals every create,
rename, unlink, truncate, file sync and directory sync to the driver as it
happens (the journal lives outside the crash domain). After the kill the
driver rolls the directory back to a state the disk could hold had the
power failed at that moment (each unsynced directory change applied or
reverted, each unsynced file tail dropped, kept, torn, or torn and followed
by zeros or garbage; the same rules as lsm.base.crashfs.CrashFS), reopens
(journalled too, so the next cut also judges what recovery synced) and
checks the power-cut promises of docs/durability.md:

* every commit acknowledged at FULL or EXTRA, every BARRIER commit that a
  later acknowledged commit followed, and every sequence number a
  ``sync_wal``/``wait_durable`` call reported durable, is present; so is
  everything verified in earlier cycles (the driver's clean close synced it);
* the database equals the model after a prefix of the commit order, ending
  on a commit boundary; holes only where in-flight commits fit; nothing
  that was never written; batches all or nothing.

Worker processes do their I/O outside the tracking layer, so power cycles
use ``background="thread"``. ``DIR.cut.txt`` describes the last cut (which
unsynced changes it applied or reverted, what it left of each unsynced
file), ``--keep-precut`` keeps the directory as the writer left it in
``DIR.precut``; the tracking layer's copies of unlinked and rewritten files
are in ``DIR.shadow``.

Cheap cycles: the driver starts one *zygote* process that imports lsm once
and forks a writer per cycle (a fork costs milliseconds; a fresh Python and
``import lsm`` some 300 ms).

Values are unique per op (``cycle.thread.commit.op:`` plus random filler),
so the comparison is exact.

    python tools/crash_kill.py --seed 1 --cycles 300
    python tools/crash_kill.py --mode power --cycles 200 --threads 1-8
    python tools/crash_kill.py --cycles 20 --background process --threads 2

Figures: the summary line counts flushes, compactions and manifest
roll-overs completed by the writers (from the version edits they made) and
the cycles that saw each; with ``--reliability-log FILE`` (default: the
``LSM_RELIABILITY_LOG`` environment variable) one JSON line per run is
appended, family ``kill9`` or ``kill9_power``.

Exit status: 0 when every cycle verified; 1 on a failed check (the message
names the cycle and prints a command line replaying the run: same workload,
threads, modes and kill schedule; the timing of a kill within the writes is
the OS's); 2 on a usage error.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import random
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from power_cut_fs import DurableModel, HarnessError, SyncTrackingFS

import lsm
from lsm.manifest.version_set import VersionSet

LEVELS = {s.name: s for s in lsm.Sync}

TINY = {
    "memtable_size": 16 * 1024,
    "wal_segment_size": 16 * 1024,
    "target_file_size": 16 * 1024,
    "block_size": 1024,
    "l0_compaction_trigger": 2,
    "l0_slowdown_trigger": 6,
    "l0_stop_trigger": 12,
    "max_bytes_for_level_base": 64 * 1024,
    "level_multiplier": 4,
    "num_levels": 5,
    "sync_interval": 0.02,
}
"""Database options of the writer (and of the driver's reopen, apart from
``background``): small enough that every cycle switches memtables, rotates
WAL segments, flushes and compacts (measured: see the summary line)."""

PUT, DELETE = 1, 0  # lsm.base.coding.ValueKind


# --------------------------------------------------------------- workload


@dataclass(frozen=True)
class Workload:
    seed: int
    keys: int = 2000
    value_size: int = 100
    batch_prob: float = 0.2
    delete_prob: float = 0.15
    max_batch: int = 20
    big_prob: float = 0.01
    promise_prob: float = 0.02
    mix: tuple[tuple[str, int], ...] = (("FULL", 45), ("EXTRA", 5), ("BARRIER", 15), ("NORMAL", 15), ("OFF", 20))


@dataclass
class Commit:
    """One commit of a writer thread: what it does, as a pure function of
    (workload, cycle, thread, n). ``after``: once it returned, the thread
    asks for a durability promise ("sync_wal", "wait_durable") or not ("")."""

    thread: int
    n: int
    level: str
    kind: str  # "put", "delete", "batch"
    ops: list[tuple[int, bytes, bytes]]  # (PUT/DELETE, key, value)
    after: str = ""

    @property
    def count(self) -> int:
        return len(self.ops)

    def describe(self) -> str:
        return f"thread {self.thread} commit {self.n} ({self.kind} of {self.count} op(s) at {self.level})"


def make_commit(w: Workload, cycle: int, thread: int, n: int) -> Commit:
    rng = random.Random(f"{w.seed}/{cycle}/{thread}/{n}")
    names = [m[0] for m in w.mix]
    level = rng.choices(names, weights=[m[1] for m in w.mix])[0]
    r = rng.random()
    if r < w.batch_prob:
        kind, nops = "batch", rng.randint(2, w.max_batch)
    elif r < w.batch_prob + w.delete_prob:
        kind, nops = "delete", 1
    else:
        kind, nops = "put", 1
    ops = []
    for i in range(nops):
        key = b"k%06d" % rng.randrange(w.keys)
        if kind == "delete" or (kind == "batch" and rng.random() < w.delete_prob):
            ops.append((DELETE, key, b""))
            continue
        size = rng.randint(0, 2 * w.value_size)
        if rng.random() < w.big_prob:
            size = rng.randint(4096, 20000)  # records that span pages: a kill can tear their write(2)
        tag = b"%d.%d.%d.%d:" % (cycle, thread, n, i)
        ops.append((PUT, key, tag + rng.randbytes(size)))
    after = ""
    if rng.random() < w.promise_prob:
        after = rng.choice(("sync_wal", "wait_durable"))
    return Commit(thread, n, level, kind, ops, after)


def value_origin(v: bytes) -> str:
    tag = v.split(b":", 1)[0]
    try:
        c, t, n, i = (int(x) for x in tag.split(b"."))
    except ValueError:
        return f"a value this test never wrote ({v[:40]!r})"
    return f"the value of cycle {c} thread {t} commit {n} op {i}"


# ------------------------------------------------------------------ child


def child_main(a: argparse.Namespace) -> None:
    """The writer: open, say ready, commit from --threads threads, report
    each acknowledged commit, each promise and each version edit; runs
    until killed."""
    out = a.report_fd
    w = workload_from(a)
    parent = os.getppid()
    opts = options_from(a)
    if a.mode == "power":
        fs = opts["fs"] = SyncTrackingFS(lambda line: os.write(out, line.encode()), a.shadow)
        _sabotage(fs, a.sabotage)
    log_and_apply = VersionSet.log_and_apply

    def counted(vs, edit):  # one report per version edit the writer made durable
        vs.manifest_max_size = a.manifest_max_size  # roll over (new manifest, CURRENT switch) often
        before = vs.manifest_number
        version = log_and_apply(vs, edit)
        kind = b"c" if edit.removed else (b"f" if edit.added else b"o")
        os.write(out, b"V %s %d\n" % (kind, vs.manifest_number != before))
        return version

    VersionSet.log_and_apply = counted  # this process has one database: patch before the open's first edit
    db = lsm.open(a.dir, background=a.background, **opts)
    os.write(out, b"R %d\n" % db.last_seq)
    stop = threading.Event()

    def writer(t: int) -> None:
        try:
            n = 0
            while not stop.is_set():
                if os.getppid() != parent:  # the driver (or zygote) died: stop writing
                    os._exit(5)
                c = make_commit(w, a.cycle, t, n)
                level = LEVELS[c.level]
                if c.kind == "put":
                    seq = db.put(c.ops[0][1], c.ops[0][2], sync=level)
                elif c.kind == "delete":
                    seq = db.delete(c.ops[0][1], sync=level)
                else:
                    b = lsm.WriteBatch()
                    for kind, key, value in c.ops:
                        b.put(key, value) if kind == PUT else b.delete(key)
                    seq = db.write(b, sync=level) - c.count + 1
                os.write(out, b"A %d %d %d\n" % (t, n, seq))  # one write(2) < PIPE_BUF: atomic
                if c.after == "sync_wal":
                    os.write(out, b"P %d\n" % db.sync_wal())
                elif c.after == "wait_durable":
                    end = seq + c.count - 1
                    if db.wait_durable(end, timeout=1.0):
                        os.write(out, b"P %d\n" % end)
                n += 1
        except BaseException as e:  # noqa: BLE001 - reported to the driver
            os.write(out, b"E %s\n" % repr(e).replace("\n", " ").encode()[:3000])
            os._exit(4)

    threads = [threading.Thread(target=writer, args=(t,), daemon=True) for t in range(a.threads_range[0])]
    for th in threads:
        th.start()
    time.sleep(a.max_seconds)  # the driver kills us long before this
    stop.set()
    os.write(out, b"E the writer was not killed within --max-seconds\n")
    os._exit(3)


def _sabotage(fs: SyncTrackingFS, what: str | None) -> None:
    """Break one durability rule of the engine, as seen by the disk, to
    show that power mode catches it (tests/test_crash_kill.py)."""
    if what == "wal-sync":  # WAL fsyncs do nothing: FULL commits are acknowledged unsynced
        sync = fs._sync
        fs._sync = lambda f, data_only: None if f.path.endswith(".wal") else sync(f, data_only)  # type: ignore
    elif what == "dir-sync":  # directory fsyncs do nothing: new files' names are never durable
        fs.sync_dir = lambda path: None  # type: ignore[method-assign]


# ----------------------------------------------------------------- zygote


def _pdeathsig() -> None:
    """Linux: SIGKILL this process when its parent dies."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass


def zygote_main(fd: int) -> None:
    """Fork one writer per request: lsm is imported once, here. Protocol on
    the SOCK_SEQPACKET socket ``fd``: request = JSON argv of the writer with
    two descriptors (report pipe, stderr); replies ``P pid`` at once and
    ``X pid exitcode`` when the writer ended. Exits at EOF."""
    _pdeathsig()
    sock = socket.socket(fileno=fd)
    while True:
        try:
            msg, fds, _flags, _addr = socket.recv_fds(sock, 1 << 16, 2)
        except OSError:
            return
        if not msg:
            return
        pid = os.fork()
        if pid == 0:
            try:
                sock.close()
                report_fd, err_fd = fds
                os.dup2(err_fd, 1)
                os.dup2(err_fd, 2)
                os.close(err_fd)
                _pdeathsig()
                a = parse_args(json.loads(msg))
                a.report_fd = report_fd
                child_main(a)
            except BaseException as e:  # noqa: BLE001
                os.write(2, f"writer failed to start: {e!r}\n".encode())
            finally:
                os._exit(6)
        for x in fds:
            os.close(x)
        sock.send(b"P %d" % pid)
        _, status = os.waitpid(pid, 0)
        sock.send(b"X %d %d" % (pid, os.waitstatus_to_exitcode(status)))


class Zygote:
    """The driver's end of :func:`zygote_main`."""

    def __init__(self, workdir: str):
        self.sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        cmd = [sys.executable, os.path.abspath(__file__), "--zygote-fd", str(theirs.fileno())]
        with open(os.path.join(workdir, "zygote-stderr.txt"), "wb") as err:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                         pass_fds=(theirs.fileno(),), env=_child_env())
        theirs.close()

    def _recv(self, timeout: float | None) -> list[str]:
        self.sock.settimeout(timeout)
        try:
            msg = self.sock.recv(256)
        except TimeoutError:
            return []
        if not msg:
            raise Failure(f"the zygote process died (exit {self.proc.wait()}); see zygote-stderr.txt")
        return msg.decode().split()

    def spawn(self, argv: list[str], fds: list[int]) -> int:
        socket.send_fds(self.sock, [json.dumps(argv).encode()], fds)
        kind, pid = self._recv(60)
        assert kind == "P", kind
        return int(pid)

    def exited(self, pid: int, timeout: float | None) -> int | None:
        """The writer's exit code (negative: killed by that signal), or
        None if it did not end within ``timeout``."""
        msg = self._recv(timeout)
        if not msg:
            return None
        assert msg[0] == "X" and int(msg[1]) == pid, msg
        return int(msg[2])

    def close(self) -> None:
        self.sock.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# ----------------------------------------------------------------- driver


@dataclass
class CycleResult:
    acked: dict[int, tuple[int, int]] = field(default_factory=dict)  # first seq -> (thread, commit number)
    promises: list[int] = field(default_factory=list)  # seqs reported durable by sync_wal / wait_durable
    ready_seq: int | None = None
    # version edits: flushes, compactions, others (open's); manifest roll-overs in all, in others
    edits: dict[str, int] = field(default_factory=lambda: {"f": 0, "c": 0, "o": 0, "rolls": 0, "o_rolls": 0})
    worked: threading.Event = field(default_factory=threading.Event)  # a flush and a compaction completed
    journal: list[str] = field(default_factory=list)  # SyncTrackingFS lines (power mode)
    errors: list[str] = field(default_factory=list)
    bad_lines: list[str] = field(default_factory=list)


class Failure(Exception):
    pass


def workload_from(a: argparse.Namespace) -> Workload:
    mix = []
    for part in a.sync_mix.split(","):
        name, _, weight = part.partition("=")
        name = name.strip().upper()
        if name not in LEVELS or not weight.strip().isdigit():
            raise SystemExit(f"--sync-mix: expected LEVEL=WEIGHT,... with levels {sorted(LEVELS)}, got {part!r}")
        mix.append((name, int(weight)))
    return Workload(seed=a.cycle_seed if a.child else a.seed, keys=a.keys, value_size=a.value_size,
                    batch_prob=a.batch_prob, delete_prob=a.delete_prob, max_batch=a.max_batch,
                    big_prob=a.big_prob, promise_prob=a.promise_prob, mix=tuple(mix))


def options_from(a: argparse.Namespace) -> dict:
    opts = dict(TINY)
    for item in a.option or ():
        name, _, value = item.partition("=")
        try:
            opts[name] = int(value)
        except ValueError:
            try:
                opts[name] = float(value)
            except ValueError:
                opts[name] = value
    return opts


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _set_subreaper() -> bool:
    """Adopt orphaned descendants (Linux PR_SET_CHILD_SUBREAPER), so that a
    worker outliving the killed writer becomes our child and is seen."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _adopted_children(exclude: set[int]) -> list[int]:
    """Pids whose parent is this process (scan of /proc), minus ``exclude``."""
    me = os.getpid()
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) in exclude:
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        if int(fields[1]) == me:
            out.append(int(name))
    return out


def _proc_state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return "gone"
    return stat[stat.rfind(b")") + 2 :].split()[0].decode()


def reap_orphans(timeout: float, exclude: set[int]) -> tuple[int, list[str]]:
    """Wait for adopted orphans (our children not in ``exclude``) to die;
    reap them. Returns (number reaped, descriptions of those still alive
    after ``timeout`` seconds, which are then killed)."""
    deadline = time.monotonic() + timeout
    reaped = 0
    while True:
        alive = []
        for pid in _adopted_children(exclude):
            if _proc_state(pid) in ("Z", "X", "gone"):
                try:
                    os.waitpid(pid, 0)
                    reaped += 1
                except ChildProcessError:
                    pass
            else:
                alive.append(pid)
        if not alive:
            return reaped, []
        if time.monotonic() >= deadline:
            stale = []
            for pid in alive:
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
                except OSError:
                    cmd = "?"
                stale.append(f"pid {pid} ({cmd.strip()}) still running {timeout} s after its parent was killed")
                try:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                except OSError:
                    pass
            return reaped, stale
        time.sleep(0.01)


@dataclass
class CyclePlan:
    """What the driver decides for one cycle, from its seeded generator.

    ``when``: "early" kills ``delay`` seconds after the writer started
    (perhaps while it opens); "time" kills ``delay`` seconds after it
    opened; "work" kills ``delay`` seconds after it completed a flush and a
    compaction (so the cycle crosses both whatever the machine's speed)."""

    cycle: int
    seed: int
    threads: int
    background: str
    when: str
    delay: float


def plan_cycle(a: argparse.Namespace, rng: random.Random, cycle: int) -> CyclePlan:
    seed = rng.randrange(1 << 32)
    threads = rng.randint(*a.threads_range)
    if a.background == "mixed":
        share = a.process_share
        background = "process" if int((cycle + 1) * share) > int(cycle * share) else "thread"
    else:
        background = a.background
    r = rng.random()
    long = rng.random() < a.long_prob
    if r < a.early_kill_prob:
        when, delay = "early", rng.uniform(0, a.early_ms)
    elif r < a.early_kill_prob + a.time_kill_prob:
        when, delay = "time", rng.uniform(0, a.max_ms)
    else:
        when, delay = "work", rng.uniform(a.max_ms, a.long_ms) if long else rng.uniform(0, a.max_ms)
    return CyclePlan(cycle, seed, threads, background, when, delay / 1000)


def run_child(a: argparse.Namespace, zygote: Zygote, plan: CyclePlan, stats: dict) -> tuple[CycleResult, str]:
    """Start the writer, kill it at the planned moment, collect its reports.
    Returns the reports and the child's stderr."""
    rfd, wfd = os.pipe()
    argv = ["--child", "--dir", a.dir, "--cycle", str(plan.cycle), "--cycle-seed", str(plan.seed),
            "--mode", a.mode, "--shadow", a.shadow, "--manifest-max-size", str(a.manifest_max_size)]
    argv += _passthrough(a, threads=str(plan.threads), background=plan.background)
    errpath = os.path.join(a.workdir, "child-stderr.txt")
    with open(errpath, "wb") as err:
        pid = zygote.spawn(argv, [wfd, err.fileno()])
    os.close(wfd)
    res = CycleResult()
    ready = threading.Event()

    def read_reports() -> None:
        buf = b""
        with os.fdopen(rfd, "rb", buffering=0) as f:
            while True:
                chunk = f.read(65536)
                if not chunk:
                    break
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    parse_report(line.decode(errors="replace"), res, ready)
        if buf:
            res.bad_lines.append(f"unterminated report {buf[:80]!r}")
        ready.set()

    reader = threading.Thread(target=read_reports, daemon=True)
    reader.start()
    rc = None
    if plan.when == "early":
        rc = zygote.exited(pid, plan.delay)
        stats["early_kills"] += 1 if not ready.is_set() else 0
    else:
        if not ready.wait(a.ready_timeout):
            os.kill(pid, signal.SIGKILL)
            zygote.exited(pid, None)
            raise Failure(f"the writer did not open the database within {a.ready_timeout} s")
        if plan.when == "work" and not res.worked.wait(a.work_timeout):
            stats["work_timeouts"] += 1
        rc = zygote.exited(pid, plan.delay)
    if rc is None:  # still running (else it ended by itself: an error)
        os.kill(pid, signal.SIGKILL)
        rc = zygote.exited(pid, None)
    reader.join(10)
    if reader.is_alive():
        raise Failure("the report pipe stayed open after the writer died (a descendant holds it)")
    with open(errpath, "rb") as f:
        stderr = f.read().decode(errors="replace")
    if rc != -signal.SIGKILL and not res.errors:
        res.errors.append(f"the writer exited with status {rc} before it was killed")
    return res, stderr


def parse_report(line: str, res: CycleResult, ready: threading.Event) -> None:
    parts = line.split(" ", 1)
    kind = parts[0]
    if kind.startswith("f"):
        res.journal.append(line)
    elif kind == "A":
        t, n, seq = (int(x) for x in parts[1].split())
        res.acked[seq] = (t, n)
    elif kind == "P":
        res.promises.append(int(parts[1]))
    elif kind == "V":
        what, rolled = parts[1].split()
        res.edits[what] += 1
        res.edits["rolls"] += int(rolled)
        res.edits["o_rolls"] += int(rolled) if what == "o" else 0
        if res.edits["f"] and res.edits["c"]:
            res.worked.set()
    elif kind == "R":
        res.ready_seq = int(parts[1])
        ready.set()
    elif kind == "E":
        res.errors.append(parts[1] if len(parts) > 1 else "?")
    else:
        res.bad_lines.append(line)


def read_db(a: argparse.Namespace, fs=None) -> tuple[dict[bytes, bytes], int, dict, list[int]]:
    """Reopen (inline background: nothing runs behind the check) and read
    everything: state, last_seq, recovery report, table files per level."""
    opts = {**options_from(a), "background": "inline"}
    if fs is not None:
        opts["fs"] = fs
    db = lsm.open(a.dir, **opts)
    try:
        state = dict(db.items())
        levels = [lv["files"] for lv in db.stats()["levels"]]
        return state, db.last_seq, db.recovery_report, levels
    finally:
        db.close()


def verify(w: Workload, cycle: int, res: CycleResult, threads: int, model: dict[bytes, bytes], start_seq: int,
           state: dict[bytes, bytes], last_seq: int, power: bool = False) -> dict[str, int]:
    """Check one cycle (module docstring): the kill promises, or with
    ``power`` the power-cut promises. Returns figures; raises Failure."""
    if res.ready_seq is not None and res.ready_seq != start_seq:
        raise Failure(f"the writer opened the database at last_seq {res.ready_seq}, the driver left it at {start_seq}")
    if last_seq < start_seq:
        raise Failure(f"the reopened database ends at seq {last_seq}, below {start_seq}, which an earlier cycle "
                      "verified (and the driver's close made durable)")
    acked: dict[int, Commit] = {}
    per_thread: dict[int, list[int]] = {t: [] for t in range(threads)}
    for seq, (t, n) in sorted(res.acked.items()):
        per_thread[t].append(n)
        acked[seq] = make_commit(w, cycle, t, n)
    for t, ns in per_thread.items():
        if sorted(ns) != list(range(len(ns))):
            raise Failure(f"thread {t} acknowledged commits {sorted(ns)[:20]}...: not 0..n-1")
    pending = [make_commit(w, cycle, t, len(ns)) for t, ns in per_thread.items()]
    # A thread's in-flight commit follows its acknowledged ones: it can only take seqs above them.
    floors = [start_seq + 1] * len(pending)
    for s, c in acked.items():
        floors[c.thread] = max(floors[c.thread], s + c.count)
    ends = sorted((s, s + c.count - 1) for s, c in acked.items())
    for (s1, e1), (s2, _e2) in itertools.pairwise(ends):
        if s2 <= e1:
            raise Failure(f"acknowledged commits overlap: seqs {s1}..{e1} and {s2}")
    if ends and ends[0][0] <= start_seq:
        raise Failure(f"a commit was acknowledged with seq {ends[0][0]}, at or below the cycle's start {start_seq}")
    for p in res.promises:
        if p > last_seq:
            raise Failure(f"sync_wal/wait_durable reported seq {p} durable, but the reopened database ends at "
                          f"{last_seq}")

    # Which acknowledged commits must be there.
    if power:
        newest = max(acked, default=0)
        must = {s: f"acknowledged at {c.level}" for s, c in acked.items() if c.level in ("FULL", "EXTRA")}
        must.update({s: "acknowledged at BARRIER, and a later commit was acknowledged" for s, c in acked.items()
                     if c.level == "BARRIER" and s < newest})
        for s, c in acked.items():
            if s <= last_seq < s + c.count - 1:
                raise Failure(f"the reopened database ends at seq {last_seq}, inside {c.describe()} (seqs {s}.."
                              f"{s + c.count - 1}): a batch was split")
        kept = {s: c for s, c in acked.items() if s <= last_seq}
    else:
        must = {s: "acknowledged (a killed process loses nothing)" for s in acked}
        kept = acked
    lost = [(s, acked[s]) for s in sorted(must) if s + acked[s].count - 1 > last_seq]
    if lost:
        by_level: dict[str, int] = {}
        for _s, c in lost:
            by_level[c.level] = by_level.get(c.level, 0) + 1
        first_seq, first = lost[0]
        raise Failure(
            f"{len(lost)} commit(s) lost that had to survive (by level: {by_level}): the reopened database ends "
            f"at seq {last_seq}, but {first.describe()} was {must[first_seq]}, with seq {first_seq}"
        )

    # The holes between the kept acknowledged commits (up to the recovered
    # end) must be filled exactly by in-flight commits, one per thread at most.
    holes = []
    cur = start_seq + 1
    for s, e in sorted((s, s + c.count - 1) for s, c in kept.items()):
        if s > cur:
            holes.append((cur, s - cur))
        cur = e + 1
    if last_seq >= cur:
        holes.append((cur, last_seq - cur + 1))
    assignments = list(_fill(holes, pending, floors))
    if not assignments:
        raise Failure(
            f"sequence numbers {start_seq + 1}..{last_seq} are not explained by this cycle's commits: holes "
            f"(start, length) {holes[:10]} cannot be filled by the in-flight commits of counts "
            f"{[c.count for c in pending]} above seqs {floors} (a hole, or a commit that was never written, came back)"
        )
    best = None
    for assign in assignments:
        commits = dict(kept)
        commits.update(assign)
        expect = dict(model)
        for s in sorted(commits):
            for kind, key, value in commits[s].ops:
                if kind == PUT:
                    expect[key] = value
                else:
                    expect.pop(key, None)
        if expect == state:
            return {"acked": len(acked), "acked_lost_allowed": len(acked) - len(kept),
                    "in_flight_recovered": len(assign), "seqs": last_seq - start_seq,
                    "promises": len(res.promises)}
        if best is None:
            best = (expect, commits)
    expect, commits = best  # type: ignore[misc]
    writer = {}
    for s in sorted(commits):
        for i, (_k, key, _v) in enumerate(commits[s].ops):
            writer[key] = (s + i, commits[s])
    diffs = []
    for key in sorted(set(expect) | set(state)):
        if expect.get(key) != state.get(key):
            src = writer.get(key)
            why = f"last written at seq {src[0]} by {src[1].describe()}" if src else "not written in this cycle"
            got = value_origin(state[key]) if key in state else "absent"
            want = value_origin(expect[key]) if key in expect else "absent"
            diffs.append(f"  {key!r}: expected {want}, found {got} ({why})")
    raise Failure(f"the reopened database differs from the model after seqs {start_seq + 1}..{last_seq} in "
                  f"{len(diffs)} key(s):\n" + "\n".join(diffs[:15]))


def _fill(holes: list[tuple[int, int]], pending: list[Commit], floors: list[int], used: frozenset = frozenset()):
    """Every way to fill ``holes`` (start, length) with distinct commits of
    ``pending``, each hole by consecutive commits, commit i at or above seq
    ``floors[i]``: yields {first seq: Commit}."""
    if not holes:
        yield {}
        return
    (start, length), rest = holes[0], holes[1:]
    for i, c in enumerate(pending):
        if i in used or c.count > length or start < floors[i]:
            continue
        sub = [(start + c.count, length - c.count)] + rest if c.count < length else rest
        for tail in _fill(sub, pending, floors, used | {i}):
            yield {start: c, **tail}


def _passthrough(a: argparse.Namespace, *, threads: str | None = None, background: str | None = None) -> list[str]:
    out = ["--threads", threads or a.threads, "--keys", str(a.keys), "--value-size", str(a.value_size),
           "--batch-prob", str(a.batch_prob), "--delete-prob", str(a.delete_prob), "--max-batch", str(a.max_batch),
           "--big-prob", str(a.big_prob), "--promise-prob", str(a.promise_prob), "--sync-mix", a.sync_mix,
           "--background", background or a.background]
    if a.sabotage:
        out += ["--sabotage", a.sabotage]
    for o in a.option or ():
        out += ["--option", o]
    return out


def replay_command(a: argparse.Namespace, cycles: int | None = None) -> str:
    cmd = ["python", "tools/crash_kill.py", "--mode", a.mode, "--seed", str(a.seed), "--cycles",
           str(cycles or a.cycles), "--process-share", str(a.process_share),
           "--max-ms", str(a.max_ms), "--long-prob", str(a.long_prob), "--long-ms", str(a.long_ms),
           "--early-kill-prob", str(a.early_kill_prob), "--early-ms", str(a.early_ms),
           "--time-kill-prob", str(a.time_kill_prob),
           "--manifest-max-size", str(a.manifest_max_size)]
    cmd += _passthrough(a)
    return " ".join(shlex.quote(c) for c in cmd)


def _phase(phases: dict[str, float], name: str, since: float) -> float:
    now = time.perf_counter()
    phases[name] = phases.get(name, 0.0) + now - since
    return now


def _log_json(a: argparse.Namespace, record: dict) -> None:
    if a.reliability_log:
        with open(a.reliability_log, "a") as f:
            f.write(json.dumps(record) + "\n")


def driver_main(a: argparse.Namespace) -> int:
    if a.seed is None:
        a.seed = random.SystemRandom().randrange(1 << 32)
    w = workload_from(a)
    rng = random.Random(a.seed)
    power = a.mode == "power"
    own_dir = a.dir is None
    a.workdir = tempfile.mkdtemp(prefix="lsm-crash-kill-")
    if own_dir:
        a.dir = os.path.join(a.workdir, "db")
    elif os.path.exists(a.dir) and os.listdir(a.dir):
        print(f"crash_kill: --dir {a.dir} must be empty or absent (the model starts from an empty database)",
              file=sys.stderr)
        return 2
    a.dir = os.path.abspath(a.dir)
    a.shadow = a.dir + ".shadow"
    family = "kill9_power" if power else "kill9"
    print(f"crash_kill: mode={a.mode} seed={a.seed} cycles={a.cycles} background={a.background} "
          f"threads={a.threads} dir={a.dir}")
    print(f"crash_kill: replay with: {replay_command(a)}", flush=True)
    subreaper = _set_subreaper()
    journal = None
    if power:
        os.makedirs(a.dir, exist_ok=True)  # the model starts from this empty, durable directory
        journal = DurableModel([a.dir], a.shadow)
    stats = dict.fromkeys(
        ("acked", "acked_lost_allowed", "in_flight_recovered", "seqs", "promises", "early_kills", "work_timeouts",
         "tails_dropped", "orphans_reaped", "table_set_changes", "process_cycles", "threads_max", "flushes",
         "compactions", "manifest_rolls", "manifest_rolls_at_open", "cycles_with_flush", "cycles_with_compaction",
         "cycles_with_roll", "changes_reverted", "changes_applied", "unjournalled_creates"), 0)
    tails: dict[str, int] = {}
    phases: dict[str, float] = {}
    last_levels: list[int] = []
    model: dict[bytes, bytes] = {}
    start_seq = 0
    t0 = time.perf_counter()
    cycle = 0
    zygote = Zygote(a.workdir)
    status = 0
    try:
        for cycle in range(a.cycles):
            plan = plan_cycle(a, rng, cycle)
            stats["process_cycles"] += plan.background == "process"
            stats["threads_max"] = max(stats["threads_max"], plan.threads)
            tick = time.perf_counter()
            res, stderr = run_child(a, zygote, plan, stats)
            tick = _phase(phases, "writer", tick)
            if subreaper:
                reaped, stale = reap_orphans(a.orphan_timeout, {zygote.proc.pid})
                tick = _phase(phases, "reap", tick)
                stats["orphans_reaped"] += reaped
                if stale:
                    raise Failure("a background worker outlived the killed writer: " + "; ".join(stale))
            if res.errors or res.bad_lines:
                raise Failure("the writer failed: " + "; ".join(res.errors + res.bad_lines) +
                              (f"\n--- writer stderr ---\n{stderr}" if stderr else ""))
            e = res.edits
            stats["flushes"] += e["f"]
            stats["compactions"] += e["c"]
            stats["manifest_rolls"] += e["rolls"]
            stats["cycles_with_flush"] += e["f"] > 0
            stats["cycles_with_compaction"] += e["c"] > 0
            stats["manifest_rolls_at_open"] += e["o_rolls"]
            stats["cycles_with_roll"] += e["rolls"] > e["o_rolls"]
            cut = None
            dbfs = None
            if journal is not None:
                try:
                    journal.start_process()
                    for line in res.journal:
                        journal.apply(line)
                    if a.keep_precut:
                        shutil.rmtree(a.dir + ".precut", ignore_errors=True)
                        shutil.copytree(a.dir, a.dir + ".precut")
                    cut = journal.cut(random.Random(f"{a.seed}/cut/{cycle}"))
                    with open(a.dir + ".cut.txt", "w") as f:
                        f.write(f"cycle {cycle}\n" + "".join(n + "\n" for n in cut.notes))
                    journal.start_process()
                    dbfs = SyncTrackingFS(journal.apply, a.shadow)  # the driver's reopen is journalled too
                    tick = _phase(phases, "cut", tick)
                except HarnessError as err:
                    raise Failure(f"the power cut could not be simulated: {err}") from None
                stats["changes_reverted"] += cut.changes_reverted
                stats["changes_applied"] += cut.changes_applied
                stats["unjournalled_creates"] += cut.unjournalled_creates
                for k, v in cut.tails.items():
                    tails[k] = tails.get(k, 0) + v
            cw = Workload(**{**w.__dict__, "seed": plan.seed})
            try:
                state, last_seq, report, levels = read_db(a, dbfs)
                tick = _phase(phases, "reopen", tick)
            except lsm.Error as err:
                raise Failure(f"reopening after the {'power cut' if power else 'kill'} failed: "
                              f"{type(err).__name__}: {err}") from None
            except HarnessError as err:
                raise Failure(f"the driver's reopen could not be journalled: {err}") from None
            if report["dropped"]:
                stats["tails_dropped"] += 1
            if levels != last_levels:
                stats["table_set_changes"] += 1
                last_levels = levels
            fig = verify(cw, cycle, res, plan.threads, model, start_seq, state, last_seq, power)
            tick = _phase(phases, "check", tick)
            for k, v in fig.items():
                stats[k] += v
            if a.verbose:
                print(f"cycle {cycle}: {plan.background} x{plan.threads} {plan.when}+"
                      f"{plan.delay * 1000:.0f} ms: {fig} edits={e} tables per level={levels} "
                      f"dropped={report['dropped']}" + (f" cut={dataclasses.replace(cut, notes=[])}" if cut else ""), flush=True)
            model, start_seq = state, last_seq
    except Failure as err:
        print(f"crash_kill: FAILED in cycle {cycle} (mode {a.mode}, seed {a.seed}): {err}", file=sys.stderr)
        print(f"crash_kill: database kept in {a.dir}" + (
            f" (the last cut's decisions: {a.dir}.cut.txt" + (f"; before it: {a.dir}.precut)" if a.keep_precut else
                                                             "; --keep-precut keeps the state before it)")
            if power else ""), file=sys.stderr)
        print(f"crash_kill: replay with: {replay_command(a, cycle + 1)}", file=sys.stderr)
        status = 1
    finally:
        zygote.close()
    dt = time.perf_counter() - t0
    done = a.cycles if status == 0 else cycle
    _log_json(a, {"family": family, "cycles": done, "flushes": stats["flushes"],
                  "compactions": stats["compactions"], "manifest_rolls": stats["manifest_rolls"],
                  "violations": 0 if status == 0 else 1, "seconds": round(dt, 1), "seed": str(a.seed), **stats,
                  **({"tails": tails} if power else {})})
    if status:
        if not own_dir:
            shutil.rmtree(a.workdir, ignore_errors=True)  # only the writer's stderr (printed on a writer failure)
        return status
    print(f"crash_kill: OK {a.cycles} {'power-cut' if power else 'kill'} cycles in {dt:.1f} s (seed {a.seed}): "
          f"{stats['acked']} acknowledged commits checked"
          + (f" ({stats['acked_lost_allowed']} lost as their level allows)" if power else "")
          + f", {stats['in_flight_recovered']} in-flight commits recovered, {stats['seqs']} sequence numbers, "
          f"{stats['promises']} durability promises, {stats['early_kills']} kills during open, "
          f"{stats['work_timeouts']} cycles that did not flush and compact within --work-timeout, "
          f"{stats['process_cycles']} cycles with worker processes, up to {stats['threads_max']} threads, "
          f"{stats['tails_dropped']} torn WAL tails dropped, {stats['orphans_reaped']} orphaned workers reaped")
    print(f"crash_kill: the writers completed {stats['flushes']} flushes, {stats['compactions']} compactions and "
          f"{stats['manifest_rolls']} manifest roll-overs ({stats['manifest_rolls_at_open']} of them by the open); "
          f"cycles with a flush {stats['cycles_with_flush']}, with a compaction {stats['cycles_with_compaction']}, "
          f"with a roll-over by a flush or compaction {stats['cycles_with_roll']} "
          f"(of {a.cycles}); {stats['table_set_changes']} cycles changed the table files, at the end "
          f"{last_levels} per level and {len(model)} keys")
    print("crash_kill: seconds by phase: " + ", ".join(f"{k} {v:.1f}" for k, v in phases.items()))
    if power:
        print(f"crash_kill: power cuts reverted {stats['changes_reverted']} and applied {stats['changes_applied']} "
              f"unsynced directory changes ({stats['unjournalled_creates']} creates cut off before their journal "
              f"line); unsynced file contents: {dict(sorted(tails.items()))}")
    if own_dir and not a.keep:
        shutil.rmtree(a.workdir, ignore_errors=True)
    else:
        shutil.rmtree(a.workdir, ignore_errors=True)  # only the writer's stderr (the database is elsewhere)
        if not a.keep:
            shutil.rmtree(a.shadow, ignore_errors=True)
            shutil.rmtree(a.dir + ".precut", ignore_errors=True)
            if os.path.exists(a.dir + ".cut.txt"):
                os.remove(a.dir + ".cut.txt")
        print(f"crash_kill: database in {a.dir}")
    return 0


def _threads_range(a: argparse.Namespace, p: argparse.ArgumentParser) -> None:
    lo, sep, hi = a.threads.partition("-")
    try:
        a.threads_range = (int(lo), int(hi if sep else lo))
    except ValueError:
        p.error(f"--threads: expected N or LO-HI, got {a.threads!r}")
    if not 1 <= a.threads_range[0] <= a.threads_range[1]:
        p.error(f"--threads: expected 1 <= LO <= HI, got {a.threads!r}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="tools/crash_kill.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--mode", choices=("kill", "power"), default="kill",
                   help="kill: process crash (the OS keeps what was written); power: also drop what was never "
                   "synced (default kill)")
    p.add_argument("--seed", type=int, default=None, help="master seed (default: random, printed)")
    p.add_argument("--cycles", type=int, default=300, help="kill cycles (default 300)")
    p.add_argument("--dir", default=None, help="database directory, empty or absent (default: a temp dir, "
                   "removed on success); power mode also uses DIR.shadow, DIR.cut.txt and DIR.precut")
    p.add_argument("--keep", action="store_true", help="keep the temp dir on success")
    p.add_argument("--threads", default="1-8", help="writer threads in the child: N, or LO-HI drawn per cycle "
                   "(default 1-8)")
    p.add_argument("--background", choices=("mixed", "process", "thread", "inline"), default=None,
                   help="background mode of the writer: mixed = --process-share of the cycles with worker "
                   "processes, the rest with a thread (default mixed; thread in power mode)")
    p.add_argument("--process-share", type=float, default=0.2,
                   help="with --background mixed: the share of cycles run with worker processes (default 0.2)")
    p.add_argument("--sync-mix", default="FULL=45,EXTRA=5,BARRIER=15,NORMAL=15,OFF=20",
                   help="weights of the sync levels, drawn per commit (default %(default)s)")
    p.add_argument("--keys", type=int, default=2000, help="key space size (default 2000)")
    p.add_argument("--value-size", type=int, default=100, help="mean value size in bytes (default 100)")
    p.add_argument("--big-prob", type=float, default=0.01,
                   help="probability that a value is 4-20 KB (a record spanning pages; default 0.01)")
    p.add_argument("--batch-prob", type=float, default=0.2, help="probability of a batch (default 0.2)")
    p.add_argument("--delete-prob", type=float, default=0.15, help="probability of a delete (default 0.15)")
    p.add_argument("--max-batch", type=int, default=20, help="largest batch, in ops (default 20)")
    p.add_argument("--promise-prob", type=float, default=0.02,
                   help="probability that a commit is followed by sync_wal or wait_durable, whose answer is "
                   "checked as a durability promise (default 0.02)")
    p.add_argument("--manifest-max-size", type=int, default=1024,
                   help="the writer's manifest roll-over size in bytes (default 1024: about every edit)")
    p.add_argument("--max-ms", type=float, default=150,
                   help="most cycles are killed 0 to --max-ms after the writer completed a flush and a compaction "
                   "(default 150)")
    p.add_argument("--long-prob", type=float, default=0.05,
                   help="probability of a long cycle: --max-ms to --long-ms after that (default 0.05)")
    p.add_argument("--long-ms", type=float, default=1500, help="longest long cycle (default 1500)")
    p.add_argument("--early-kill-prob", type=float, default=0.05,
                   help="probability of a kill 0 to --early-ms after the start, maybe while opening (default 0.05)")
    p.add_argument("--early-ms", type=float, default=60, help="window of the early kills (default 60)")
    p.add_argument("--time-kill-prob", type=float, default=0.15,
                   help="probability of a kill 0 to --max-ms after the open, whatever work was done "
                   "(default 0.15)")
    p.add_argument("--work-timeout", type=float, default=20.0,
                   help="seconds to wait for a flush and a compaction before killing anyway (counted; default 20)")
    p.add_argument("--orphan-timeout", type=float, default=10.0,
                   help="seconds an orphaned worker may live after the kill (default 10: a worker still starting "
                   "Python when its parent dies exits once it runs, which a loaded machine can delay by seconds)")
    p.add_argument("--ready-timeout", type=float, default=60.0, help="seconds the writer may take to open")
    p.add_argument("--option", action="append", metavar="NAME=VALUE",
                   help="override a database option (repeatable), e.g. --option memtable_size=65536")
    p.add_argument("--reliability-log", default=os.environ.get("LSM_RELIABILITY_LOG"),
                   help="append a JSON line with the run's figures to this file (default: $LSM_RELIABILITY_LOG)")
    p.add_argument("--keep-precut", action="store_true",
                   help="power mode: copy the directory to DIR.precut before each cut (for debugging a failure)")
    p.add_argument("--verbose", "-v", action="store_true", help="print each cycle's figures")
    # the writer child and the zygote
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--zygote-fd", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--report-fd", type=int, help=argparse.SUPPRESS)
    p.add_argument("--shadow", default=None, help=argparse.SUPPRESS)
    p.add_argument("--cycle", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--cycle-seed", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--max-seconds", type=float, default=120.0, help=argparse.SUPPRESS)
    p.add_argument("--sabotage", choices=("wal-sync", "dir-sync"), default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    _threads_range(a, p)
    if a.background is None:
        a.background = "thread" if a.mode == "power" else "mixed"
    if a.mode == "power" and a.background not in ("thread", "inline"):
        p.error("--mode power needs --background thread or inline (a worker process's I/O bypasses the "
                "tracking layer)")
    if a.child and a.background == "mixed":
        p.error("the writer needs a concrete --background")
    if a.cycles < 0 or a.keys < 1 or not 0 <= a.max_ms <= a.long_ms or not 0 <= a.process_share <= 1:
        p.error("--cycles >= 0, --keys >= 1, 0 <= --max-ms <= --long-ms and 0 <= --process-share <= 1")
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    if a.zygote_fd is not None:
        zygote_main(a.zygote_fd)
        return 0
    if a.child:
        child_main(a)
        return 0
    return driver_main(a)


if __name__ == "__main__":
    sys.exit(main())
