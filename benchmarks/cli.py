"""``python -m benchmarks WORKLOADS [options]``: argument handling and the
parent process.

The parent never imports an engine. For each repeat and each engine it
spawns ``python -m benchmarks._worker`` with a JSON plan, so each engine's
memory figures and crashes stay its own; the workloads of one engine run
in order in one child, so reads see what the previous fill wrote.
``limits`` runs once per repeat in a child of its own (engine ``disk``).

Exit status: 0; 1 when an engine's child failed (its finished workloads
are still reported); 2 for a usage error (unknown workload or engine).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import asdict

import benchmarks
from benchmarks import ENGINES, SYNC_LEVELS, WORKLOADS, data, report, sysinfo
from benchmarks.workloads import NEEDS_DATA, REOPEN, SYNCED, Config

DEFAULT_WORKLOADS = (
    "limits,fillsync,fillsync_threads,fillseq,fillbatch,fillrandom,overwrite,readrandom,"
    "readmissing,readseq,seekrandom"
)
"""What ``python -m benchmarks`` runs with no WORKLOADS: the disk's limits,
the ingestion workloads, and reads of what the last full-size fill left
(synced fills first: they write only --sync-num keys). About a minute at
the default --num."""

_SIZE = re.compile(r"^\s*(\d+)\s*([kmg]?)(i?b)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """``4194304``, ``4M``, ``4MiB``, ``64k`` -> bytes (powers of 1024)."""
    m = _SIZE.match(text)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (examples: 4096, 64K, 4MiB)")
    return int(m.group(1)) << {"": 0, "k": 10, "m": 20, "g": 30}[m.group(2).lower()]


def _option_value(text: str):
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(text.lower(), text)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="db_bench for Python: workloads against lsm and its peers, each engine in its own process.",
        epilog="workloads: " + ", ".join(WORKLOADS) + ". See docs/benchmarks.md for the method.",
    )
    p.add_argument(
        "workloads",
        nargs="?",
        help="comma-separated workload names, run in order (default: " + DEFAULT_WORKLOADS + ")",
    )
    g = p.add_argument_group("data")
    g.add_argument("--num", type=int, default=100_000, help="keys per workload (default %(default)s)")
    g.add_argument("--key-size", type=int, default=16, help="bytes per key (default %(default)s)")
    g.add_argument("--value-size", type=int, default=100, help="bytes per value (default %(default)s)")
    g.add_argument(
        "--compressible-ratio",
        type=float,
        default=0.5,
        help="values compress to about this fraction (default %(default)s, as db_bench)",
    )
    g.add_argument("--seed", type=int, default=301, help="seed of keys and values (default %(default)s)")
    g = p.add_argument_group("workloads")
    g.add_argument(
        "--threads",
        type=int,
        default=8,
        help="writers of fillsync_threads, readers of readwhilewriting (default %(default)s)",
    )
    g.add_argument(
        "--batch-size", type=int, default=1000, help="keys per batch of fillbatch (default %(default)s)"
    )
    g.add_argument(
        "--settle",
        action="store_true",
        help="after each write workload, wait (untimed) for lsm's flushes and compactions to finish and "
        "report the settled SSTable write amplification (sst_write_amp_settled); later workloads then "
        "start without compaction debt",
    )
    g.add_argument(
        "--no-read-settle",
        action="store_true",
        help="do not wait, after the reopen before each read workload, until the engine says no flush or "
        "compaction is pending (by default every engine with such a signal is waited for, untimed)",
    )
    g.add_argument(
        "--sync",
        choices=SYNC_LEVELS,
        default="full",
        help="durability of fillsync and fillsync_threads (default %(default)s)",
    )
    g.add_argument(
        "--sync-num",
        type=int,
        default=10_000,
        help="synced workloads and limits run min(--num, this) ops (default %(default)s)",
    )
    g.add_argument(
        "--limits-seconds",
        type=float,
        default=10.0,
        help="time cap of each synced limits measurement (default %(default)s)",
    )
    g.add_argument("--repeat", type=int, default=1, help="run everything N times, report medians")
    g = p.add_argument_group("engines and files")
    g.add_argument(
        "--engines", default="lsm", help="comma-separated: " + ",".join(ENGINES) + " (default lsm)"
    )
    g.add_argument(
        "--db", metavar="DIR", help="where databases go (default: a temp dir under the current dir)"
    )
    g.add_argument("--wal-dir", metavar="DIR", help="where WALs go, for engines that can separate them")
    g.add_argument("--keep", action="store_true", help="keep the databases after the run")
    g = p.add_argument_group("lsm options (passed to lsm.open)")
    g.add_argument("--memtable-size", type=parse_size, help="memtable_size, bytes (4MiB, 64K, ...)")
    g.add_argument("--block-size", type=parse_size, help="block_size, bytes")
    g.add_argument("--bloom-bits", type=int, help="bloom_bits_per_key")
    g.add_argument("--compression", choices=("lz4", "zstd", "none"), help="compression")
    g.add_argument(
        "--lsm-option",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="any other lsm option, repeatable (e.g. background=thread)",
    )
    g = p.add_argument_group("output")
    g.add_argument("--json", metavar="FILE", help="write the results as JSON")
    g.add_argument(
        "--compare",
        nargs="+",
        metavar="JSON",
        help="OLD.json: print new/old ops/s ratios after the run; "
        "with no WORKLOADS, OLD.json NEW.json compares two files",
    )
    g.add_argument("--plot", metavar="DIR", help="write PNG figures into DIR")
    g.add_argument("-v", "--verbose", action="store_true", help="status lines on stderr even when piped")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def _split_list(text: str, known: tuple, what: str, parser) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        parser.error(f"no {what} given")
    for n in names:
        if n not in known:
            parser.error(f"unknown {what} {n!r}; choose from {', '.join(known)}")
    return names


def lsm_overrides(args, parser) -> dict:
    opts = {}
    for name, attr in (
        ("memtable_size", "memtable_size"),
        ("block_size", "block_size"),
        ("bloom_bits_per_key", "bloom_bits"),
        ("compression", "compression"),
    ):
        v = getattr(args, attr)
        if v is not None:
            opts[name] = v
    for item in args.lsm_option:
        if "=" not in item:
            parser.error(f"--lsm-option expects NAME=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        opts[k.strip()] = _option_value(v.strip())
    return opts


def _child_cmd() -> list[str]:
    return [sys.executable, *(["-O"] * sys.flags.optimize), "-m", "benchmarks._worker"]


def _child_env() -> dict:
    """The child must import ``benchmarks`` (and ``lsm``) from the same tree."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(benchmarks.__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def run_child(
    engine: str,
    workloads: list[str],
    cfg: Config,
    db_dir: str,
    wal_dir: str | None,
    options: dict,
    scratch: str,
    tag: str,
    verbose: bool,
) -> dict:
    result_path = os.path.join(scratch, f"{engine}-{tag}.json")
    plan = {
        "engine": engine,
        "workloads": workloads,
        "config": asdict(cfg),
        "db_dir": db_dir,
        "wal_dir": wal_dir,
        "options": options,
        "result_path": result_path,
        "verbose": verbose,
    }
    proc = subprocess.run(
        _child_cmd(), input=json.dumps(plan), text=True, stdout=sys.stderr, env=_child_env(), check=False
    )
    try:
        with open(result_path) as f:
            out = json.load(f)
    except (OSError, ValueError):
        out = {
            "engine": engine,
            "results": [],
            "notes": [],
            "skipped": None,
            "version": None,
            "error": f"worker exited with status {proc.returncode} and no result file",
        }
    if proc.returncode != 0 and not out.get("error"):
        out["error"] = f"worker exited with status {proc.returncode}"
    return out


