"""Child process: runs one engine's workload sequence.

Protocol: the parent writes a JSON plan to stdin::

    {"engine": "lsm" | ... | "disk", "workloads": [...], "config": {Config fields},
     "db_dir": DIR, "wal_dir": DIR | null, "options": {engine options},
     "result_path": FILE, "verbose": bool}

and the child rewrites ``result_path`` after every workload with::

    {"engine", "version", "results": [record, ...], "notes": [...],
     "skipped": null | "why", "error": null | "traceback", "assertions": bool}

so a crash still leaves the finished workloads behind. stdout is not part
of the protocol (engines may print to it). Exit status: 0, or 1 after an
error in a workload (the remaining workloads of this engine are not run).
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback

from benchmarks import limits
from benchmarks.engines import ADAPTERS, EngineUnavailable
from benchmarks.workloads import Config, Runner


def _write(path: str, out: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(out, f)
    os.replace(tmp, path)


def _status(verbose: bool, text: str) -> None:
    if verbose or sys.stderr.isatty():
        print(text, file=sys.stderr, flush=True)


def run(plan: dict) -> int:
    engine = plan["engine"]
    cfg = Config(**plan["config"])
    verbose = bool(plan.get("verbose"))
    out = {
        "engine": engine,
        "version": None,
        "results": [],
        "notes": [],
        "skipped": None,
        "error": None,
        "assertions": __debug__,
    }
    path = plan["result_path"]
    _write(path, out)

    if engine == "disk":
        for label, directory in (("disk", plan["db_dir"]), ("disk(wal)", plan.get("wal_dir"))):
            if directory:
                _status(verbose, f"[{label}] limits of {directory} ...")
                out["results"].extend(limits.records(directory, cfg, label))
                _write(path, out)
        return 0

    try:
        adapter = ADAPTERS[engine](plan["db_dir"], plan.get("wal_dir"), plan.get("options") or {})
    except EngineUnavailable as exc:
        out["skipped"] = str(exc)
        _write(path, out)
        return 0
    except Exception:  # noqa: BLE001 - the engine failed to open: an error, not a skip
        out["error"] = traceback.format_exc()
        _write(path, out)
        return 1
    out["version"] = adapter.version
    if plan.get("wal_dir") and not adapter.supports_wal_dir:
        out["notes"].append(f"{engine}: no separate WAL directory; --wal-dir ignored")
    runner = Runner(adapter, cfg, out["notes"])
    code = 0
    try:
        for name in plan["workloads"]:
            _status(verbose, f"[{engine}] {name} ...")
            t0 = time.perf_counter()
            record = runner.run(name)
            if record is not None:
                out["results"].append(record)
                _status(
                    verbose,
                    f"[{engine}] {name}: {record['ops_per_sec']:,.0f} ops/s "
                    f"({time.perf_counter() - t0:.1f} s with setup)",
                )
            _write(path, out)
    except Exception:  # noqa: BLE001 - reported to the parent, which fails the run
        out["error"] = traceback.format_exc()
        code = 1
    finally:
        try:
            adapter.close()
        except Exception:  # noqa: BLE001 - a failing close is an error too
            if out["error"] is None:
                out["error"] = traceback.format_exc()
                code = 1
        _write(path, out)
    return code


def main() -> int:
    return run(json.load(sys.stdin))


if __name__ == "__main__":
    sys.exit(main())
