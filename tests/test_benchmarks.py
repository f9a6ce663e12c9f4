"""Tests of the benchmark harness (``benchmarks/``).

End to end: every workload through the real CLI (``python -m benchmarks``)
at tiny sizes, for sqlite3 and, once ``lsm.open`` exists, for lsm; the JSON
document against its schema; ``--compare``; ``--plot``; an unknown engine,
a peer whose import fails and an engine that crashes. Unit: percentiles,
keys, values, the timeline, medians, and a harness run against an engine
that loses writes (the read check must notice).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest

from benchmarks import WORKLOADS, data, measure, report
from benchmarks.cli import parse_size
from benchmarks.engines import Adapter
from benchmarks.workloads import Config, Runner

REPO = Path(__file__).resolve().parents[1]
ALL = ",".join(WORKLOADS)
TINY = ["--num", "300", "--sync-num", "30", "--threads", "2", "--batch-size", "50", "--limits-seconds", "2"]


def run_cli(*args, cwd, extra_path: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (extra_path, str(REPO), env.get("PYTHONPATH")) if p)
    return subprocess.run(
        [sys.executable, "-m", "benchmarks", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def lsm_available() -> bool:
    try:
        import lsm
    except Exception:  # noqa: BLE001 - any import failure: not available
        return False
    return callable(getattr(lsm, "open", None))


def check_schema(doc: dict) -> None:
    """The JSON document's contract, checked field by field here (not via
    report.validate, which is itself under test)."""
    assert isinstance(doc["header"], dict)
    for key in ("date", "python", "cpu", "disk", "config", "warnings", "notes"):
        assert key in doc["header"], key
    assert isinstance(doc["results"], list) and doc["results"]
    for r in doc["results"]:
        assert isinstance(r["engine"], str) and isinstance(r["workload"], str)
        assert isinstance(r["ops"], int) and r["ops"] > 0
        for key in ("seconds", "ops_per_sec", "micros_per_op", "mb_per_sec", "rss_peak_mb"):
            assert isinstance(r[key], (int, float)) and not isinstance(r[key], bool), key
            assert r[key] >= 0, key
        assert r["seconds"] > 0
        assert abs(r["ops_per_sec"] * r["seconds"] - r["ops"]) <= 1e-6 * r["ops"] + 1e-6
        lat = r["latency_us"]
        assert set(lat) >= {"p50", "p99", "p999", "max"}
        assert 0 <= lat["p50"] <= lat["p99"] <= lat["p999"] <= lat["max"]
        assert isinstance(r["extra"], dict)
    assert report.validate(doc) == []


def by_workload(doc: dict, engine: str) -> dict:
    return {r["workload"]: r for r in doc["results"] if r["engine"] == engine}


def run_all_workloads(engine: str, tmp_path: Path, *options: str) -> dict:
    out = tmp_path / "out.json"
    p = run_cli(ALL, "--engines", engine, *TINY, *options, "--json", str(out), cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    doc = json.loads(out.read_text())
    check_schema(doc)
    # The default database directory is a temp dir under cwd, removed after.
    assert sorted(x.name for x in tmp_path.iterdir()) == ["out.json"]
    # No progress bar when stderr is not a terminal.
    assert "%|" not in p.stderr
    got = by_workload(doc, engine)
    for name in WORKLOADS:
        if name not in ("limits", "ingest"):
            assert name in got, f"{name} missing from results; stdout:\n{p.stdout}"
    limits = by_workload(doc, "disk")
    assert set(limits) == {"limits.append_fdatasync", "limits.prealloc_fdatasync", "limits.seqwrite"}
    # Synced workloads ran --sync-num ops; the others --num.
    assert got["fillsync"]["ops"] == 30 and got["fillsync_threads"]["ops"] == 30
    assert got["fillrandom"]["ops"] == 300 and got["fillbatch"]["extra"]["latency_unit"] == "batch"
    # readrandom and readseq follow fillsync_threads (30 keys, all present).
    assert got["readrandom"]["extra"]["found"] == got["readrandom"]["extra"]["expected_found"] == 300
    assert got["readmissing"]["extra"]["found"] == 0
    assert got["readseq"]["ops"] == got["readreverse"]["ops"] == 30
    assert got["seekrandom"]["extra"]["entries_read"] > 300
    assert got["readwhilewriting"]["extra"]["threads"] == 2
    # Every read found what the harness expects it to find.
    assert not [line for line in p.stdout.splitlines() if ": found " in line], p.stdout
    assert "runs on the 30 keys that fillsync_threads left" in p.stdout
    assert "--sync-num" in p.stdout
    return {"doc": doc, "stdout": p.stdout, "got": got}


# ------------------------------------------------------------------ end to end


def test_every_workload_sqlite3(tmp_path):
    res = run_all_workloads("sqlite3", tmp_path)
    got, stdout = res["got"], res["stdout"]
    assert "sqlite3 ingest: skipped, the engine has no db.ingest" in stdout
    assert "synchronous=FULL" in got["fillsync"]["extra"]["durability"]
    assert "synchronous=OFF" in got["fillrandom"]["extra"]["durability"]
    for line in ("python:", "cpu:", "disk (db):", "keys:"):
        assert line in stdout
    # Every timed part carries the CPU it used, so a rate that fell can be
    # told from a process that waited (benchmarks/figures.py, cpu_figures).
    for name, r in got.items():
        x = r["extra"]
        assert x["cpu_seconds"] >= 0 and x["cpu_children_seconds"] >= 0, name
        cpu = x["cpu_seconds"] + x["cpu_children_seconds"]
        assert x["cpu_per_op_us"] == pytest.approx(cpu * 1e6 / r["ops"])
        assert x["cpu_share"] == pytest.approx(cpu / r["seconds"])


def test_every_workload_lsm(tmp_path):
    if not lsm_available():
        pytest.skip("lsm engine not available yet")
    # A tiny memtable, so that 300 keys flush and compact.
    res = run_all_workloads("lsm", tmp_path, "--memtable-size", "8K")
    got, doc = res["got"], res["doc"]
    assert doc["header"]["lsm"]["has_open"] is True
    assert doc["header"]["lsm"]["options"]["memtable_size"] == 8192
    assert sum(r["extra"]["flush_count"] or 0 for r in got.values()) > 0
    x = got["fillrandom"]["extra"]
    for key in (
        "user_bytes_written",
        "wal_bytes_written",
        "sst_bytes_written",
        "stall_seconds",
        "flush_count",
        "compaction_count",
        "write_amp",
    ):
        assert key in x, key
    assert "Sync.FULL" in got["fillsync"]["extra"]["durability"]


def test_plot_writes_pngs(tmp_path):
    pytest.importorskip("matplotlib")
    plots = tmp_path / "plots"
    p = run_cli(
        "fillrandom,fillsync,fillsync_threads,limits",
        "--engines",
        "sqlite3",
        *TINY,
        "--plot",
        str(plots),
        cwd=tmp_path,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    names = sorted(x.name for x in plots.iterdir())
    assert names == ["latency_fillsync.png", "throughput.png", "timeline_fillrandom.png"]
    for name in names:
        assert (plots / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_two_files_and_after_a_run(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    for f in (a, b):
        p = run_cli(
            "fillseq,readrandom", "--engines", "sqlite3", "--num", "200", "--json", str(f), cwd=tmp_path
        )
        assert p.returncode == 0, p.stderr
    p = run_cli("--compare", str(a), str(b), cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    rows = [line.split() for line in p.stdout.splitlines() if line.startswith("sqlite3")]
    assert [r[1] for r in rows] == ["fillseq", "readrandom"]
    old = {r["workload"]: r["ops_per_sec"] for r in json.loads(a.read_text())["results"]}
    new = {r["workload"]: r["ops_per_sec"] for r in json.loads(b.read_text())["results"]}
    for r in rows:
        assert float(r[4]) == pytest.approx(new[r[1]] / old[r[1]], abs=0.006)
    p = run_cli("fillseq", "--engines", "sqlite3", "--num", "200", "--compare", str(a), cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "compare: this run vs" in p.stdout
    assert "gone" in p.stdout  # readrandom is in a.json only


def test_compare_rejects_a_file_that_is_not_a_result(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"header": {}, "results": [{"engine": "x"}]}))
    p = run_cli("--compare", str(bad), str(bad), cwd=tmp_path)
    assert p.returncode == 2
    assert "not a benchmark result file" in p.stderr


def test_unknown_engine_and_workload_are_usage_errors(tmp_path):
    p = run_cli("fillseq", "--engines", "sqlite3,nosuch", cwd=tmp_path)
    assert p.returncode == 2
    assert "unknown engine 'nosuch'" in p.stderr
    p = run_cli("fillseq,nosuchload", "--engines", "sqlite3", cwd=tmp_path)
    assert p.returncode == 2
    assert "unknown workload 'nosuchload'" in p.stderr
    assert list(tmp_path.iterdir()) == []


def test_peer_whose_import_fails_is_skipped_with_a_note(tmp_path):
    fake = tmp_path / "fake"
    (fake / "plyvel").mkdir(parents=True)
    (fake / "plyvel" / "__init__.py").write_text("raise ImportError('simulated: plyvel is broken')\n")
    out = tmp_path / "out.json"
    p = run_cli(
        "fillseq,readrandom",
        "--engines",
        "sqlite3,plyvel",
        "--num",
        "200",
        "--json",
        str(out),
        cwd=tmp_path,
        extra_path=str(fake),
    )
    assert p.returncode == 0, p.stdout + p.stderr
    assert "plyvel skipped: import plyvel failed" in p.stdout
    assert "simulated: plyvel is broken" in p.stdout
    doc = json.loads(out.read_text())
    check_schema(doc)
    assert {r["engine"] for r in doc["results"]} == {"sqlite3"}
    assert any("plyvel skipped" in w for w in doc["header"]["warnings"])


def test_engine_that_crashes_fails_the_run(tmp_path):
    fake = tmp_path / "fake"
    (fake / "lmdb").mkdir(parents=True)
    (fake / "lmdb" / "__init__.py").write_text(
        "__version__ = 'fake'\ndef open(*args, **kwargs):\n    raise RuntimeError('simulated crash')\n"
    )
    p = run_cli("fillseq", "--engines", "sqlite3,lmdb", "--num", "100", cwd=tmp_path, extra_path=str(fake))
    assert p.returncode == 1
    assert "lmdb failed" in p.stderr and "simulated crash" in p.stderr
    assert "sqlite3     fillseq" in p.stdout  # the other engine is still reported


# ------------------------------------------------------------------------ unit


def test_percentile_is_nearest_rank():
    values = list(range(1, 101))
    assert measure.percentile(values, 50) == 50
    assert measure.percentile(values, 99) == 99
    assert measure.percentile(values, 99.9) == 100
    assert measure.percentile(values, 100) == 100
    assert measure.percentile([1, 2, 3, 4], 50) == 2
    assert measure.percentile([], 50) == 0
    s = measure.latency_summary([5000, 1000, 3000, 2000, 4000])["latency_us"]
    assert s == {"p50": 3.0, "p99": 5.0, "p999": 5.0, "max": 5.0}


def test_cpu_seconds_counts_this_process_and_its_live_children():
    # A child that burns 0.3 s of its own CPU, then waits for its stdin to
    # close: while it lives, its CPU is in the children's figure.
    burn = "import sys, time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\n"
    own0, children0 = measure.cpu_seconds()
    child = subprocess.Popen(
        [sys.executable, "-c", burn + "print('burnt', flush=True)\nsys.stdin.read()"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline() == "burnt\n"
        own1, children1 = measure.cpu_seconds()
    finally:
        child.stdin.close()
        child.wait()
    assert children1 - children0 >= 0.25  # clock ticks of 10 ms at worst
    t = time.process_time()
    while time.process_time() - t < 0.1:
        pass
    own2, _ = measure.cpu_seconds()
    assert own1 >= own0 and own2 - own1 >= 0.1


def test_timeline_counts_every_op_in_its_interval():
    start, step = 1_000, measure.TIMELINE_INTERVAL_NS
    ends = [start + 1, start + step - 1, start + step + 5, start + 3 * step - 1, start + 3 * step]
    assert measure.timeline(ends, start, start + 3 * step) == [2, 1, 2]


def test_keys_are_fixed_width_deterministic_and_missing_keys_fall_between():
    n = 1000
    present = data.keys(data.permutation(n, 7), 16)
    assert present == data.keys(data.permutation(n, 7), 16)
    assert present != data.keys(data.permutation(n, 8), 16)
    assert {len(k) for k in present} == {16}
    assert sorted(present) == data.keys(range(n), 16)
    missing = data.missing_keys(data.uniform(n, 500, 3), 16)
    assert {len(k) for k in missing} == {16}
    assert not set(missing) & set(present)
    lo, hi = min(present), max(present)
    assert all(lo < k < hi for k in missing)
    with pytest.raises(ValueError):
        data.check_key_size(4, 100_000)


def test_values_compress_to_the_requested_ratio():
    for ratio in (0.25, 0.5, 1.0):
        pool = data.value_pool(100, ratio, 1)
        assert {len(v) for v in pool} == {100}
        blob = b"".join(pool[:2000])
        got = len(zlib.compress(blob, 6)) / len(blob)
        assert ratio - 0.05 < got < ratio + 0.12, (ratio, got)


def test_median_records_picks_the_median_run():
    def rec(ops_per_sec):
        return {"engine": "e", "workload": "w", "ops_per_sec": ops_per_sec, "extra": {}}

    out = report.median_records([[rec(3.0)], [rec(1.0)], [rec(2.0)]])
    assert len(out) == 1 and out[0]["ops_per_sec"] == 2.0
    assert out[0]["extra"]["repeats_ops_per_sec"] == [3.0, 1.0, 2.0]


def test_validate_names_the_bad_field():
    problems = report.validate({"header": {}, "results": [{"engine": "e", "workload": "w", "ops": "3"}]})
    assert any("results[0].ops" in p for p in problems)
    assert any("latency_us" in p for p in problems)


def test_parse_size():
    assert parse_size("4096") == 4096
    assert parse_size("64K") == 64 << 10
    assert parse_size("4MiB") == 4 << 20
    assert parse_size("1g") == 1 << 30


class LossyAdapter(Adapter):
    """An in-memory engine that silently drops every 10th put."""

    name = "lossy"
    version = "test"

    def open(self):
        if not hasattr(self, "d"):
            self.d, self.n = {}, 0

    def close(self):
        pass

    def destroy(self):
        self.d.clear()

    def putter(self, level):
        def put(k, v):
            self.n += 1
            if self.n % 10:
                self.d[k] = v

        return put

    def getter(self):
        return self.d.get

    def durability(self, level):
        return "none"


def test_a_read_that_misses_written_keys_is_reported(tmp_path):
    notes: list[str] = []
    runner = Runner(LossyAdapter(str(tmp_path / "db"), None, {}), Config(num=500, progress=False), notes)
    fill = runner.run("fillrandom")
    read = runner.run("readrandom")
    assert fill["ops"] == 500 and read["ops"] == 500
    assert read["extra"]["expected_found"] == 500
    assert read["extra"]["found"] < 500
    assert any("lossy readrandom: found" in n and "expected 500" in n for n in notes), notes


def test_targets_verdicts_from_ratios_within_one_run():
    """benchmarks/targets.py: a verdict follows the ratio; a missing peer is
    'not measured', never 'met'."""
    from benchmarks.targets import evaluate

    def rec(engine, workload, rate, rss=None, **extra):
        return {"engine": engine, "workload": workload, "ops": 1, "ops_per_sec": rate,
                "rss_peak_mb": rss, "extra": extra}

    doc = {"results": [
        rec("disk", "limits.append_fdatasync", 1000.0),
        rec("lsm", "fillsync", 960.0), rec("rocksdict", "fillsync", 900.0),
        rec("plyvel", "fillsync", 950.0), rec("sqlite3", "fillsync", 500.0),
        rec("lsm", "fillrandom", 99.0, rss=120.0), rec("rocksdict", "fillrandom", 100.0, rss=100.0),
        rec("lsm", "readseq", 1_000_001.0),
    ]}
    checks = {c.target.split(".")[0]: c for c in evaluate(doc)}
    assert checks["1"].met is True
    assert checks["3"].met is False  # 0.99x rocksdict
    assert checks["6"].met is True
    assert checks["9"].met is True  # exactly 1.2x
    assert checks["2"].met is None and checks["4"].met is None  # peers or workloads missing
    doc["results"][1]["ops_per_sec"] = 940.0  # 0.94x the raw rate
    assert {c.target.split(".")[0]: c for c in evaluate(doc)}["1"].met is False
