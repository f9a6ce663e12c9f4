"""Real-process crashes: SIGKILL a writer at random moments and verify the
reopened database (tools/crash_kill.py), as a process crash (every
acknowledged commit survives) and as a simulated power cut inside the killed
process (tools/power_cut_fs.py: the writer's unsynced data dies with it; the
power-cut promises hold). Also: the oracle's verdicts on made-up cycles, the
power-cut layer's rules, and that power mode notices an engine that skips
a WAL or directory fsync; background worker processes that must not
outlive a killed parent (lsm/compaction/worker.py, "Orphans"); and a kill
followed by a power cut (CrashFS), which needs open to make the replayed
log durable.

Size: ``LSM_KILL_CYCLES`` process-kill cycles (default 300; a fifth of them
with worker processes, the rest with a background thread; 1 to 8 writer
threads per cycle) and ``LSM_POWER_KILL_CYCLES`` power-cut cycles (default
200). ``LSM_KILL_SEED`` fixes the seed of both (default: random; printed,
and the tool prints a replay command line). ``LSM_RELIABILITY_LOG``: each
run's JSON line of figures (families ``kill9``, ``kill9_power``) is
appended to that file.
"""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from tests.reliability_log import record

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(ROOT, "tools", "crash_kill.py")
CYCLES = int(os.environ.get("LSM_KILL_CYCLES", "300"))
POWER_CYCLES = int(os.environ.get("LSM_POWER_KILL_CYCLES", "200"))
SEED = int(os.environ.get("LSM_KILL_SEED") or random.SystemRandom().randrange(1 << 32))

sys.path.append(os.path.join(ROOT, "tools"))
from power_cut_fs import DurableModel, HarnessError, SyncTrackingFS

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc and SIGKILL")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _replay(test: str) -> str:
    """The command line that reruns ``test`` with this run's seed and size."""
    size = {"test_kill_cycles": f" LSM_KILL_CYCLES={CYCLES}",
            "test_power_cut_cycles": f" LSM_POWER_KILL_CYCLES={POWER_CYCLES}"}.get(test, "")
    return f"LSM_KILL_SEED={SEED}{size} python -m pytest -q tests/test_crash_kill.py::{test}"


def _msg(test: str, what: str, detail: str = "", changed: list[str] | tuple[str, ...] = ()) -> str:
    """A failure message that names the seed first (pytest's one-line summary
    at the very end of the output shows the first line, so the seed survives
    a log cut short anywhere) and again after ``detail`` (the tool's output,
    maybe long). ``changed``: lsm sources edited while the run went on."""
    note = ""
    if changed:
        note = (f" [lsm sources changed during the run: {', '.join(changed[:6])}{' ...' if len(changed) > 6 else ''};"
                " the driver, the writers (one import, at the start) and fresh worker processes may have run"
                " different versions: replay on a tree nobody edits]")
    head = f"seed {SEED}: {what}{note} (replay: {_replay(test)})"
    return f"{head}\n{detail}\n{head}" if detail else head


def _sources() -> dict[str, int]:
    """lsm's source files and their modification times."""
    out = {}
    for d, _dirs, files in os.walk(os.path.join(ROOT, "lsm")):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(d, name)
                out[os.path.relpath(path, ROOT)] = os.stat(path).st_mtime_ns
    return out


def _changed(before: dict[str, int]) -> list[str]:
    after = _sources()
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))


def _text(out: str | bytes | None) -> str:
    return out.decode(errors="replace") if isinstance(out, bytes) else out or ""


def _run_tool(tmp_path, *args: str, timeout: float, test: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, TOOL, "--seed", str(SEED), "--dir", str(tmp_path / "db"),
           "--reliability-log", str(tmp_path / "reliability.jsonl"), *args]
    sources = _sources()  # a run against a tree others edit meanwhile can fail for that alone: say so
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_env(), cwd=ROOT, check=False)
    except subprocess.TimeoutExpired as e:
        pytest.fail(_msg(test, f"crash_kill did not finish within {timeout:g} s",
                         _text(e.stdout) + "\n" + _text(e.stderr), _changed(sources)), pytrace=False)
    p.changed = _changed(sources)  # type: ignore[attr-defined]
    print(p.stdout)
    print(p.stderr, file=sys.stderr)
    return p


def _figure(stdout: str, before: str) -> int:
    """The number printed just before ``before`` in the tool's summary."""
    return int(stdout[: stdout.index(before)].split()[-1])


