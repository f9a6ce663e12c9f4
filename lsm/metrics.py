"""Metrics for monitoring: ``db.stats()`` as Prometheus metrics.

::

    import lsm, lsm.metrics
    from prometheus_client import start_http_server

    db = lsm.open("data/db")
    lsm.metrics.prometheus(db)          # registers a collector; every scrape reads db.stats()
    start_http_server(9100)             # http://localhost:9100/metrics

:func:`prometheus` needs the optional ``prometheus-client`` package
(``pip install 'lsm-engine[prometheus]'``); without it, it raises an
ImportError that says so. :func:`families` is the mapping itself (stats
to metric families as plain tuples) and needs nothing.

Names (prefix ``lsm_``; every metric carries the label ``db``, the
database's path, plus any ``labels`` given): counters end in ``_total``
and count since the database was opened; sizes are bytes, times seconds.
Per level: ``lsm_level_files``, ``lsm_level_bytes``,
``lsm_level_read_bytes_total``, ``lsm_level_write_bytes_total`` (label
``level``). ``lsm_wal_sync_seconds`` is a summary: quantiles 0.5, 0.9 and
0.99 over the last 1024 WAL syncs, with the count and sum of all of them.
``lsm_wal_group_commits`` is a histogram of commits per WAL sync.
``lsm_stalls_total`` and ``lsm_stall_seconds_total`` carry ``cause``
(``memtables``, ``l0_stop``, ``l0_slowdown``). ``lsm_health`` is 1 for the
current ``state`` label (``ok``, ``fenced``, ``background_error``,
``closed``) and 0 for the others.

Thread-safety: a scrape calls ``db.stats()``, which any thread may call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lsm.db import DB

Family = tuple[str, str, str, list[tuple[str, dict[str, str], float]]]
"""(name, type, help, samples): type is ``counter``, ``gauge``, ``summary``
or ``histogram``; a sample is (full sample name, labels, value)."""

COUNTERS = (
    ("keys_written", "keys_written", "Keys written (puts and deletes)"),
    ("user_bytes_written", "user_bytes_written", "Bytes of keys and values written by the user"),
    ("wal_bytes_written", "wal_bytes_written", "Bytes appended to the WAL"),
    ("sst_bytes_written", "sst_bytes_written", "Bytes of SSTables written by flushes and compactions"),
    ("flush_bytes_written", "flush_bytes_written", "Bytes of SSTables written by flushes"),
    ("compaction_bytes_written", "compaction_bytes_written", "Bytes of SSTables written by compactions"),
    ("compaction_bytes_read", "compaction_bytes_read", "Bytes of SSTables read by compactions"),
    ("flushes", "flush_count", "Memtable flushes"),
    ("flush_seconds", "flush_seconds", "Seconds spent in flushes"),
    ("compactions", "compaction_count", "Compactions (trivial moves included)"),
    ("compaction_seconds", "compaction_seconds", "Seconds spent in compactions"),
    ("wal_dir_syncs", "wal_dir_syncs", "fsyncs of the WAL directory"),
    ("wal_linger_seconds", "wal_linger_seconds", "Seconds group-commit leaders waited for their group"),
    ("wal_segments_created", "wal_segments_created", "WAL segments started"),
    ("wal_files_deleted", "wal_files_deleted", "WAL segments deleted after their flush"),
    ("wal_files_pruned", "wal_files_pruned", "Archived WAL segments deleted by retention"),
    ("block_cache_hits", "block_cache_hits", "Block cache hits"),
    ("block_cache_misses", "block_cache_misses", "Block cache misses"),
    ("block_cache_refused", "block_cache_refused", "Blocks read from disk the full cache did not admit (first miss)"),
    ("bloom_checked", "bloom_checked", "Point lookups that consulted a bloom filter"),
    ("bloom_useful", "bloom_useful", "Point lookups a bloom filter answered (table skipped)"),
    ("info_log_errors", "info_log_errors", "LOG entries that could not be written"),
)
"""(metric name without lsm_ and _total, stats key, help)."""

GAUGES = (
    ("last_seq", "last_seq", "Sequence number of the newest commit"),
    ("durable_seq", "durable_seq", "Highest sequence number known to be on disk"),
    ("sst_files", "sst_files", "Live SSTables"),
    ("sst_bytes", "sst_bytes", "Bytes of live SSTables"),
    ("memtable_bytes", "memtable_bytes", "Bytes charged to the live memtable"),
    ("memtable_entries", "memtable_entries", "Entries in the live memtable"),
    ("immutable_memtables", "immutable_memtables", "Immutable memtables waiting for their flush"),
    ("wal_files_live", "wal_files_live", "WAL segments recovery still needs"),
    ("wal_bytes_live", "wal_bytes_live", "Bytes of the WAL segments recovery still needs"),
    ("wal_files_archived", "wal_files_archived", "Segments in the WAL archive"),
    ("wal_bytes_archived", "wal_bytes_archived", "Bytes in the WAL archive"),
    ("wal_unsynced_bytes", "wal_unsynced_bytes", "WAL bytes written but not yet synced"),
    ("wal_unsynced_age_seconds", "wal_unsynced_age_seconds", "Age of the oldest unsynced commit (about)"),
    ("snapshots", "snapshots", "Live snapshots"),
    ("write_amplification", "write_amplification", "(WAL + SSTable bytes written) / user bytes written"),
    ("space_amplification", "space_amplification", "Bytes of all SSTables / bytes of the last level"),
)

HEALTH_STATES = ("ok", "fenced", "background_error", "closed")


def families(stats: dict[str, Any], labels: dict[str, str]) -> list[Family]:
    """The metric families of one ``db.stats()`` result (see the module
    docstring for names), every sample carrying ``labels``."""
    out: list[Family] = []

    def lab(**extra: str) -> dict[str, str]:
        return dict(labels, **extra)

    for name, key, doc in COUNTERS:
        if key in stats:
            out.append((f"lsm_{name}", "counter", doc, [(f"lsm_{name}_total", lab(), float(stats[key]))]))
    for name, key, doc in GAUGES:
        if key in stats:
            out.append((f"lsm_{name}", "gauge", doc, [(f"lsm_{name}", lab(), float(stats[key]))]))
    health = stats.get("health", "ok")
    out.append(("lsm_health", "gauge", "1 for the database's current health state",
                [("lsm_health", lab(state=s), 1.0 if s == health else 0.0) for s in HEALTH_STATES]))

    levels = stats.get("levels", [])
    for name, key, kind, doc in (
        ("level_files", "files", "gauge", "SSTables in the level"),
        ("level_bytes", "bytes", "gauge", "Bytes of the level's SSTables"),
        ("level_target_bytes", "target_bytes", "gauge", "Size the level is compacted down to (0: level 0)"),
        ("level_read_bytes", "read_bytes", "counter", "Bytes of the level's SSTables read by compactions"),
        ("level_write_bytes", "write_bytes", "counter", "Bytes of SSTables written into the level"),
    ):
        sample = f"lsm_{name}_total" if kind == "counter" else f"lsm_{name}"
        out.append((f"lsm_{name}", kind, doc,
                    [(sample, lab(level=str(lv["level"])), float(lv.get(key, 0))) for lv in levels]))

    stalls = stats.get("stalls") or {}
    out.append(("lsm_stalls", "counter", "Write stalls by cause",
                [("lsm_stalls_total", lab(cause=c), float(v["count"])) for c, v in stalls.items()]))
    out.append(("lsm_stall_seconds", "counter", "Seconds writers were stalled, by cause",
                [("lsm_stall_seconds_total", lab(cause=c), float(v["seconds"])) for c, v in stalls.items()]))

    lat = stats.get("wal_sync_latency") or {}
    sync_samples = [("lsm_wal_sync_seconds", lab(quantile=q), float(lat.get(k, 0.0)))
                    for q, k in (("0.5", "p50"), ("0.9", "p90"), ("0.99", "p99"))]
    sync_samples += [("lsm_wal_sync_seconds_count", lab(), float(stats.get("wal_syncs", 0))),
                     ("lsm_wal_sync_seconds_sum", lab(), float(stats.get("wal_sync_seconds", 0.0)))]
    out.append(("lsm_wal_sync_seconds", "summary",
                "Duration of WAL syncs (quantiles over the last 1024, count and sum over all)", sync_samples))

    hist = stats.get("group_commit_histogram") or {}
    cumulative, buckets = 0.0, []
    for bound, n in hist.items():
        cumulative += n
        buckets.append(("lsm_wal_group_commits_bucket", lab(le="+Inf" if bound == "more" else f"{float(bound)}"),
                        cumulative))
    if buckets and buckets[-1][1]["le"] != "+Inf":
        buckets.append(("lsm_wal_group_commits_bucket", lab(le="+Inf"), cumulative))
    buckets += [("lsm_wal_group_commits_count", lab(), float(stats.get("wal_groups", 0))),
                ("lsm_wal_group_commits_sum", lab(), float(stats.get("wal_synced_commits", 0)))]
    out.append(("lsm_wal_group_commits", "histogram", "Commits made durable per WAL sync (group commit)",
                buckets))
    return out


class _Collector:
    """A prometheus_client collector reading ``db.stats()`` at each scrape."""

    def __init__(self, db: DB, labels: dict[str, str]):
        self.db = db
        self.labels = labels

    def describe(self) -> list[Any]:
        return []  # unchecked collector: names depend on the stats of this build

    def collect(self) -> Any:
        from prometheus_client.core import Metric

        try:
            stats = self.db.stats()
        except Exception:  # noqa: BLE001 - a scrape must not fail because the database did
            stats = {"health": "closed" if getattr(self.db, "_closed", False) else "fenced"}
        for name, kind, doc, samples in families(stats, self.labels):
            m = Metric(name, doc, kind)
            for sample, labels, value in samples:
                m.add_sample(sample, labels, value)
            yield m


def prometheus(db: DB, *, registry: Any = None, labels: dict[str, str] | None = None) -> Any:
    """Expose ``db``'s stats to Prometheus: register a collector with
    ``registry`` (default: prometheus_client's global ``REGISTRY``, which
    ``start_http_server`` and ``generate_latest`` serve) and return it
    (``registry.unregister(collector)`` removes it, e.g. before the
    database is closed). Every sample is labelled ``db=<path>`` plus
    ``labels``. Raises ImportError naming the extra when prometheus-client
    is not installed."""
    try:
        import prometheus_client
    except ImportError as e:
        raise ImportError(
            "lsm.metrics.prometheus needs the prometheus-client package: "
            "pip install 'lsm-engine[prometheus]' (or pip install prometheus-client)"
        ) from e
    collector = _Collector(db, dict({"db": str(getattr(db, "path", "?"))}, **(labels or {})))
    (registry if registry is not None else prometheus_client.REGISTRY).register(collector)
    return collector