def _warnings(header: dict, cfg: Config, workloads: list[str], engines: list[str]) -> list[str]:
    warns = []
    if header["python"]["assertions"]:
        warns.append(
            "Python runs without -O: assert statements are on (normal for a library; "
            "they cost some time in lsm's hot paths)"
        )
    data_bytes = cfg.num * cfg.entry_bytes
    mem_kb = sysinfo.meminfo_kb("MemAvailable")
    if mem_kb and any(w in REOPEN for w in workloads) and data_bytes < mem_kb * 1024:
        warns.append(
            f"the data set ({data_bytes / (1 << 20):,.1f} MiB of keys+values) fits in the page cache "
            f"({mem_kb / (1 << 20):,.1f} GiB available): read workloads measure CPU and caches, "
            "not the disk"
        )
    for role, d in header["disk"].items():
        if d.get("fstype") in ("tmpfs", "ramfs"):
            warns.append(
                f"--{role} is on {d['fstype']}: fsync costs nothing there; synced figures are not a disk's"
            )
        elif d.get("fstype") == "overlay":
            warns.append(
                f"--{role} is on overlayfs (a container layer): sync costs may differ from the real disk"
            )
    lsm_opts = header.get("lsm", {}).get("options", {})
    if "lsm" in engines and lsm_opts.get("paranoid_checks") is True:
        warns.append("lsm paranoid_checks=True (its default): every block read verifies a checksum")
    return warns