def _check_run(tmp_path, p: subprocess.CompletedProcess, family: str, cycles: int, test: str) -> None:
    kind = "power-cut" if family == "kill9_power" else "kill"
    out = f"{p.stdout}\n{p.stderr}"
    assert p.returncode == 0, _msg(test, f"crash_kill failed (exit {p.returncode})", out, getattr(p, "changed", ()))
    assert f"OK {cycles} {kind} cycles" in p.stdout, _msg(test, "no OK summary line", out)
    with open(tmp_path / "reliability.jsonl") as f:
        line = f.read().strip()
    record_fields = json.loads(line)
    assert record_fields["family"] == family and record_fields["cycles"] == cycles, _msg(test, line)
    assert record_fields["violations"] == 0 and record_fields["seed"] == str(SEED), _msg(test, line)
    assert record_fields["flushes"] == _figure(p.stdout, "flushes,"), _msg(test, "flush counts differ", out)
    record(**record_fields)  # the figures for RELIABILITY.md (LSM_RELIABILITY_LOG)
    if cycles >= 50:
        # Most cycles are killed only after a flush and a compaction (the rest early or at a random time):
        # those must really happen, and so must manifest roll-overs (a new manifest and CURRENT switch).
        n = _figure(p.stdout, "cycles that did not flush and compact")
        assert n == 0, _msg(test, f"{n} cycles did not flush and compact within --work-timeout", out)
        for what in ("with a flush", "with a compaction", "with a roll-over by a flush or compaction"):
            n = int(p.stdout.split(what, 1)[1].split()[0].rstrip(","))
            assert n >= cycles * 0.6, _msg(test, f"only {n} of {cycles} cycles {what}", out)
        assert record_fields["compactions"] > 0 and record_fields["manifest_rolls"] > 0, _msg(test, line)


def test_kill_cycles(tmp_path):
    """Process kills: thread and worker-process background, 1-8 threads."""
    print(f"kill -9: LSM_KILL_CYCLES={CYCLES} LSM_KILL_SEED={SEED}")
    # A generous orphan timeout (workers still starting up on a loaded machine exit when they find
    # their parent gone); test_worker_dies_with_its_parent_mid_job checks promptness.
    test = "test_kill_cycles"
    p = _run_tool(tmp_path, "--cycles", str(CYCLES), "--orphan-timeout", "10", timeout=120 + 5 * CYCLES, test=test)
    _check_run(tmp_path, p, "kill9", CYCLES, test)
    n = _figure(p.stdout, "cycles with worker processes")
    assert n == CYCLES // 5, _msg(test, f"{n} cycles with worker processes, not {CYCLES // 5}", p.stdout)


def test_power_cut_cycles(tmp_path):
    """The crash layer inside the killed writer: unsynced data dies with it."""
    print(f"kill -9 + power cut: LSM_POWER_KILL_CYCLES={POWER_CYCLES} LSM_KILL_SEED={SEED}")
    test = "test_power_cut_cycles"
    p = _run_tool(tmp_path, "--mode", "power", "--cycles", str(POWER_CYCLES), timeout=120 + 5 * POWER_CYCLES,
                  test=test)
    _check_run(tmp_path, p, "kill9_power", POWER_CYCLES, test)
    if POWER_CYCLES >= 50:  # the cuts do revert unsynced directory changes
        assert _figure(p.stdout, "and applied") > 0, _msg(test, "no unsynced directory change reverted", p.stdout)


def test_help_documents_both_modes():
    p = subprocess.run([sys.executable, TOOL, "--help"], capture_output=True, text=True, env=_env(), timeout=60,
                       check=True)
    for text in ("--mode kill", "--mode power", "SyncTrackingFS", "--cycles", "--seed", "LSM_RELIABILITY_LOG"):
        assert text in p.stdout, text


@pytest.mark.parametrize(("sabotage", "expect"), [
    ("wal-sync", ("lost that had to survive", "CorruptionError", "durable, but the reopened database ends")),
    ("dir-sync", ("CorruptionError", "lost that had to survive", "durable, but the reopened database ends")),
])
def test_power_mode_catches_a_missing_sync(tmp_path, sabotage, expect):
    """The harness is not blind: with WAL fsyncs, or directory fsyncs, made
    no-ops in the writer, power mode fails (a lost acknowledged commit, a
    sync_wal/wait_durable promise broken, or a database that no longer
    opens)."""
    test = "test_power_mode_catches_a_missing_sync"
    p = _run_tool(tmp_path, "--mode", "power", "--cycles", "30", "--sabotage", sabotage, timeout=300, test=test)
    assert p.returncode == 1, _msg(test, f"sabotage {sabotage} went unnoticed", f"{p.stdout}\n{p.stderr}")
    assert "FAILED" in p.stderr and any(e in p.stderr for e in expect), _msg(test, f"{sabotage}: other failure",
                                                                             p.stderr)


