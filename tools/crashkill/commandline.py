"""The tool's command line: the driver's arguments (also those of the
writer child and the zygote, which get hidden ones), the arguments the
driver passes on to each writer, and the command line that replays a run."""

from __future__ import annotations

import argparse
import os
import shlex


def passthrough(a: argparse.Namespace, *, threads: str | None = None, background: str | None = None) -> list[str]:
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
    cmd += passthrough(a)
    return " ".join(shlex.quote(c) for c in cmd)


def _threads_range(a: argparse.Namespace, p: argparse.ArgumentParser) -> None:
    lo, sep, hi = a.threads.partition("-")
    try:
        a.threads_range = (int(lo), int(hi if sep else lo))
    except ValueError:
        p.error(f"--threads: expected N or LO-HI, got {a.threads!r}")
    if not 1 <= a.threads_range[0] <= a.threads_range[1]:
        p.error(f"--threads: expected 1 <= LO <= HI, got {a.threads!r}")


def parse_args(argv: list[str] | None = None, description: str | None = None) -> argparse.Namespace:
    """The arguments; ``description`` is the text of ``--help`` (the
    docstring of tools/crash_kill.py)."""
    p = argparse.ArgumentParser(
        prog="tools/crash_kill.py",
        description=description,
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
                   help="override a database option (repeatable), e.g. --option memtable_size=65536, "
                        "--option wal_preallocate=false (true/false: a bool)")
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