def _notes(cfg: Config, args, workloads: list[str]) -> list[str]:
    notes = []
    synced = [w for w in workloads if w in SYNCED or w == "limits"]
    if synced and cfg.num > cfg.sync_num:
        notes.append(
            f"{', '.join(synced)}: ran min(--num, --sync-num) = {cfg.sync_num:,} ops "
            "(synced writes are slow; raise --sync-num for more)"
        )
    if args.repeat == 1:
        notes.append("one run per workload; --repeat N reports the median of N runs")
    else:
        notes.append(f"each line is the run with the median ops/s of {args.repeat} repeats")
    first = workloads[0]
    if first in NEEDS_DATA:
        notes.append(f"{first} runs first: the harness loads --num keys before it (untimed)")
    return notes


def compare_files(old_path: str, new_path: str) -> str:
    return report.compare_text(report.load_json(old_path), report.load_json(new_path), old_path, new_path)


def _exit_on_signal(signum, _frame):
    sys.exit(128 + signum)  # runs the finally clauses: temp databases are removed


def main(argv: list[str] | None = None) -> int:
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _exit_on_signal)
    parser = build_parser()
    args = parser.parse_args(argv)

    if args.compare and len(args.compare) > 2:
        parser.error("--compare takes OLD.json, or OLD.json NEW.json without WORKLOADS")
    if not args.workloads:
        if args.compare and len(args.compare) == 2:
            try:
                print(compare_files(*args.compare))
            except (OSError, ValueError) as exc:
                parser.error(str(exc))
            return 0
        args.workloads = DEFAULT_WORKLOADS
    if args.compare and len(args.compare) == 2:
        parser.error("with WORKLOADS, --compare takes one file (OLD.json)")
    old_doc = None
    if args.compare:
        try:
            old_doc = report.load_json(args.compare[0])
        except (OSError, ValueError) as exc:
            parser.error(f"--compare: {exc}")

    workloads = _split_list(args.workloads, WORKLOADS, "workload", parser)
    engines = list(dict.fromkeys(_split_list(args.engines, ENGINES, "engine", parser)))
    for name in ("num", "threads", "batch_size", "sync_num", "repeat"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.value_size < 0 or not (0.0 < args.compressible_ratio <= 1.0):
        parser.error("--value-size must be >= 0 and --compressible-ratio in (0, 1]")
    try:
        data.check_key_size(args.key_size, args.num)
    except ValueError as exc:
        parser.error(str(exc))
    options = lsm_overrides(args, parser)
    cfg = Config(
        num=args.num,
        key_size=args.key_size,
        value_size=args.value_size,
        compressible_ratio=args.compressible_ratio,
        threads=args.threads,
        batch_size=args.batch_size,
        sync=args.sync,
        sync_num=args.sync_num,
        seed=args.seed,
        progress=not args.no_progress,
        limits_seconds=args.limits_seconds,
        settle=args.settle,
        read_settle=not args.no_read_settle,
    )

    own_root = args.db is None
    root = tempfile.mkdtemp(prefix="bench-db-", dir=os.getcwd()) if own_root else os.path.abspath(args.db)
    os.makedirs(root, exist_ok=True)
    wal_root = os.path.abspath(args.wal_dir) if args.wal_dir else None
    if wal_root:
        os.makedirs(wal_root, exist_ok=True)
    header = sysinfo.collect(root, wal_root, options, "lsm" in engines)
    scratch = tempfile.mkdtemp(prefix="bench-results-")
    made: list[str] = []
    failures: list[str] = []
    child_notes: list[str] = []
    skipped: list[str] = []
    versions: dict[str, str] = {}
    runs: list[list[dict]] = []
    engine_workloads = [w for w in workloads if w != "limits"]
    try:
        for rep in range(args.repeat):
            results: list[dict] = []
            jobs = ([("disk", ["limits"])] if "limits" in workloads else []) + (
                [(e, engine_workloads) for e in engines] if engine_workloads else []
            )
            for engine, seq in jobs:
                db_dir = tempfile.mkdtemp(prefix=f"{engine}-", dir=root)
                wal_dir = tempfile.mkdtemp(prefix=f"{engine}-wal-", dir=wal_root) if wal_root else None
                made.extend(d for d in (db_dir, wal_dir) if d)
                out = run_child(
                    engine,
                    seq,
                    cfg,
                    db_dir,
                    wal_dir,
                    options if engine == "lsm" else {},
                    scratch,
                    str(rep),
                    args.verbose,
                )
                results.extend(out.get("results", []))
                if rep == 0:
                    child_notes.extend(out.get("notes", []))
                    if out.get("skipped"):
                        skipped.append(f"{engine} skipped: {out['skipped']}")
                if out.get("version"):
                    versions[engine] = out["version"]
                if out.get("error"):
                    failures.append(f"{engine} failed (repeat {rep + 1}):\n{out['error']}")
                if not args.keep:
                    for d in (db_dir, wal_dir):
                        if d:
                            shutil.rmtree(d, ignore_errors=True)
            runs.append(results)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        if not args.keep:
            for d in made:
                shutil.rmtree(d, ignore_errors=True)
            if own_root:
                shutil.rmtree(root, ignore_errors=True)

    header["config"] = {**asdict(cfg), "repeat": args.repeat, "engines": engines, "workloads": workloads}
    header["engine_versions"] = versions
    header["warnings"] = _warnings(header, cfg, workloads, engines) + skipped
    header["notes"] = _notes(cfg, args, workloads) + list(dict.fromkeys(child_notes))
    if args.keep:
        header["notes"].append(f"databases kept under {root}" + (f" and {wal_root}" if wal_root else ""))
    doc = {"header": header, "results": report.median_records(runs)}

    print(report.report_text(doc))
    if old_doc is not None:
        print()
        print(report.compare_text(old_doc, doc, args.compare[0], "this run"))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        report.write_json(args.json, doc)
        print(f"\nresults written to {args.json}")
    if args.plot:
        from benchmarks import plot

        paths = plot.plot_all(doc, args.plot)
        print("plots: " + (", ".join(paths) if paths else "none (no results to plot)"))
    for f in failures:
        print(f"\nERROR: {f}", file=sys.stderr)
    return 1 if failures else 0