def test_failure_messages_name_the_seed_first_and_last(tmp_path):
    """A failed or timed-out run names its seed and replay command in the
    first line of the failure (what pytest's summary line shows, at the very
    end of the output) and again after the tool's output, so a log cut short
    at either end still has it."""
    long = "cycle output\n" * 20000
    p = subprocess.CompletedProcess([], 1, stdout=long, stderr="crash_kill: FAILED in cycle 7")
    with pytest.raises(AssertionError) as e:
        _check_run(tmp_path, p, "kill9", CYCLES, "test_kill_cycles")
    lines = [x.strip() for x in str(e.value).splitlines()]  # pytest indents the message's later lines
    head = f"seed {SEED}: crash_kill failed (exit 1) (replay: LSM_KILL_SEED={SEED} LSM_KILL_CYCLES={CYCLES} "
    assert lines[0].startswith(head) and lines[0].endswith("tests/test_crash_kill.py::test_kill_cycles)")
    assert len(lines) > 20000 and lines.count(lines[0]) == 2  # again after the tool's output
    assert max(i for i, x in enumerate(lines) if x == lines[0]) > lines.index("crash_kill: FAILED in cycle 7")
    p.changed = ["lsm/wal/sync.py"]
    with pytest.raises(AssertionError) as e:
        _check_run(tmp_path, p, "kill9", CYCLES, "test_kill_cycles")
    first = str(e.value).splitlines()[0]
    assert first.startswith(f"seed {SEED}: crash_kill failed (exit 1) [lsm sources changed during the run: "
                            "lsm/wal/sync.py;"), first
    with pytest.raises(pytest.fail.Exception) as e:
        _run_tool(tmp_path, "--cycles", "1", timeout=0.001, test="test_power_cut_cycles")
    first = str(e.value).splitlines()[0]
    assert first.startswith(f"seed {SEED}: crash_kill did not finish within 0.001 s (replay: LSM_KILL_SEED={SEED} "
                            f"LSM_POWER_KILL_CYCLES={POWER_CYCLES} "), first


# ---- the oracle ------------------------------------------------------------------------------------------------


def _commits(level: str, order: list[tuple[int, int]], *, batch: bool = False):
    """Workload with every commit at ``level`` (batches when ``batch``), and
    the commits ``order`` = [(thread, n), ...] laid out by sequence number
    from 1: {first seq: Commit}."""
    import crash_kill as ck

    w = ck.Workload(seed=5, batch_prob=1.0 if batch else 0.0, delete_prob=0.0, promise_prob=0.0,
                    mix=((level, 1),))
    out, seq = {}, 1
    for t, n in order:
        c = ck.make_commit(w, 0, t, n)
        out[seq] = c
        seq += c.count
    return w, out


def _state_after(commits, upto: int) -> dict[bytes, bytes]:
    state: dict[bytes, bytes] = {}
    for s in sorted(commits):
        if s > upto:
            break
        for _kind, key, value in commits[s].ops:
            state[key] = value
    return state


def _verify(w, commits, acked_keys, last_seq, *, power, threads=2, state=None):
    import crash_kill as ck

    res = ck.CycleResult()
    for s in acked_keys:
        res.acked[s] = (commits[s].thread, commits[s].n)
    res.ready_seq = 0
    state = _state_after(commits, last_seq) if state is None else state
    return ck.verify(w, 0, res, threads, {}, 0, state, last_seq, power)


def test_oracle_power_cut_promises():
    import crash_kill as ck

    w, c = _commits("OFF", [(0, 0), (1, 0), (0, 1)])
    seqs = sorted(c)
    # OFF: a power cut may lose the tail of the log, but not leave a hole in it.
    assert _verify(w, c, seqs, seqs[1] - 1, power=True)["acked_lost_allowed"] == 2
    with pytest.raises(ck.Failure, match="a process crash loses nothing|had to survive"):
        _verify(w, c, seqs, seqs[1] - 1, power=False)
    w, c = _commits("FULL", [(0, 0), (1, 0)])
    with pytest.raises(ck.Failure, match="had to survive.*acknowledged at FULL"):
        _verify(w, c, sorted(c), sorted(c)[1] - 1, power=True)
    w, c = _commits("BARRIER", [(0, 0), (1, 0)])
    assert _verify(w, c, sorted(c), sorted(c)[1] - 1, power=True)["acked_lost_allowed"] == 1  # the newest may go
    with pytest.raises(ck.Failure, match="BARRIER, and a later commit was acknowledged"):
        _verify(w, c, sorted(c), 0, power=True)


