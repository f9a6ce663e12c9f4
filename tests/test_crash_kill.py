"""Real-process crashes: SIGKILL a writer at random moments and verify every
acknowledged commit after reopen (tools/crash_kill.py); background worker
processes that must not outlive a killed parent (lsm/compaction/worker.py,
"Orphans"); and a kill followed by a power cut (CrashFS), which needs open
to make the replayed log durable.

Size: ``LSM_KILL_CYCLES`` kill cycles (default 50) with worker processes,
a fifth of that with background threads; ``LSM_KILL_SEED`` fixes the seed
(default: random, printed by the tool with a replay command line).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(ROOT, "tools", "crash_kill.py")
CYCLES = int(os.environ.get("LSM_KILL_CYCLES", "50"))

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc and SIGKILL")


def _seed() -> int:
    s = os.environ.get("LSM_KILL_SEED")
    return int(s) if s else random.SystemRandom().randrange(1 << 32)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _run_tool(tmp_path, *args: str, timeout: float) -> None:
    cmd = [sys.executable, TOOL, "--seed", str(_seed()), "--dir", str(tmp_path / "db"), *args]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_env(), cwd=ROOT, check=False)
    print(p.stdout)
    print(p.stderr, file=sys.stderr)
    assert p.returncode == 0, f"crash_kill failed (exit {p.returncode}):\n{p.stdout}\n{p.stderr}"
    assert f"OK {args[args.index('--cycles') + 1]} kill cycles" in p.stdout


def test_kill_cycles_worker_processes(tmp_path):
    # A generous orphan timeout (workers still starting up on a loaded machine exit when they find
    # their parent gone); test_worker_dies_with_its_parent_mid_job checks promptness.
    _run_tool(tmp_path, "--cycles", str(CYCLES), "--background", "process", "--orphan-timeout", "10",
              timeout=60 + 6 * CYCLES)


def test_kill_cycles_background_thread(tmp_path):
    n = max(5, CYCLES // 5)
    _run_tool(tmp_path, "--cycles", str(n), "--background", "thread", "--threads", "2", timeout=60 + 6 * n)


# ---- orphaned workers -------------------------------------------------------------------------------------------


def _state(pid: int) -> str:
    """The /proc state letter of ``pid``, or "gone"."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return "gone"
    return stat[stat.rfind(b")") + 2 :].split()[0].decode()


def _children(pid: int, needle: bytes) -> list[int]:
    """Processes whose parent is ``pid`` and whose command line holds ``needle``."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if int(stat[stat.rfind(b")") + 2 :].split()[1]) == pid and needle in cmdline:
            out.append(int(name))
    return out


def _wait_dead(pids: list[int], timeout: float) -> list[int]:
    """Wait until every pid is gone or a zombie; return those still running."""
    deadline = time.monotonic() + timeout
    while True:
        alive = [p for p in pids if _state(p) not in ("gone", "Z", "X")]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.01)


def _listing(d) -> dict[str, int]:
    return {n: os.path.getsize(os.path.join(d, n)) for n in sorted(os.listdir(d))}


SLOW_FLUSH = r"""
import os, sys
import lsm
db = lsm.open(sys.argv[1], background="process", memtable_size=256 << 20, wal_segment_size=256 << 20,
              compression_level=22, block_size=65536)
unit = os.urandom(64)
for i in range(10000):
    db.put(b"k%08d" % i, unit * 12 + b"%d" % i, sync=lsm.Sync.OFF)
