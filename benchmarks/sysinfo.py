"""What the benchmark ran on: the header of every report.

Reads /proc (Linux); on other systems the fields it cannot find say
``unknown`` rather than failing.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import platform
import sys


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def meminfo_kb(field: str) -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def disk_of(path: str) -> dict:
    """Mount point, device, filesystem type and mount options of ``path``
    (the longest /proc/mounts entry that contains it), and whether the
    device is rotational where /sys says so."""
    real = os.path.realpath(path)
    best = None
    try:
        with open("/proc/mounts") as f:
            for line in f:
                parts = line.split()
                if len(parts) < 4:
                    continue
                dev, mnt, fstype, opts = parts[:4]
                mnt = mnt.replace("\\040", " ")
                if (real == mnt or real.startswith(mnt.rstrip("/") + "/")) and (
                    best is None or len(mnt) > len(best["mount"])
                ):
                    best = {"mount": mnt, "device": dev, "fstype": fstype, "options": opts}
    except OSError:
        pass
    info = {"path": real, **(best or {"mount": "unknown", "device": "unknown", "fstype": "unknown"})}
    dev = os.path.basename(info["device"])
    for candidate in (dev, dev.rstrip("0123456789"), dev.rstrip("0123456789").rstrip("p")):
        rot = f"/sys/block/{candidate}/queue/rotational"
        if candidate and os.path.exists(rot):
            with open(rot) as f:
                info["rotational"] = f.read().strip() == "1"
            break
    try:
        st = os.statvfs(real)
        info["size_gib"] = round(st.f_blocks * st.f_frsize / (1 << 30), 1)
        info["free_gib"] = round(st.f_bavail * st.f_frsize / (1 << 30), 1)
    except OSError:
        pass
    return info


def lsm_info(overrides: dict) -> dict:
    """lsm's version and its effective options (defaults + overrides), as
    far as the package can tell today."""
    info: dict = {"version": "unavailable", "options": dict(overrides)}
    try:
        import lsm
    except Exception as exc:  # noqa: BLE001 - a broken lsm: the header says why
        info["error"] = repr(exc)
        return info
    try:
        from importlib.metadata import version

        info["version"] = getattr(lsm, "__version__", None) or version("lsm-engine")
    except Exception:  # noqa: BLE001 - not installed as a distribution
        info["version"] = getattr(lsm, "__version__", "unknown")
    # Where lsm.options is missing or different, report the overrides only.
    with contextlib.suppress(Exception):
        import dataclasses

        from lsm.options import Options

        opts = {f.name: getattr(Options(), f.name) for f in dataclasses.fields(Options) if f.name != "fs"}
        opts.update(overrides)
        info["options"] = {k: (v.name if hasattr(v, "name") else v) for k, v in opts.items()}
    info["has_open"] = callable(getattr(lsm, "open", None))
    return info


def collect(db_dir: str, wal_dir: str | None, lsm_overrides: dict, want_lsm: bool) -> dict:
    mem = meminfo_kb("MemTotal")
    header = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "python": {
            "version": platform.python_version(),
            "implementation": platform.python_implementation(),
            "executable": sys.executable,
            "optimize": sys.flags.optimize,
            "assertions": sys.flags.optimize == 0,
        },
        "platform": platform.platform(),
        "cpu": {"model": cpu_model(), "count": os.cpu_count()},
        "memory_gib": round(mem / (1 << 20), 1) if mem else None,
        "disk": {"db": disk_of(db_dir)},
    }
    if wal_dir:
        header["disk"]["wal"] = disk_of(wal_dir)
    if want_lsm:
        header["lsm"] = lsm_info(lsm_overrides)
    return header
