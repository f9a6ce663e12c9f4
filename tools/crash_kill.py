"""Kill test: SIGKILL a writer process at random moments and verify the
reopened database after every kill.

Each cycle starts a writer child (``crash_kill.py --child``) on the same
database directory, with tiny options so that memtable switches, WAL
rotation, flushes and compactions happen all the time. The child's threads
commit random puts, deletes and batches at mixed sync levels and report
every *acknowledged* commit (thread, commit number, first sequence number)
through a pipe, after the call returned. The driver SIGKILLs the child at a
random moment (a few per cent of the kills land while the child is still
opening the database), reopens the database itself and checks:

* every acknowledged commit is present, at every sync level: a killed
  process (unlike a power cut) loses nothing that reached write(2);
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

Values are unique per op (``cycle.thread.commit.op:`` plus random filler),
so the comparison is exact. The next cycle continues on the same database.

    python tools/crash_kill.py --seed 1 --cycles 200
    python tools/crash_kill.py --cycles 20 --background thread --threads 2

Exit status: 0 when every cycle verified; 1 on a failed check (the message
names the cycle and prints a command line replaying the run: same workload
and kill schedule, the timing of a kill within the writes is the OS's);
2 on a usage error.
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import lsm

LEVELS = {s.name: s for s in lsm.Sync}

TINY = {
    "memtable_size": 64 * 1024,
    "wal_segment_size": 32 * 1024,
    "target_file_size": 32 * 1024,
    "block_size": 1024,
    "l0_compaction_trigger": 2,
    "l0_slowdown_trigger": 6,
    "l0_stop_trigger": 12,
    "max_bytes_for_level_base": 256 * 1024,
    "level_multiplier": 4,
    "num_levels": 5,
    "sync_interval": 0.02,
}
"""Database options of the writer (and of the driver's reopen, apart from
``background``): small enough that every cycle switches memtables, rotates
WAL segments and flushes, and compactions run every few cycles."""

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
    mix: tuple[tuple[str, int], ...] = (("FULL", 55), ("EXTRA", 5), ("BARRIER", 10), ("NORMAL", 15), ("OFF", 15))


@dataclass
class Commit:
    """One commit of a writer thread: what it does, as a pure function of
    (workload, cycle, thread, n)."""

    thread: int
    n: int
    level: str
    kind: str  # "put", "delete", "batch"
    ops: list[tuple[int, bytes, bytes]]  # (PUT/DELETE, key, value)

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
    return Commit(thread, n, level, kind, ops)


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
    each acknowledged commit; runs until killed."""
    out = a.report_fd
    w = workload_from(a)
    parent = os.getppid()
    db = lsm.open(a.dir, background=a.background, **options_from(a))
    os.write(out, b"R %d\n" % db.last_seq)
    stop = threading.Event()

    def writer(t: int) -> None:
        try:
            n = 0
            while not stop.is_set():
                if os.getppid() != parent:  # the driver died: stop writing
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
                n += 1
        except BaseException as e:  # noqa: BLE001 - reported to the driver
            os.write(out, b"E %s\n" % repr(e).replace("\n", " ").encode()[:3000])
            os._exit(4)

    threads = [threading.Thread(target=writer, args=(t,), daemon=True) for t in range(a.threads)]
    for th in threads:
        th.start()
    time.sleep(a.max_seconds)  # the driver kills us long before this
    stop.set()
    os.write(out, b"E the writer was not killed within --max-seconds\n")
    os._exit(3)


# ----------------------------------------------------------------- driver


@dataclass
class CycleResult:
    acked: dict[int, tuple[int, int]] = field(default_factory=dict)  # first seq -> (thread, commit number)
    ready_seq: int | None = None
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
                    big_prob=a.big_prob, mix=tuple(mix))


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


def reap_orphans(timeout: float) -> tuple[int, list[str]]:
    """Wait for adopted orphans to die; reap them. Returns (number reaped,
    descriptions of those still alive after ``timeout`` seconds, which are
    then killed)."""
    deadline = time.monotonic() + timeout
    reaped = 0
    while True:
        alive = []
        for pid in _adopted_children(set()):
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


