#!/usr/bin/env python3
"""The reliability run: every family of issue 5 at a chosen size, one
summary, written to RELIABILITY.md.

Runs the reliability test files under pytest (with branch coverage of the
WAL, manifest, recovery and filesystem modules when the ``coverage`` package
is installed: it is in the ``test`` extra), collects the counts each family
appends to ``LSM_RELIABILITY_LOG`` (tests/reliability_log.py), and prints
and writes a summary: crash states checked per workload, operation indices
covered, faults injected (EIO/ENOSPC sweep, short writes, fsync failures),
kill cycles, fuzz executions, corruption cases, and violations (every
failing test counts; the run exits non-zero).

Sizes: ``--scale K`` multiplies every family's default size (crash rounds,
kill cycles, fault sweep and short writes, metamorphic and fuzz examples,
strace depth, the share of second-crash sweeps in the every-crash-point
families; from 4 on those check every outcome and sweep after every index);
``--scale 1`` is what CI runs.

    python tools/reliability.py                 # CI size, writes RELIABILITY.md
    python tools/reliability.py --scale 20      # an hour or more
    python tools/reliability.py --only test_crash_points.py --no-write
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FILES = [
    "test_crash_points.py",
    "test_crash_points_group.py",
    "test_power_cut.py",
    "test_trace_order.py",
    "test_fault_sweep.py",
    "test_short_writes.py",
    "test_fsync_failure.py",
    "test_fencing.py",
    "test_crash_kill.py",
    "test_wal_corruption.py",
    "test_corruption_matrix.py",
    "test_metamorphic.py",
    "test_fuzz_decoders.py",
    "test_strace_faults.py",
    # the unit tests of the covered modules, so that coverage is the suite's
    "test_wal_reader.py",
    "test_wal_reader_edges.py",
    "test_wal_v2.py",
    "test_wal_prealloc.py",
    "test_wal_format.py",
    "test_group_commit.py",
    "test_wal_writer_races.py",
    "test_wal_writer_edges.py",
    "test_fs_direct.py",
    "test_put_path.py",
    "test_manifest_checks.py",
    "test_fs_edges.py",
    "test_manifest.py",
    "test_crashfs.py",
    "test_fs.py",
    "test_version_set_edges.py",
    "test_recovery_edges.py",
    "test_db.py",
    "test_durability_api.py",
    "test_wal_retention.py",
]

# env var -> CI default; --scale multiplies them
SIZES = {
    "LSM_CRASH_ROUNDS": 12,
    "LSM_FSYNC_TRIALS": 12,
    "LSM_KILL_CYCLES": 300,
    "LSM_POWER_KILL_CYCLES": 200,
    "LSM_SWEEP_SCALE": 1,
    "LSM_METAMORPHIC_EXAMPLES": 20,
    "LSM_FUZZ_EXAMPLES": 200,
    "LSM_STRACE_MAX_N": 10,
}

COVERED = ("lsm/wal/", "lsm/manifest/", "lsm/recovery.py", "lsm/base/fs.py", "lsm/base/crashfs.py",
           "lsm/base/powercut.py")


def summarize(lines: list[dict]) -> dict[str, dict[str, float]]:
    """family -> summed numeric fields (and a count of records)."""
    out: dict[str, dict[str, float]] = {}
    for rec in lines:
        fam = str(rec.get("family", "?"))
        agg = out.setdefault(fam, {"records": 0})
        agg["records"] += 1
        for k, v in rec.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("trial", "nth", "errno"):
                agg[k] = agg.get(k, 0) + v
    return out


def junit_failures(path: str) -> tuple[int, int, list[str]]:
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return 0, 0, []
    tests = failures = 0
    failed = []
    for case in root.iter("testcase"):
        tests += 1
        if case.find("failure") is not None or case.find("error") is not None:
            failures += 1
            failed.append(f"{case.get('classname')}::{case.get('name')}")
    return tests, failures, failed


def coverage_table(json_path: str) -> list[tuple[str, int, int, float]]:
    try:
        with open(json_path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return []
    rows = []
    for name, info in sorted(data.get("files", {}).items()):
        rel = os.path.relpath(name, ROOT) if os.path.isabs(name) else name
        if not rel.startswith(COVERED):
            continue
        s = info["summary"]
        rows.append((rel, s.get("covered_branches", 0), s.get("num_branches", 0), s.get("percent_covered", 0.0)))
    return rows


def render(summary: dict, tests: int, failures: int, failed: list[str], cov: list, scale: float,
           seconds: float, files: list[str]) -> str:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    out = [
        "# Reliability run",
        "",
        f"Latest totals, written by `python tools/reliability.py --scale {scale:g}` on {now}",
        f"({platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPUs), "
        f"{seconds / 60:.1f} minutes. Re-run it to refresh this file; `--scale` multiplies every family's size.",
        "",
        f"**Violations: {failures}** ({tests} test cases in {len(files)} files).",
        "",
    ]
    if failed:
        out += ["Failing cases:", ""] + [f"- `{f}`" for f in failed] + [""]
    out += ["| family | records | figures |", "| --- | ---: | --- |"]
    for fam in sorted(summary):
        agg = summary[fam]
        figs = ", ".join(f"{k} {int(v) if float(v).is_integer() else round(v, 1):,}" for k, v in sorted(agg.items())
                         if k != "records")
        out.append(f"| {fam} | {int(agg['records'])} | {figs} |")
    out += [
        "",
        "What each family is: `docs/durability.md` (\"How this is proved\") and the",
        "docstring at the top of each test file.",
        "",
    ]
    if cov:
        out += ["## Branch coverage (in-process; the kill and strace families run in child processes)", "",
                "| module | branches covered | branches | percent |", "| --- | ---: | ---: | ---: |"]
        for rel, c, n, pct in cov:
            out.append(f"| `{rel}` | {c} | {n} | {pct:.1f} |")
        out.append("")
    else:
        out += ["Branch coverage: not measured (install the `coverage` package: `pip install -e .[test]`).", ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every family's size (default 1: CI size)")
    ap.add_argument("--only", default="", help="comma-separated test files to run instead of all")
    ap.add_argument("--no-coverage", action="store_true", help="skip branch coverage")
    ap.add_argument("--no-write", action="store_true", help="print the summary only, do not write RELIABILITY.md")
    ap.add_argument("--output", default=os.path.join(ROOT, "RELIABILITY.md"))
    args = ap.parse_args(argv)
    if args.scale <= 0:
        ap.error("--scale must be positive")
    files = [f for f in (args.only.split(",") if args.only else FILES) if f]
    files = [f for f in files if os.path.exists(os.path.join(ROOT, "tests", f))]
    if not files:
        ap.error("no reliability test files found")
    tmp = tempfile.mkdtemp(prefix="lsm-reliability-")
    log = os.path.join(tmp, "counts.jsonl")
    junit = os.path.join(tmp, "junit.xml")
    env = dict(os.environ, LSM_RELIABILITY_LOG=log)
    for k, v in SIZES.items():
        env.setdefault(k, str(max(1, round(v * args.scale))))
    # every crash point: the share of repeated recovery shapes swept by a
    # second crash grows with the scale (at 1, the default of both files:
    # every recovery); from 4 on, also every outcome of every index
    env.setdefault("LSM_CRASH_POINT_SECOND_SAMPLE", str(max(1, round(1 / args.scale))))
    env.setdefault("LSM_GROUP_CRASH_SECOND_EVERY", str(max(1, round(1 / args.scale))))
    if args.scale >= 4:
        env.setdefault("LSM_CRASH_POINT_ALL", "1")
        env.setdefault("LSM_GROUP_CRASH_ALL", "1")
    pytest_args = ["-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}"]
    pytest_args += [os.path.join("tests", f) for f in files]
    use_cov = not args.no_coverage
    if use_cov:
        try:
            import coverage  # noqa: F401
        except ImportError:
            use_cov = False
            print("coverage is not installed: branch coverage is not measured")
    covfile = os.path.join(tmp, ".coverage")
    if use_cov:
        cmd = [sys.executable, "-m", "coverage", "run", "--branch", f"--data-file={covfile}",
               "--source=" + ",".join(m.replace("/", ".").removesuffix(".py").rstrip(".") for m in COVERED)] + pytest_args
    else:
        cmd = [sys.executable] + pytest_args
    t0 = datetime.datetime.now()
    print("running:", " ".join(cmd[1:]), flush=True)
    rc = subprocess.run(cmd, cwd=ROOT, env=env).returncode
    seconds = (datetime.datetime.now() - t0).total_seconds()
    cov = []
    if use_cov:
        cj = os.path.join(tmp, "coverage.json")
        subprocess.run([sys.executable, "-m", "coverage", "json", f"--data-file={covfile}", "-o", cj, "-q"],
                       cwd=ROOT, env=env)
        cov = coverage_table(cj)
    lines = []
    if os.path.exists(log):
        with open(log) as f:
            lines = [json.loads(x) for x in f if x.strip()]
    tests, failures, failed = junit_failures(junit)
    if rc != 0 and failures == 0:
        failures = 1
        failed = [f"pytest exited {rc}"]
    text = render(summarize(lines), tests, failures, failed, cov, args.scale, seconds, files)
    print()
    print(text)
    if not args.no_write:
        with open(args.output, "w") as f:
            f.write(text)
        print(f"written to {args.output}")
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
