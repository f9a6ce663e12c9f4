"""Metrics: the stats() fields added for operators (WAL sync latency
percentiles, unsynced bytes and age, per-level compaction I/O, space
amplification, stalls by cause) and their Prometheus exposition
(lsm.metrics; the scrape test skips when prometheus-client is absent)."""

from __future__ import annotations

import importlib.util
import os
import pathlib
import re
import subprocess
import sys
import threading
import time

import pytest

import lsm
import lsm.metrics
from lsm.base.crashfs import CrashFS
from lsm.wal.format import encode_record
from lsm.wal.writer import SYNC_LATENCY_SAMPLES, WalWriter
from tests.conftest import TINY


def test_wal_sync_latency_percentiles_measure_the_syncs():
    fs = CrashFS(sync_latency=0.002)  # every file sync sleeps at least 2 ms
    db = lsm.open("/db", fs=fs, background="inline")
    assert db.stats()["wal_sync_latency"]["samples"] == db.stats()["wal_syncs"]
    for i in range(20):
        db.put(b"k%d" % i, b"v")  # FULL: one sync each
    st = db.stats()
    lat = st["wal_sync_latency"]
    assert lat["samples"] == st["wal_syncs"] >= 20
    assert 0.002 <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert lat["max"] <= st["wal_sync_seconds"]
    db.close()


def test_sync_latency_ring_keeps_the_last_samples():
    fs = CrashFS()
    fs.makedirs("/w")
    wal = WalWriter(fs, "/w", segment_size=1 << 30, sync_interval=0.1)
    mu = threading.Lock()
    with mu:
        wal.start_segment_locked(1)
    n = SYNC_LATENCY_SAMPLES + 100
    for seq in range(1, n + 1):
        with mu:
            wal.append_locked(encode_record(seq, 1, 0, b"x", wal.synced_offset), seq)
        wal.sync_to(seq)
    lat = wal.sync_latency()
    assert wal.syncs == n and lat["samples"] == SYNC_LATENCY_SAMPLES
    assert lat["max"] == max(wal._sync_lat)
    wal.close()


def test_unsynced_bytes_and_age():
    fs = CrashFS()
    db = lsm.open("/db", fs=fs, background="inline")
    st = db.stats()
    assert st["wal_unsynced_bytes"] == 0 and st["wal_unsynced_age_seconds"] == 0.0
    before = st["wal_bytes_written"]
    for i in range(10):
        db.put(b"k%d" % i, b"v" * 10, sync=lsm.Sync.OFF)
    t_last = time.monotonic()
    st = db.stats()
    assert st["wal_unsynced_bytes"] == st["wal_bytes_written"] - before > 0
    age = st["wal_unsynced_age_seconds"]
    assert age > 0
    time.sleep(0.01)
    age2 = db.stats()["wal_unsynced_age_seconds"]
    assert age2 > age and age2 >= time.monotonic() - t_last >= 0.01  # counted from the first unsynced commit
    db.sync_wal()
    st = db.stats()
    assert st["wal_unsynced_bytes"] == 0 and st["wal_unsynced_age_seconds"] == 0.0
    db.put(b"full", b"1")  # FULL: synced when it returns
    assert db.stats()["wal_unsynced_bytes"] == 0
    db.close()


def test_per_level_io_and_space_amplification():
    fs = CrashFS()
    db = lsm.open("/db", fs=fs, background="inline", **TINY)
    for i in range(600):
        db.put(b"key%04d" % (i % 200), b"v%05d" % i + b"x" * 20)
    db.flush()
    st = db.stats()
    levels = st["levels"]
    assert levels[0]["write_bytes"] == st["flush_bytes_written"]
    assert sum(lv["write_bytes"] for lv in levels) == st["sst_bytes_written"]
    assert levels[0]["read_bytes"] > 0, "level 0 files were compacted away, so read"
    assert sum(lv["read_bytes"] for lv in levels) > 0
    db.compact_range()
    st = db.stats()
    nonempty = [lv for lv in st["levels"] if lv["files"]]
    assert len(nonempty) == 1 and st["space_amplification"] == 1.0
    db.close()


def test_stalls_by_cause_are_in_stats():
    db = lsm.open("/db", fs=CrashFS(), background="inline")
    stalls = db.stats()["stalls"]
    assert set(stalls) == {"memtables", "l0_stop", "l0_slowdown"}
    assert all(v == {"count": 0, "seconds": 0.0} for v in stalls.values())
    db.close()


