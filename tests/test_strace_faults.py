"""System-call fault injection outside lsm's filesystem seam (issue 5,
family 9): tools/strace_faults.py fails the Nth fdatasync, fsync, rename,
unlink and ftruncate of a real process with EIO (once and persistently) and
checks that the process ended cleanly or with a typed lsm error and that
every acknowledged commit survives. Skipped, with the reason, where strace
is missing or cannot trace. ``LSM_STRACE_MAX_N`` (default 10; the tool's
own default is 40) scales it."""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tools"))
import strace_faults  # noqa: E402

from tests.reliability_log import record  # noqa: E402

MAX_N = int(os.environ.get("LSM_STRACE_MAX_N", "10"))


@pytest.mark.parametrize("mode,max_n", [("thread", MAX_N), ("process", max(2, MAX_N // 4))])
def test_strace_fault_sweep(mode, max_n):
    why = strace_faults.available()
    if why:
        pytest.skip(f"strace fault sweep: {why}")
    totals = strace_faults.sweep(mode, max_n, strace_faults.SYSCALLS, quiet=True)
    print(f"strace sweep ({mode}, N <= {max_n}): {totals['runs']} runs, {totals['injected']} faults injected, "
          f"{totals['violations']} violations")
    record("strace_faults", mode=mode, runs=totals["runs"], faults_injected=totals["injected"],
           violations=totals["violations"])
    assert totals["injected"] > 0
    assert totals["violations"] == 0, totals["problems"]