def run_child(a: argparse.Namespace, cycle: int, cycle_seed: int, rng: random.Random,
              stats: dict) -> tuple[CycleResult, str]:
    """Start the writer, kill it at a random moment, collect its reports.
    Returns the reports and the child's stderr."""
    early = rng.random() < a.early_kill_prob
    if early:
        delay = rng.uniform(0, 0.3)
    elif rng.random() < a.long_prob:
        delay = rng.uniform(a.max_ms, a.long_ms) / 1000
    else:
        delay = rng.uniform(a.min_ms, a.max_ms) / 1000
    rfd, wfd = os.pipe()
    cmd = [sys.executable, os.path.abspath(__file__), "--child", "--report-fd", str(wfd), "--dir", a.dir,
           "--cycle", str(cycle), "--cycle-seed", str(cycle_seed)] + _passthrough(a)
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    errpath = os.path.join(a.workdir, "child-stderr.txt")
    with open(errpath, "wb") as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=err, stderr=err, pass_fds=(wfd,), env=env)
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
    if early:
        time.sleep(delay)
        stats["early_kills"] += 1 if not ready.is_set() else 0
    else:
        if not ready.wait(a.ready_timeout):
            proc.kill()
            proc.wait()
            raise Failure(f"the writer did not open the database within {a.ready_timeout} s")
        time.sleep(delay)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    rc = proc.wait()
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
    if parts[0] == "R":
        res.ready_seq = int(parts[1])
        ready.set()
    elif parts[0] == "A":
        t, n, seq = (int(x) for x in parts[1].split())
        res.acked[seq] = (t, n)
    elif parts[0] == "E":
        res.errors.append(parts[1] if len(parts) > 1 else "?")
    else:
        res.bad_lines.append(line)


def read_db(a: argparse.Namespace) -> tuple[dict[bytes, bytes], int, dict, list[int]]:
    """Reopen (inline background: nothing runs behind the check) and read
    everything: state, last_seq, recovery report, table files per level."""
    opts = options_from(a)
    db = lsm.open(a.dir, **{**opts, "background": "inline"})
    try:
        state = dict(db.items())
        levels = [lv["files"] for lv in db.stats()["levels"]]
        return state, db.last_seq, db.recovery_report, levels
    finally:
        db.close()


def verify(w: Workload, cycle: int, res: CycleResult, threads: int, model: dict[bytes, bytes], start_seq: int,
           state: dict[bytes, bytes], last_seq: int) -> dict[str, int]:
    """Check one cycle (module docstring). Returns figures; raises Failure."""
    if res.ready_seq is not None and res.ready_seq != start_seq:
        raise Failure(f"the writer opened the database at last_seq {res.ready_seq}, the driver left it at {start_seq}")
    acked: dict[int, Commit] = {}
    per_thread: dict[int, list[int]] = {t: [] for t in range(threads)}
    for seq, (t, n) in sorted(res.acked.items()):
        per_thread[t].append(n)
        acked[seq] = make_commit(w, cycle, t, n)
    for t, ns in per_thread.items():
        if sorted(ns) != list(range(len(ns))):
            raise Failure(f"thread {t} acknowledged commits {sorted(ns)[:20]}...: not 0..n-1")
    pending = [make_commit(w, cycle, t, len(ns)) for t, ns in per_thread.items()]

    # Every acknowledged commit lies inside the recovered log.
    lost = [(s, c) for s, c in sorted(acked.items()) if s + c.count - 1 > last_seq]
    if lost:
        by_level: dict[str, int] = {}
        for _s, c in lost:
            by_level[c.level] = by_level.get(c.level, 0) + 1
        first_seq, first = lost[0]
        raise Failure(
            f"{len(lost)} acknowledged commit(s) lost (by level: {by_level}): the reopened database ends at seq "
            f"{last_seq}, but {first.describe()} was acknowledged with seq {first_seq}"
        )
    ends = sorted((s, s + c.count - 1) for s, c in acked.items())
    for (s1, e1), (s2, _e2) in itertools.pairwise(ends):
        if s2 <= e1:
            raise Failure(f"acknowledged commits overlap: seqs {s1}..{e1} and {s2}")
    if ends and ends[0][0] <= start_seq:
        raise Failure(f"a commit was acknowledged with seq {ends[0][0]}, at or below the cycle's start {start_seq}")

    # The holes between acknowledged commits (up to the recovered end) must
    # be filled exactly by in-flight commits, one per thread at most.
    holes = []
    cur = start_seq + 1
    for s, e in ends:
        if s > cur:
            holes.append((cur, s - cur))
        cur = e + 1
    if last_seq >= cur:
        holes.append((cur, last_seq - cur + 1))
    assignments = list(_fill(holes, pending))
    if not assignments:
        raise Failure(
            f"sequence numbers {start_seq + 1}..{last_seq} are not explained by this cycle's commits: holes "
            f"(start, length) {holes[:10]} cannot be filled by the in-flight commits of counts "
            f"{[c.count for c in pending]} (a hole, or a commit that was never written, came back)"
        )
    best = None
    for assign in assignments:
        commits = dict(acked)
        commits.update(assign)
        expect = dict(model)
        for s in sorted(commits):
            for kind, key, value in commits[s].ops:
                if kind == PUT:
                    expect[key] = value
                else:
                    expect.pop(key, None)
        if expect == state:
            return {"acked": len(acked), "in_flight_recovered": len(assign), "seqs": last_seq - start_seq}
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


