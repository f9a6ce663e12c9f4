"""One cycle: plan it (from the driver's seeded generator), start the
writer, kill it at the planned moment while collecting its reports, and
reopen the database."""

from __future__ import annotations

import argparse
import os
import random
import signal
import threading
from dataclasses import dataclass

import lsm
from crashkill.commandline import passthrough
from crashkill.failure import Failure
from crashkill.oracle import CycleResult
from crashkill.workload import options_from
from crashkill.zygote import Zygote


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
    argv += passthrough(a, threads=str(plan.threads), background=plan.background)
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
