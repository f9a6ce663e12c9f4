"""db_bench for Python: the benchmark harness of ``lsm`` and its peers.

Run ``python -m benchmarks WORKLOADS [options]`` (see ``docs/benchmarks.md``
for the method and ``python -m benchmarks --help`` for the options).

Layers, lowest first; a module imports only from layers below it:

    data, measure, sysinfo      keys and values; timing, percentiles, RSS; the machine
    engines, limits, loops      one adapter per engine; raw disk limits; timed loops
    workloads                   the workloads, run against one adapter
    _worker                     child process: runs one engine's workload sequence
    report, plot                text table, JSON, comparison; PNG figures
    cli                         argument handling; spawns one _worker per engine

The parent (``cli``) never imports an engine: each engine runs in its own
child process so that memory figures and crashes stay separate.
"""

WORKLOADS = (
    "fillseq",
    "fillrandom",
    "overwrite",
    "fillbatch",
    "fillsync",
    "fillsync_threads",
    "readrandom",
    "readmissing",
    "readseq",
    "readreverse",
    "seekrandom",
    "readwhilewriting",
    "deleterandom",
    "compact",
    "limits",
    "ingest",
)
"""Workload names, leveldb's db_bench names where db_bench has one."""

ENGINES = ("lsm", "rocksdict", "plyvel", "sqlite3", "lmdb")
"""Engines the harness has an adapter for."""

SYNC_LEVELS = ("off", "normal", "barrier", "full", "extra")
"""Durability levels of ``--sync``: the names of ``lsm.Sync``."""