def _fill(holes: list[tuple[int, int]], pending: list[Commit], used: frozenset = frozenset()):
    """Every way to fill ``holes`` (start, length) with distinct commits of
    ``pending``, each hole by consecutive commits: yields {first seq: Commit}."""
    if not holes:
        yield {}
        return
    (start, length), rest = holes[0], holes[1:]
    for i, c in enumerate(pending):
        if i in used or c.count > length:
            continue
        sub = [(start + c.count, length - c.count)] + rest if c.count < length else rest
        for tail in _fill(sub, pending, used | {i}):
            yield {start: c, **tail}


def _passthrough(a: argparse.Namespace) -> list[str]:
    out = ["--threads", str(a.threads), "--keys", str(a.keys), "--value-size", str(a.value_size),
           "--batch-prob", str(a.batch_prob), "--delete-prob", str(a.delete_prob), "--max-batch", str(a.max_batch),
           "--big-prob", str(a.big_prob), "--sync-mix", a.sync_mix, "--background", a.background]
    for o in a.option or ():
        out += ["--option", o]
    return out


def replay_command(a: argparse.Namespace, cycles: int | None = None) -> str:
    cmd = ["python", "tools/crash_kill.py", "--seed", str(a.seed), "--cycles", str(cycles or a.cycles),
           "--min-ms", str(a.min_ms), "--max-ms", str(a.max_ms), "--long-prob", str(a.long_prob),
           "--long-ms", str(a.long_ms), "--early-kill-prob", str(a.early_kill_prob)]
    cmd += _passthrough(a)
    return " ".join(shlex.quote(c) for c in cmd)


