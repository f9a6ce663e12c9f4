"""Fuzz every decoder of lsm's on-disk formats (issue 5, family 8).

Each *target* feeds bytes to one decoder and checks its contract: it
returns data (and the data passes the target's invariants, e.g. a record
the WAL reader returns re-encodes to the bytes it was read from, a block
that decodes re-encodes to itself) or raises the documented error
(``CorruptionError``; ``ValueError`` for the byte-level helpers of
``lsm.sstable.block``, ``lsm.sstable.format`` and ``lsm.sstable.bloom``,
which their callers turn into CorruptionError). Anything else is a *violation*: another exception
(``MemoryError`` included: a length field must never make a decoder
allocate far beyond its input), or no answer within ``--timeout`` seconds.

Targets (``--list``): wal_segment, wal_replay, batch_body, sst_footer,
sst_block, sst_unframe, sst_properties, bloom, sst_table (open, iterate
both ways, get, check; with and without verify_checksums), manifest
(replay of a manifest file, and VersionSet.recover through a directory),
current (the CURRENT file), version_edit.

Inputs are mutations of valid encodings (seeds built here), which reach
much deeper than random bytes: bit flips, interesting bytes and integers
written over length fields, inserted, deleted, duplicated and zeroed runs,
truncation, splices of two seeds; and, for half of them, a structure-aware
*fix* that recomputes the checksums along the mutated framing (WAL
records, manifest records, table blocks and footer), so that the bytes
behind the checksums get fuzzed too. A few inputs are random bytes.

Engines:

* ``atheris`` (coverage-guided, libFuzzer; ``pip install -e ".[fuzz]"``):
  lsm is imported under atheris' instrumentation, the seeds are written
  to a corpus directory, and the same structure-aware fix runs as a custom
  mutator after libFuzzer's own mutations. Arguments after ``--`` go to
  libFuzzer (e.g. ``-- -max_total_time=3600 -rss_limit_mb=2048``).
* ``random``: the same mutations from a seeded ``random.Random`` loop (no
  coverage feedback); needs nothing but lsm.
* ``auto`` (default): atheris when it imports, else random (it says which).

The address-space limit (``--as-limit-mb``, default 1024 MiB above what
the process uses after start-up) turns any huge allocation into a
MemoryError, a violation. Every target run is under a SIGALRM timer.

Examples::

    python tools/fuzz_atheris.py --help
    python tools/fuzz_atheris.py --runs 20000 --seed 7                # every target, random engine if no atheris
    python tools/fuzz_atheris.py --engine random --target sst_table --seconds 3600
    python tools/fuzz_atheris.py --engine atheris --target wal_replay -- -max_total_time=3600
    python tools/fuzz_atheris.py --target manifest --replay crash-1234.bin

Output: one ``FUZZ target=... runs=... accepted=... rejected=...
violations=...`` line per target and a total; with ``LSM_RELIABILITY_LOG``
set, one JSON line per target is appended to that file. A violation
prints the target, the traceback and the input (hex), saves the input
under ``--crash-dir`` and makes the exit status 1. The CI-sized runs are
in tests/test_fuzz_decoders.py (Hypothesis, plus this tool with the random
engine in a subprocess under the address-space limit).
"""

from __future__ import annotations

import argparse
import os
import random
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
TOOLS = os.path.dirname(os.path.abspath(__file__))
if TOOLS not in sys.path:
    sys.path.insert(0, TOOLS)
# The targets, mutations and engines live in tools/fuzz/ (its __init__ lists the modules); the names below
# are what tests/test_fuzz_decoders.py uses as ``fuzz_atheris.X``.
from fuzz.core import Hang, L, Target, Violation, check, load, time_limit
from fuzz.engines import (
    Stats,
    fuzz_atheris,
    fuzz_random,
    limit_address_space,
    record_violation,
    report,
    run_one,
)
from fuzz.mutate import generate, mutate
from fuzz.targets import targets

__all__ = ["Hang", "L", "Stats", "Target", "Violation", "check", "fuzz_atheris", "fuzz_random", "generate",
           "limit_address_space", "load", "main", "mutate", "record_violation", "report", "run_one", "targets",
           "time_limit"]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    libfuzzer_args: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, libfuzzer_args = argv[:i], argv[i + 1 :]
    p = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--target", default="all", help="a target name, a comma-separated list, or 'all' (default)"
    )
    p.add_argument(
        "--engine",
        choices=("auto", "atheris", "random"),
        default="auto",
        help="atheris (coverage-guided), random (seeded mutation loop), auto: atheris if installed",
    )
    p.add_argument("--runs", type=int, default=0, help="inputs to run in total (0: until --seconds)")
    p.add_argument("--seconds", type=float, default=0, help="stop after this long (0: until --runs)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: random, printed)")
    p.add_argument(
        "--timeout", type=float, default=10.0, help="seconds one input may take (a hang), 0: no limit"
    )
    p.add_argument(
        "--as-limit-mb",
        type=int,
        default=1024,
        help="address-space headroom in MiB above start-up (0: no limit); beyond it allocation fails",
    )
    p.add_argument("--crash-dir", default=None, help="save each violating input here")
    p.add_argument("--corpus", default=None, help="atheris: corpus directory (default: a temporary one)")
    p.add_argument(
        "--replay", default=None, metavar="FILE", help="run one saved input against --target and exit"
    )
    p.add_argument(
        "--keep-going",
        dest="stop_on_violation",
        action="store_false",
        help="random engine: do not stop at the first violation",
    )
    p.add_argument("--list", action="store_true", help="list the targets and exit")
    args = p.parse_args(argv)
    limited = any(a.startswith(("-runs=", "-max_total_time=")) for a in libfuzzer_args)
    if not args.runs and not args.seconds and not args.replay and not args.list and not limited:
        args.runs = 5000
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1 << 31)

    engine = args.engine
    if engine == "auto":
        try:
            import atheris  # noqa: F401
        except ImportError:
            engine = "random"
            print(
                "atheris is not installed (pip install -e '.[fuzz]'): using the random mutation engine",
                flush=True,
            )
        else:
            engine = "atheris"
    load(instrument=engine == "atheris" and not args.replay and not args.list)
    all_targets = targets()
    if args.list:
        for t in all_targets.values():
            print(f"{t.name:15} {t.doc}")
        return 0
    names = list(all_targets) if args.target == "all" else args.target.split(",")
    unknown = [n for n in names if n not in all_targets]
    if unknown:
        p.error(f"--target: unknown {', '.join(unknown)} (known: {', '.join(all_targets)})")
    ts = [all_targets[n] for n in names]
    for t in ts:
        t.seed_list()  # build the seeds before the address-space limit
    limit = limit_address_space(args.as_limit_mb)
    if args.replay:
        with open(args.replay, "rb") as f:
            data = f.read()
        try:
            print(f"{ts[0].name}: {run_one(ts[0], data, args.timeout)}")
        except (Exception, Hang) as e:  # noqa: BLE001 - as above
            record_violation(ts[0], data, e, None)
            return 1
        return 0
    print(
        f"fuzz: engine={engine} seed={args.seed} targets={','.join(names)} "
        f"address-space limit={limit >> 20 if limit else 'none'} MiB; replay with --seed {args.seed}",
        flush=True,
    )
    if engine == "atheris":
        fuzz_atheris(ts, args, libfuzzer_args)
        return 0
    return report(fuzz_random(ts, args), engine, args.seed)


if __name__ == "__main__":
    sys.exit(main())