def test_oracle_rejects_split_batches_foreign_values_and_misplaced_in_flight_commits():
    import crash_kill as ck

    w, c = _commits("OFF", [(0, 0), (1, 0)], batch=True)
    first, second = sorted(c)
    with pytest.raises(ck.Failure, match="a batch was split"):
        _verify(w, c, [first, second], second + 1, power=True)
    state = _state_after(c, second - 1)
    state[b"k999999"] = b"never written"
    with pytest.raises(ck.Failure, match="differs from the model"):
        _verify(w, c, [first], second - 1, power=True, state=state)
    # Thread 1's commit 0 was in flight (not acknowledged) but made it: it may fill the hole before thread 0's.
    w, c = _commits("FULL", [(1, 0), (0, 0)])
    _hole, acked = sorted(c)
    assert _verify(w, c, [acked], acked + c[acked].count - 1, power=False)["in_flight_recovered"] == 1
    # ... but a thread's in-flight commit never lands before its own acknowledged ones.
    w, c = _commits("FULL", [(0, 1), (0, 0)])
    with pytest.raises(ck.Failure, match="not explained by this cycle's commits"):
        _verify(w, c, [sorted(c)[1]], max(c) + c[max(c)].count - 1, power=False, threads=1)


# ---- the power-cut layer ---------------------------------------------------------------------------------------


class _Journal:
    """A SyncTrackingFS on a real directory, its model in-process."""

    def __init__(self, root):
        self.dir = os.path.join(root, "d")
        os.makedirs(self.dir)
        self.model = DurableModel([self.dir], os.path.join(root, "d.shadow"))
        self.model.start_process()
        self.fs = SyncTrackingFS(self.model.apply, self.model.shadow)

    def path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def write(self, name: str, data: bytes, *, sync: bool = True) -> None:
        f = self.fs.create(self.path(name))
        f.write(data)
        if sync:
            f.fsync()
        f.close()

    def append(self, name: str, data: bytes, *, sync: bool = False) -> None:
        f = self.fs.open_append(self.path(name))
        f.write(data)
        if sync:
            f.datasync()
        f.close()

    def state(self) -> dict[str, bytes]:
        out = {}
        for n in sorted(os.listdir(self.dir)):
            with open(self.path(n), "rb") as f:
                out[n] = f.read()
        return out


def _outcomes(tmp_path, scenario, seeds: int = 60) -> list[dict[str, bytes]]:
    """The directory after a power cut, for each seed: ``scenario(journal)``
    runs on a fresh directory, then the model cuts it."""
    out = []
    for seed in range(seeds):
        j = _Journal(str(tmp_path / str(seed)))
        scenario(j)
        j.model.cut(random.Random(seed))
        out.append(j.state())
    return out


def _distinct(states: list[dict[str, bytes]]) -> set[tuple]:
    return {tuple(sorted(s.items())) for s in states}


def test_power_cut_layer_synced_data_stays_unsynced_tail_varies(tmp_path):
    def scenario(j):
        j.write("a", b"synced")
        j.fs.sync_dir(j.dir)
        j.append("a", b"-tail-not-synced")

    states = _outcomes(tmp_path, scenario)
    assert all(set(s) == {"a"} and s["a"].startswith(b"synced") and len(s["a"]) <= 22 for s in states)
    contents = {s["a"] for s in states}
    assert b"synced" in contents and b"synced-tail-not-synced" in contents  # dropped, kept
    assert any(c[6:] and c != b"synced-tail-not-synced" for c in contents)  # torn, zeros or garbage


def test_power_cut_layer_unsynced_create_may_vanish(tmp_path):
    def scenario(j):
        j.write("a", b"data")  # the file is synced, its name is not

    assert _distinct(_outcomes(tmp_path, scenario)) == {(), (("a", b"data"),)}


def test_power_cut_layer_rename_is_atomic_and_needs_a_dir_sync(tmp_path):
    def switch(j, sync_after: bool):
        j.write("CURRENT", b"1")
        j.fs.sync_dir(j.dir)
        j.write("tmp", b"2")
        j.fs.rename(j.path("tmp"), j.path("CURRENT"))
        if sync_after:
            j.fs.sync_dir(j.dir)

    got = _distinct(_outcomes(tmp_path / "no", lambda j: switch(j, False)))
    assert got == {(("CURRENT", b"2"),), (("CURRENT", b"1"), ("tmp", b"2")), (("CURRENT", b"1"),)}
    got = _distinct(_outcomes(tmp_path / "yes", lambda j: switch(j, True)))
    assert got == {(("CURRENT", b"2"),)}


