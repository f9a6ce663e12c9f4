"""Background workers that outlive the killed writer (Linux): the driver is
a child subreaper, so orphaned workers become its children; one still
running ``--orphan-timeout`` seconds after the kill fails the cycle (a
stale worker could clobber a table of the reopened database; see
lsm/compaction/worker.py)."""

from __future__ import annotations

import os
import signal
import sys
import time


def set_subreaper() -> bool:
    """Adopt orphaned descendants (Linux PR_SET_CHILD_SUBREAPER), so that a
    worker outliving the killed writer becomes our child and is seen."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _adopted_children(exclude: set[int]) -> list[int]:
    """Pids whose parent is this process (scan of /proc), minus ``exclude``."""
    me = os.getpid()
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) in exclude:
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        if int(fields[1]) == me:
            out.append(int(name))
    return out


def _proc_state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return "gone"
    return stat[stat.rfind(b")") + 2 :].split()[0].decode()


def reap_orphans(timeout: float, exclude: set[int]) -> tuple[int, list[str]]:
    """Wait for adopted orphans (our children not in ``exclude``) to die;
    reap them. Returns (number reaped, descriptions of those still alive
    after ``timeout`` seconds, which are then killed)."""
    deadline = time.monotonic() + timeout
    reaped = 0
    while True:
        alive = []
        for pid in _adopted_children(exclude):
            if _proc_state(pid) in ("Z", "X", "gone"):
                try:
                    os.waitpid(pid, 0)
                    reaped += 1
                except ChildProcessError:
                    pass
            else:
                alive.append(pid)
        if not alive:
            return reaped, []
        if time.monotonic() >= deadline:
            stale = []
            for pid in alive:
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
                except OSError:
                    cmd = "?"
                stale.append(f"pid {pid} ({cmd.strip()}) still running {timeout} s after its parent was killed")
                try:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                except OSError:
                    pass
            return reaped, stale
        time.sleep(0.01)