def test_families_mirror_stats():
    db = lsm.open("/db", fs=CrashFS(), background="inline", **TINY)
    for i in range(300):
        db.put(b"k%04d" % i, b"v" * 20)
    st = db.stats()
    fams = {name: (kind, samples) for name, kind, _doc, samples in lsm.metrics.families(st, {"db": "/db"})}
    kind, samples = fams["lsm_keys_written"]
    assert kind == "counter" and samples == [("lsm_keys_written_total", {"db": "/db"}, 300.0)]
    kind, samples = fams["lsm_level_files"]
    assert kind == "gauge" and [s[2] for s in samples] == [float(lv["files"]) for lv in st["levels"]]
    kind, samples = fams["lsm_health"]
    assert {s[1]["state"]: s[2] for s in samples} == {"ok": 1.0, "fenced": 0.0, "background_error": 0.0,
                                                      "closed": 0.0}
    kind, samples = fams["lsm_wal_group_commits"]
    buckets = [s for s in samples if s[0].endswith("_bucket")]
    assert kind == "histogram" and buckets[-1][1]["le"] == "+Inf"
    assert [b[2] for b in buckets] == sorted(b[2] for b in buckets)  # cumulative
    assert buckets[-1][2] == st["wal_groups"]
    db.close()


def test_missing_prometheus_client_says_which_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # import fails as if not installed
    db = lsm.open("/db", fs=CrashFS(), background="inline")
    with pytest.raises(ImportError, match=r"lsm-engine\[prometheus\]"):
        lsm.metrics.prometheus(db)
    db.close()


def test_prometheus_scrape():
    prometheus_client = pytest.importorskip("prometheus_client")
    from prometheus_client.parser import text_string_to_metric_families

    fs = CrashFS()
    db = lsm.open("/db", fs=fs, background="inline", **TINY)
    for i in range(300):
        db.put(b"k%04d" % i, b"v" * 20)
    registry = prometheus_client.CollectorRegistry()
    collector = lsm.metrics.prometheus(db, registry=registry, labels={"instance": "test"})
    st = db.stats()
    text = prometheus_client.generate_latest(registry).decode()
    got = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            got[(s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k not in ("db", "instance"))))] = \
                (s.value, s.labels)
    value, labels = got[("lsm_keys_written_total", ())]
    assert value == 300 and labels["db"] == "/db" and labels["instance"] == "test"
    assert got[("lsm_last_seq", ())][0] == st["last_seq"]
    assert got[("lsm_sst_bytes", ())][0] == st["sst_bytes"]
    for lv in st["levels"]:
        assert got[("lsm_level_files", (("level", str(lv["level"])),))][0] == lv["files"]
        assert got[("lsm_level_write_bytes_total", (("level", str(lv["level"])),))][0] == lv["write_bytes"]
    assert got[("lsm_health", (("state", "ok"),))][0] == 1
    assert got[("lsm_wal_sync_seconds_count", ())][0] == st["wal_syncs"]
    assert got[("lsm_wal_sync_seconds", (("quantile", "0.5"),))][0] == pytest.approx(st["wal_sync_latency"]["p50"])
    assert got[("lsm_stalls_total", (("cause", "memtables"),))][0] == st["stalls"]["memtables"]["count"]
    assert got[("lsm_wal_group_commits_count", ())][0] == st["wal_groups"]
    # a scrape after close reports the state instead of failing
    db.close()
    text = prometheus_client.generate_latest(registry).decode()
    assert 'lsm_health{db="/db",instance="test",state="closed"} 1.0' in text
    registry.unregister(collector)
    assert "lsm_" not in prometheus_client.generate_latest(registry).decode()


def test_metrics_doc_examples_run(tmp_path):
    """docs/operations.md, "LOG and metrics": the ```python blocks run as
    they stand in an empty directory (the Prometheus one only when
    prometheus-client is installed)."""
    root = pathlib.Path(__file__).resolve().parent.parent
    text = (root / "docs" / "operations.md").read_text()
    start = text.index("\n## LOG and metrics\n")
    end = text.find("\n## ", start + 1)
    blocks = re.findall(r"```python\n(.*?)```", text[start:end if end >= 0 else None], re.DOTALL)
    assert len(blocks) == 2
    if importlib.util.find_spec("prometheus_client") is None:
        blocks = [b for b in blocks if "prometheus_client" not in b]
    env = dict(os.environ, PYTHONPATH=str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for code in blocks:
        p = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=300, check=False)
        assert p.returncode == 0, f"{code}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}"
