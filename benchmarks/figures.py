"""Figures derived for a result record (benchmarks/workloads.py): lsm's
counter deltas and write amplification, and the CPU the timed part used."""

from __future__ import annotations

LSM_COUNTERS = (
    "user_bytes_written",
    "wal_bytes_written",
    "sst_bytes_written",
    "flush_bytes_written",
    "compaction_bytes_written",
    "stall_seconds",
    "flush_count",
    "compaction_count",
)


def lsm_figures(before: dict, after: dict) -> dict:
    """Per-workload deltas of lsm's counters and the derived write amp."""
    out: dict = {}
    for key in LSM_COUNTERS:
        a, b = after.get(key), before.get(key, 0)
        if isinstance(a, (int, float)) and isinstance(b, (int, float)) and a >= b:
            out[key] = a - b
        else:
            out[key] = None
    user = out.get("user_bytes_written")
    wal, sst = out.get("wal_bytes_written"), out.get("sst_bytes_written")
    if user and wal is not None and sst is not None:
        out["write_amp"] = (wal + sst) / user
    else:
        out["write_amp"] = None
    # Target 8 of issue 7: SSTable bytes (flush + compaction) per user byte,
    # WAL excluded; background work still queued at the end is not in it
    # (see ``sst_write_amp_settled`` with --settle).
    out["sst_write_amp"] = sst / user if user and sst is not None else None
    out["stall_max_seconds"] = after.get("stall_max_seconds")
    levels = after.get("levels")
    if isinstance(levels, list):
        out["levels"] = [
            {"files": lv.get("files"), "bytes": lv.get("bytes")} if isinstance(lv, dict) else lv
            for lv in levels
        ]
    out["lsm_stats"] = jsonable(after)
    return out


def jsonable(value):
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def cpu_figures(cpu: tuple[float, float], ops: int, seconds: float) -> dict:
    """The timed part's CPU (``Outcome.cpu``: this process's every thread,
    and its live children, in seconds) per op and as a share of the wall
    time. With the rate beside it, it tells an engine that got slower
    (more CPU per op) from a process that waited for a core, the disk or a
    lock (the same CPU per op, a lower share): lsm's readseq at 636k keys/s
    in the fourth full run could not be told apart without it."""
    own, children = cpu
    return {
        "cpu_seconds": own,
        "cpu_children_seconds": children,
        "cpu_per_op_us": (own + children) * 1e6 / ops if ops else None,
        "cpu_share": (own + children) / seconds,
    }
