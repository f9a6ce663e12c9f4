#!/usr/bin/env python3
"""Fault injection outside lsm's own filesystem seam, with strace.

Every file operation in lsm goes through ``lsm.base.fs``; the in-process
fault layer (CrashFS) can only fail what passes through it. This driver
fails real system calls of a real process instead (``strace -e inject``),
so I/O that bypassed the seam, and the kernel's own error paths, are
exercised too.

A child process runs a flush + compaction workload on a real directory: FULL
puts (each acknowledged on stdout after it returned), flushes, a full
compaction, close. For each system call in the sweep (fdatasync, fsync,
rename, unlink, ftruncate) and N = 1, 2, ... the child runs under strace
with the Nth invocation (per thread) failing with EIO, once, and then from
the Nth on (persistently), until a run completes without an injection. After
each run the parent reopens the database (no strace) and checks:

* the child ended cleanly or with a typed lsm error (NeedsRecoveryError and
  friends, exit 3); any other exception is a violation;
* every acknowledged commit is in the reopened database with its value (or
  a later value of the same key);
* the reopened database accepts a write.

Usage: python tools/strace_faults.py [--mode thread|process] [--max-n 40]
Skips (exit 0, says so) when strace is missing or cannot trace here.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

SYSCALLS = ("fdatasync", "fsync", "rename", "unlink", "ftruncate")


def child(path: str, mode: str) -> int:
    import lsm

    try:
        db = lsm.open(path, background=mode, memtable_size=8192, wal_segment_size=8192,
                      target_file_size=4096, l0_compaction_trigger=2, max_bytes_for_level_base=16384,
                      level_multiplier=2, num_levels=4)
    except (lsm.Error, OSError) as e:
        print(f"error-open {type(e).__name__}: {e}", flush=True)
        return 3
    try:
        for i in range(240):
            k = b"k%03d" % (i % 90)
            v = b"v%04d-" % i + b"x" * 60
            seq = db.put(k, v)
            print(f"ack {seq} {k.hex()} {v.hex()}", flush=True)
            if i % 80 == 79:
                db.flush()
        db.compact_range()
        db.close()
    except lsm.Error as e:
        print(f"error {type(e).__name__}: {e}", flush=True)
        try:
            db.close()
        except lsm.Error:
            pass
        return 3
    print("done", flush=True)
    return 0


def run_one(workdir: str, mode: str, syscall: str | None, when: str | None) -> dict:
    db = os.path.join(workdir, "db")
    shutil.rmtree(db, ignore_errors=True)
    log = os.path.join(workdir, "strace.log")
    cmd = [sys.executable, os.path.abspath(__file__), "--child", db, "--mode", mode]
    if syscall is not None:
        cmd = ["strace", "-f", "-qq", "--seccomp-bpf", "-o", log, "-e", f"trace={syscall}",
               "-e", f"inject={syscall}:error=EIO:when={when}"] + cmd
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    # the child imports this checkout's lsm, installed or not (as tests/test_crash_kill.py's children do)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    injected = 0
    if syscall is not None and os.path.exists(log):
        with open(log) as f:
            injected = sum(1 for line in f if "(INJECTED)" in line)
    acks = []
    for line in p.stdout.splitlines():
        if line.startswith("ack "):
            _, seq, k, v = line.split()
            acks.append((int(seq), bytes.fromhex(k), bytes.fromhex(v)))
    return {"rc": p.returncode, "stdout": p.stdout, "stderr": p.stderr, "injected": injected, "acks": acks, "db": db}


def verify(result: dict, mode: str) -> list[str]:
    import lsm

    problems = []
    if result["rc"] not in (0, 3):
        tail = result["stderr"].strip().splitlines()[-3:]
        problems.append(f"child exited {result['rc']} (untyped failure): {' | '.join(tail)}")
    model = {}
    for _seq, k, v in sorted(result["acks"]):
        model[k] = v
    try:
        db = lsm.open(result["db"], background="thread")
    except lsm.Error as e:
        return problems + [f"reopen failed: {type(e).__name__}: {e}"]
    try:
        for k, v in model.items():
            got = db.get(k)
            if got is None or got < v:  # values carry a zero-padded counter: a later write compares greater
                problems.append(f"acknowledged {k!r} lost or older: got {got!r:.30}, want {v!r:.30}")
        db.put(b"after", b"reopen")
    finally:
        db.close()
    return problems


def available() -> str | None:
    if shutil.which("strace") is None:
        return "strace is not installed"
    p = subprocess.run(["strace", "-f", "-qq", "--seccomp-bpf", "-e", "trace=fsync",
                        "-e", "inject=fsync:error=EIO:when=1", "true"], capture_output=True, text=True)
    if p.returncode != 0:
        return f"strace cannot trace here: {p.stderr.strip()[:200]}"
    return None


def sweep(mode: str, max_n: int, syscalls: tuple[str, ...], quiet: bool = False) -> dict:
    why = available()
    if why:
        print(f"strace fault sweep skipped: {why}")
        return {"skipped": why}
    workdir = tempfile.mkdtemp(prefix="lsm-strace-")
    totals = {"runs": 0, "injected": 0, "violations": 0, "by_syscall": {}, "problems": []}
    t0 = time.perf_counter()
    try:
        base = run_one(workdir, mode, None, None)
        if base["rc"] != 0:
            raise SystemExit(f"the workload fails without faults: {base['stderr'][-500:]}")
        for sc in syscalls:
            runs = injected = 0
            for persistent in (False, True):
                for n in range(1, max_n + 1):
                    when = f"{n}+" if persistent else str(n)
                    r = run_one(workdir, mode, sc, when)
                    runs += 1
                    injected += r["injected"]
                    probs = verify(r, mode)
                    if probs:
                        totals["violations"] += len(probs)
                        totals["problems"].append({"syscall": sc, "when": when, "problems": probs})
                        if not quiet:
                            print(f"VIOLATION {sc} when={when}: {probs}")
                    if r["injected"] == 0:
                        break  # the workload made fewer than n such calls in every thread
            totals["by_syscall"][sc] = {"runs": runs, "injected": injected}
            totals["runs"] += runs
            totals["injected"] += injected
            if not quiet:
                print(f"{sc}: {runs} runs, {injected} injected faults")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    totals["seconds"] = round(time.perf_counter() - t0, 1)
    return totals


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--mode", choices=("thread", "process"), default="thread",
                    help="where the child's flushes and compactions run (default thread)")
    ap.add_argument("--max-n", type=int, default=40, help="highest invocation number to fail (default 40)")
    ap.add_argument("--syscalls", default=",".join(SYSCALLS), help="comma-separated (default: %(default)s)")
    ap.add_argument("--json", action="store_true", help="print the totals as JSON")
    ap.add_argument("--child", metavar="DB", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child(args.child, args.mode)
    syscalls = tuple(s for s in args.syscalls.split(",") if s)
    bad = [s for s in syscalls if not re.fullmatch(r"[a-z0-9_]+", s)]
    if bad:
        ap.error(f"bad syscall names: {bad}")
    totals = sweep(args.mode, args.max_n, syscalls, quiet=args.json)
    if args.json:
        print(json.dumps(totals))
    else:
        print(f"total: {totals.get('runs', 0)} runs, {totals.get('injected', 0)} faults injected, "
              f"{totals.get('violations', 0)} violations")
    return 1 if totals.get("violations") else 0


if __name__ == "__main__":
    sys.exit(main())