def test_power_cut_layer_unsynced_unlink_may_be_undone(tmp_path):
    def scenario(j):
        j.write("x", b"content")
        j.fs.sync_dir(j.dir)
        j.fs.remove(j.path("x"))

    assert _distinct(_outcomes(tmp_path, scenario)) == {(), (("x", b"content"),)}


@pytest.mark.parametrize("how", ["truncate", "recreate"])
def test_power_cut_layer_rewrite_below_the_synced_length(tmp_path, how):
    def scenario(j, sync: bool):
        j.write("f", b"ABCDEF")
        j.fs.sync_dir(j.dir)
        if how == "truncate":
            j.fs.truncate(j.path("f"), 2)
        else:
            j.write("f", b"AB", sync=False)  # O_TRUNC of an existing file: the same inode
        if sync:
            j.append("f", b"", sync=True)

    got = _distinct(_outcomes(tmp_path / "no", lambda j: scenario(j, False)))
    if how == "truncate":
        assert got == {(("f", b"ABCDEF"),), (("f", b"AB"),)}
    else:
        # O_TRUNC, then an unsynced write: the old content (the truncation
        # lost), or the truncation and the write kept, lost or torn
        # (tools/power_cut_fs.py, _Inode.cut_at).
        contents = {dict(s)["f"] for s in got}
        assert {b"ABCDEF", b"AB", b""} <= contents and all(c == b"ABCDEF" or len(c) <= 2 for c in contents)
    assert _distinct(_outcomes(tmp_path / "yes", lambda j: scenario(j, True))) == {(("f", b"AB"),)}


def test_power_cut_layer_dir_sync_covers_only_what_preceded_it(tmp_path):
    """A directory sync covers the changes journalled before it began: its
    line carries that count, so a create journalled after the sync started
    (a kill or a race can interleave lines) stays unsynced."""
    j = _Journal(str(tmp_path))
    with open(j.path("early"), "wb"), open(j.path("late"), "wb"):
        pass
    ino = {n: os.stat(j.path(n)).st_ino for n in ("early", "late")}
    for line in (f"fC\t{ino['early']}\t{j.path('early')}", f"fC\t{ino['late']}\t{j.path('late')}",
                 f"fD\t1\t{j.dir}"):
        j.model.apply(line)
    assert j.model.durable[j.dir] == {"early": ino["early"]}
    assert [g for _n, g in j.model.log[j.dir]] == [[("late", ino["late"])]]


def test_power_cut_layer_refuses_files_it_was_not_told_about(tmp_path):
    """A file created behind the layer's back fails the cut, unless a
    create intent explains it (a kill between the create and its line)."""
    j = _Journal(str(tmp_path / "a"))
    with open(j.path("sneaky"), "wb") as f:
        f.write(b"x")
    with pytest.raises(HarnessError, match="sneaky.*outside the filesystem layer"):
        j.model.cut(random.Random(0))

    def intent_only(j):
        j.model.apply(f"fc\t{j.path('cut-off')}")
        with open(j.path("cut-off"), "wb") as f:
            f.write(b"y")

    assert _distinct(_outcomes(tmp_path / "b", intent_only)) >= {(), (("cut-off", b""),)}


def test_power_cut_layer_rename_journalled_but_killed_before_it_ran(tmp_path):
    """A rename is journalled just before it runs: a kill in between leaves
    it journalled but not done, and the cut treats it as an unsynced
    rename (either state), not as a file nobody created."""
    def scenario(j):
        j.write("CURRENT", b"1")
        j.write("tmp", b"2")
        j.fs.sync_dir(j.dir)
        j.model.apply(f"fN\t{os.stat(j.path('tmp')).st_ino}\t{j.path('tmp')}\t{j.path('CURRENT')}")

    got = _distinct(_outcomes(tmp_path, scenario))
    assert got == {(("CURRENT", b"2"),), (("CURRENT", b"1"), ("tmp", b"2"))}


def test_power_cut_layer_refuses_new_directories(tmp_path):
    j = _Journal(str(tmp_path))
    j.fs.makedirs(j.dir)  # exists: fine
    with pytest.raises(OSError) as e:
        j.fs.makedirs(j.path("archive"))
    assert e.value.errno == errno.ENOTSUP


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
              compression="zstd", compression_level=22, block_size=65536, min_level_to_compress=0)
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