print("flushing", flush=True)
db.flush()  # zstd level 22 on 8 MB: tens of seconds in the flush worker
print("flushed", flush=True)
"""


def test_worker_dies_with_its_parent_mid_job(tmp_path):
    """A parent killed while its flush worker writes a table: the worker is
    gone at once and the directory stops changing; reopening works and
    holds every key (the unfinished table is removed as an orphan)."""
    d = tmp_path / "db"
    parent = subprocess.Popen([sys.executable, "-c", SLOW_FLUSH, str(d)], stdout=subprocess.PIPE, env=_env())
    workers: list[int] = []
    try:
        assert parent.stdout.readline() == b"flushing\n"
        deadline = time.monotonic() + 60
        while not any(n.endswith(".sst") for n in os.listdir(d)):  # the worker is writing its output table
            assert time.monotonic() < deadline, "the flush worker never created its table"
            assert parent.poll() is None
            time.sleep(0.01)
        workers = _children(parent.pid, b"lsm.compaction.child")
        assert workers and all(_state(p) not in ("gone", "Z") for p in workers)
        time.sleep(0.2)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        t0 = time.monotonic()
        alive = _wait_dead(workers, 5.0)
        took = time.monotonic() - t0
        assert not alive, f"worker(s) {alive} still running 5 s after their parent was killed"
        assert took < 2.0, f"the worker took {took:.2f} s to die"
        before = _listing(d)
        time.sleep(0.3)
        assert _listing(d) == before, "the directory changed after the worker should have died"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        for p in workers:
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass
    import lsm

    with lsm.open(d, background="inline", memtable_size=256 << 20) as db:
        assert sum(1 for _ in db) == 10000
        assert not any(n.endswith(".sst") for n in os.listdir(d))


def test_pool_worker_outlives_the_thread_that_needed_it(tmp_path):
    """The parent-death signal is tied to the forking *thread*: a worker
    must not die when the DB thread that first needed it exits (a closed
    database's flush thread), since the shared pool serves the next
    database with it (worker.py forks every worker from one long-lived
    thread)."""
    import lsm
    from lsm.compaction import worker

    with lsm.open(tmp_path / "a", background="process") as db:
        db.put(b"k", b"v")
        db.flush()  # run by db's flush thread, which ends at close
    pool = worker.shared_pool("flush")
    with pool._mu:
        pids = [w.proc.pid for w in pool._idle]
    assert pids
    time.sleep(0.3)
    assert all(_state(p) not in ("gone", "Z") for p in pids), "a pool worker died with a DB thread"
    with lsm.open(tmp_path / "b", background="process") as db:
        db.put(b"k", b"v")
        db.flush()
        assert db.health == "ok"
    with pool._mu:
        assert [w.proc.pid for w in pool._idle] == pids  # the same worker served the second database


def test_worker_exits_at_eof_between_jobs():
    p = subprocess.Popen([sys.executable, "-m", "lsm.compaction.child"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, env=_env())
    p.stdin.close()
    assert p.wait(timeout=30) == 0


@pytest.mark.parametrize("pdeathsig", [True, False], ids=["prctl", "watchdog"])
def test_worker_arms_parent_death(pdeathsig):
    """Both ways a worker follows its parent: the Linux parent-death signal
    and the polling watchdog used where there is none. A middle process
    starts the 'worker' and is killed; the worker must go."""
    child = (
        "import sys, time\n"
        + ("" if pdeathsig else "sys.platform = 'other'\n")
        + "from lsm.compaction import worker\n"
        "worker._die_with_parent(int(sys.argv[1]))\n"
        "print('armed', flush=True)\n"
        "time.sleep(60)\n"
    )
    middle = (
        "import os, subprocess, sys\n"
        "p = subprocess.Popen([sys.executable, '-c', sys.argv[1], str(os.getpid())])\n"
        "print(p.pid, flush=True)\n"
        "p.wait()\n"
    )
    m = subprocess.Popen([sys.executable, "-c", middle, child], stdout=subprocess.PIPE, env=_env())
    pid = int(m.stdout.readline())
    try:
        assert m.stdout.readline() == b"armed\n"  # the worker shares the middle process's stdout
        os.kill(m.pid, signal.SIGKILL)
        m.wait()
        alive = _wait_dead([pid], 3.0)
        assert not alive, "the worker outlived its parent"
    finally:
        if m.poll() is None:
            m.kill()
            m.wait()
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def test_orphan_guard_refuses_to_create_files(tmp_path):
    """The last line of defence: with its parent gone, a worker exits
    instead of creating, renaming or removing a file."""
    target = tmp_path / "000009.sst"
    victim = tmp_path / "000010.sst"
    victim.write_bytes(b"table of the reopened database")
    code = (
        "import sys\n"
        "from lsm.compaction.worker import _OrphanGuardFS\n"
        "fs = _OrphanGuardFS(parent=1)  # not our parent: as if ours had died\n"
        "op = sys.argv[1]\n"
        "if op == 'create': fs.create(sys.argv[2])\n"
        "elif op == 'remove': fs.remove(sys.argv[3])\n"
        "else: fs.rename(sys.argv[3], sys.argv[2])\n"
        "print('not stopped')\n"
    )
    for op in ("create", "remove", "rename"):
        p = subprocess.run([sys.executable, "-c", code, op, str(target), str(victim)], capture_output=True,
                           env=_env(), timeout=30, check=False)
        assert p.returncode == 3, (op, p.returncode, p.stdout, p.stderr)
        assert not target.exists() and victim.read_bytes() == b"table of the reopened database"


# ---- a kill, then a power cut -------------------------------------------------------------------------------


@pytest.mark.parametrize("segment_size", [1 << 20, 4096], ids=["one-segment", "rotating"])
def test_power_cut_after_recovering_from_a_kill(segment_size):
    """Regression: a killed process leaves commits in the page cache that are
    not on disk (OFF here). Open replays them and used to count them as
    durable without syncing them; the next FULL commit then went to a new
    segment, and a power cut could tear or lose the older segment behind
    the newer one: tolerate_tail refused to open (or point_in_time dropped
    the acknowledged FULL commit). CrashFS images stand for the power cut."""
    import lsm
    from lsm.base.crashfs import CrashFS

    fs = CrashFS()
    opts = {"fs": fs, "background": "inline", "memtable_size": 1 << 20, "wal_segment_size": segment_size}
    db = lsm.open("/db", **opts)
    for i in range(40):
        db.put(b"off%03d" % i, b"v" * 100, sync=lsm.Sync.OFF)
    db._simulate_crash()  # a kill: what reached write(2) outlives the process, unsynced
    db = lsm.open("/db", **opts)
    claimed = db.durable_seq
    assert claimed == 40
    seq = db.put(b"full", b"acked", sync=lsm.Sync.FULL)
    db._simulate_crash()
    for seed in range(30):
        image = fs.power_cut(random.Random(seed))
        with lsm.open("/db", **{**opts, "fs": image}) as db2:
            assert db2.get(b"full") == b"acked", seed
            assert db2.last_seq == seq and all(db2.get(b"off%03d" % i) == b"v" * 100 for i in range(40)), seed