def driver_main(a: argparse.Namespace) -> int:
    if a.seed is None:
        a.seed = random.SystemRandom().randrange(1 << 32)
    w = workload_from(a)
    rng = random.Random(a.seed)
    own_dir = a.dir is None
    a.workdir = tempfile.mkdtemp(prefix="lsm-crash-kill-")
    if own_dir:
        a.dir = os.path.join(a.workdir, "db")
    elif os.path.exists(a.dir) and os.listdir(a.dir):
        print(f"crash_kill: --dir {a.dir} must be empty or absent (the model starts from an empty database)",
              file=sys.stderr)
        return 2
    print(f"crash_kill: seed={a.seed} cycles={a.cycles} background={a.background} threads={a.threads} dir={a.dir}")
    print(f"crash_kill: replay with: {replay_command(a)}", flush=True)
    subreaper = _set_subreaper()
    stats = {"acked": 0, "in_flight_recovered": 0, "seqs": 0, "early_kills": 0, "tails_dropped": 0,
             "orphans_reaped": 0, "table_set_changes": 0}
    last_levels: list[int] = []
    model: dict[bytes, bytes] = {}
    start_seq = 0
    t0 = time.perf_counter()
    cycle = 0
    try:
        for cycle in range(a.cycles):
            cycle_seed = rng.randrange(1 << 32)
            res, stderr = run_child(a, cycle, cycle_seed, rng, stats)
            if subreaper:
                reaped, stale = reap_orphans(a.orphan_timeout)
                stats["orphans_reaped"] += reaped
                if stale:
                    raise Failure("a background worker outlived the killed writer: " + "; ".join(stale))
            if res.errors or res.bad_lines:
                raise Failure("the writer failed: " + "; ".join(res.errors + res.bad_lines) +
                              (f"\n--- writer stderr ---\n{stderr}" if stderr else ""))
            cw = Workload(**{**w.__dict__, "seed": cycle_seed})
            try:
                state, last_seq, report, levels = read_db(a)
            except lsm.Error as e:
                raise Failure(f"reopening after the kill failed: {type(e).__name__}: {e}") from None
            if report["dropped"]:
                stats["tails_dropped"] += 1
            if levels != last_levels:
                stats["table_set_changes"] += 1
                last_levels = levels
            fig = verify(cw, cycle, res, a.threads, model, start_seq, state, last_seq)
            for k, v in fig.items():
                stats[k] += v
            if a.verbose:
                print(f"cycle {cycle}: {fig} tables per level={levels} dropped={report['dropped']}", flush=True)
            model, start_seq = state, last_seq
    except Failure as e:
        print(f"crash_kill: FAILED in cycle {cycle} (seed {a.seed}): {e}", file=sys.stderr)
        print(f"crash_kill: database kept in {a.dir}", file=sys.stderr)
        print(f"crash_kill: replay with: {replay_command(a, cycle + 1)}", file=sys.stderr)
        return 1
    dt = time.perf_counter() - t0
    print(f"crash_kill: OK {a.cycles} kill cycles in {dt:.1f} s: {stats['acked']} acknowledged commits verified, "
          f"{stats['in_flight_recovered']} in-flight commits recovered, {stats['seqs']} sequence numbers, "
          f"{stats['early_kills']} kills during open, {stats['tails_dropped']} torn tails dropped, "
          f"{stats['orphans_reaped']} orphaned workers reaped; {stats['table_set_changes']} cycles changed the "
          f"table files, at the end {last_levels} per level and {len(model)} keys (seed {a.seed})")
    if own_dir and not a.keep:
        shutil.rmtree(a.workdir, ignore_errors=True)
    else:
        if not own_dir:
            shutil.rmtree(a.workdir, ignore_errors=True)  # only the writer's stderr
        print(f"crash_kill: database in {a.dir}")
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="SIGKILL a writer process at random moments; verify every acknowledged commit after reopen.",
        epilog="Example: python tools/crash_kill.py --seed 7 --cycles 200 --threads 4",
    )
    p.add_argument("--seed", type=int, default=None, help="master seed (default: random, printed)")
    p.add_argument("--cycles", type=int, default=50, help="kill cycles (default 50)")
    p.add_argument("--dir", default=None, help="database directory, empty or absent (default: a temp dir, "
                   "removed on success)")
    p.add_argument("--keep", action="store_true", help="keep the temp dir on success")
    p.add_argument("--threads", type=int, default=3, help="writer threads in the child (default 3)")
    p.add_argument("--background", choices=("process", "thread", "inline"), default="process",
                   help="background mode of the writer (default process)")
    p.add_argument("--sync-mix", default="FULL=55,EXTRA=5,BARRIER=10,NORMAL=15,OFF=15",
                   help="weights of the sync levels (default %(default)s)")
    p.add_argument("--keys", type=int, default=2000, help="key space size (default 2000)")
    p.add_argument("--value-size", type=int, default=100, help="mean value size in bytes (default 100)")
    p.add_argument("--big-prob", type=float, default=0.01,
                   help="probability that a value is 4-20 KB (a record spanning pages; default 0.01)")
    p.add_argument("--batch-prob", type=float, default=0.2, help="probability of a batch (default 0.2)")
    p.add_argument("--delete-prob", type=float, default=0.15, help="probability of a delete (default 0.15)")
    p.add_argument("--max-batch", type=int, default=20, help="largest batch, in ops (default 20)")
    p.add_argument("--min-ms", type=float, default=20, help="shortest writing time before the kill (default 20)")
    p.add_argument("--max-ms", type=float, default=300, help="longest writing time before the kill (default 300)")
    p.add_argument("--long-prob", type=float, default=0.15,
                   help="probability of a long cycle, --max-ms to --long-ms, in which flushes and compactions "
                   "complete (default 0.15)")
    p.add_argument("--long-ms", type=float, default=1500, help="longest long cycle (default 1500)")
    p.add_argument("--early-kill-prob", type=float, default=0.05,
                   help="probability of a kill 0-300 ms after start, maybe while opening (default 0.05)")
    p.add_argument("--orphan-timeout", type=float, default=2.0,
                   help="seconds an orphaned worker may live after the kill (default 2)")
    p.add_argument("--ready-timeout", type=float, default=60.0, help="seconds the writer may take to open")
    p.add_argument("--option", action="append", metavar="NAME=VALUE",
                   help="override a database option (repeatable), e.g. --option memtable_size=16384")
    p.add_argument("--verbose", "-v", action="store_true", help="print each cycle's figures")
    # the writer child
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--report-fd", type=int, help=argparse.SUPPRESS)
    p.add_argument("--cycle", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--cycle-seed", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--max-seconds", type=float, default=120.0, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.cycles < 0 or a.threads < 1 or a.keys < 1 or not 0 <= a.min_ms <= a.max_ms <= a.long_ms:
        p.error("--cycles >= 0, --threads >= 1, --keys >= 1 and 0 <= --min-ms <= --max-ms <= --long-ms")
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    if a.child:
        child_main(a)
        return 0
    return driver_main(a)


if __name__ == "__main__":
    sys.exit(main())
