"""Running the targets: one input under the timer, a violation's report
(and saved input), the random engine (a seeded loop) and the atheris
engine (coverage-guided), the address-space limit, and the figures."""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field

from fuzz.core import Hang, Target, time_limit
from fuzz.mutate import generate


@dataclass
class Stats:
    runs: int = 0
    accepted: int = 0
    rejected: int = 0
    violations: list[str] = field(default_factory=list)
    seconds: float = 0.0


def run_one(t: Target, data: bytes, timeout: float) -> str:
    """``t.run(data)`` under the timer: "accepted", "rejected", or raises
    (a violation)."""
    with time_limit(timeout):
        return t.run(data)


def record_violation(t: Target, data: bytes, exc: BaseException, crash_dir: str | None) -> str:
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    where = ""
    if crash_dir:
        os.makedirs(crash_dir, exist_ok=True)
        where = os.path.join(crash_dir, f"{t.name}-{abs(hash(data)) % 10**10}.bin")
        with open(where, "wb") as f:
            f.write(data)
        where = f"\n  saved as {where}: replay with python tools/fuzz_atheris.py --target {t.name} --replay {where}"
    msg = f"VIOLATION in {t.name}: {type(exc).__name__}: {exc}\n  input ({len(data)} bytes): {data[:256].hex()}{where}\n{text}"
    print(msg, file=sys.stderr, flush=True)
    return msg


def fuzz_random(ts: list[Target], args: argparse.Namespace) -> dict[str, Stats]:
    rng = random.Random(args.seed)
    stats = {t.name: Stats() for t in ts}
    deadline = time.monotonic() + args.seconds if args.seconds else None
    for i in range(args.runs if args.runs else 1 << 62):
        if deadline is not None and time.monotonic() > deadline:
            break
        t = ts[i % len(ts)]
        s = stats[t.name]
        data = generate(t, rng)
        t0 = time.perf_counter()
        try:
            outcome = run_one(t, data, args.timeout)
        except (Exception, Hang) as e:  # noqa: BLE001 - anything but the documented error is a violation
            s.violations.append(record_violation(t, data, e, args.crash_dir))
            if args.stop_on_violation:
                break
        else:
            s.accepted += outcome == "accepted"
            s.rejected += outcome == "rejected"
        s.seconds += time.perf_counter() - t0
        s.runs += 1
    return stats


def fuzz_atheris(ts: list[Target], args: argparse.Namespace, libfuzzer_args: list[str]) -> None:
    import atheris

    single = len(ts) == 1
    rnd = random.Random(args.seed)

    def split(data: bytes) -> tuple[Target, bytes]:
        if single:
            return ts[0], data
        return (ts[data[0] % len(ts)], data[1:]) if data else (ts[0], b"")

    def test_one_input(data: bytes) -> None:
        t, payload = split(data)
        run_one(t, payload, args.timeout)  # a violation propagates: libFuzzer reports it and saves the input

    def custom_mutator(data: bytes, max_size: int, seed: int) -> bytes:
        rnd.seed(seed)
        out = atheris.Mutate(data, max_size)
        t, payload = split(out)
        if t.fix is not None and rnd.random() < 0.5:
            payload = t.fix(payload)
            out = payload if single else out[:1] + payload
        return out[:max_size]

    corpus = args.corpus or tempfile.mkdtemp(prefix="lsm-fuzz-corpus-")
    os.makedirs(corpus, exist_ok=True)
    for k, t in enumerate(ts):
        for j, s in enumerate(t.seed_list()):
            with open(os.path.join(corpus, f"seed-{t.name}-{j}"), "wb") as f:
                f.write(s if single else bytes([k]) + s)
    argv = [sys.argv[0], *libfuzzer_args]
    if args.runs and not any(a.startswith("-runs=") for a in argv):
        argv.append(f"-runs={args.runs}")
    if args.seconds and not any(a.startswith("-max_total_time=") for a in argv):
        argv.append(f"-max_total_time={int(args.seconds)}")
    argv.append(f"-seed={args.seed}")
    argv.append(corpus)
    print(f"atheris: targets {', '.join(t.name for t in ts)}; corpus {corpus}", flush=True)
    atheris.Setup(argv, test_one_input, custom_mutator=custom_mutator)
    atheris.Fuzz()


def limit_address_space(extra_mb: int) -> int:
    """Cap the address space at what the process maps now plus
    ``extra_mb``: a huge allocation then fails with MemoryError. Returns the
    limit in bytes (0: not set)."""
    if extra_mb <= 0:
        return 0
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            vm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    except (OSError, StopIteration):
        return 0
    limit = vm + extra_mb * 1024 * 1024
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    return limit


def report(stats: dict[str, Stats], engine: str, seed: int) -> int:
    total = Stats()
    log = os.environ.get("LSM_RELIABILITY_LOG")
    for name, s in stats.items():
        print(
            f"FUZZ target={name} runs={s.runs} accepted={s.accepted} rejected={s.rejected} "
            f"violations={len(s.violations)} seconds={s.seconds:.1f}",
            flush=True,
        )
        total.runs += s.runs
        total.accepted += s.accepted
        total.rejected += s.rejected
        total.violations += s.violations
        if log:
            with open(log, "a", encoding="utf-8") as f:
                f.write(
                    json.dumps(
                        {
                            "family": "fuzz",
                            "target": name,
                            "engine": engine,
                            "seed": seed,
                            "cases": s.runs,
                            "accepted": s.accepted,
                            "rejected": s.rejected,
                            "violations": len(s.violations),
                        },
                        sort_keys=True,
                    )
                    + "\n"
                )
    print(
        f"FUZZ total runs={total.runs} accepted={total.accepted} rejected={total.rejected} "
        f"violations={len(total.violations)} engine={engine} seed={seed}",
        flush=True,
    )
    return 1 if total.violations else 0
