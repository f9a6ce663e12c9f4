"""Seeds for the randomized tests, printed so that a failure can be
replayed (STYLE.md, rule 10).

Environment variables (each replays the seed printed by a failed run):

    LSM_TEST_SEED        the default: tests/test_write_path.py,
                         test_memtable_pending.py, test_batch_columns.py,
                         test_flush_handoff.py
    LSM_VERIFY_SEED      tests/test_verify.py
    LSM_CHECKPOINT_SEED  tests/test_checkpoint.py
    LSM_RESTORE_SEED     tests/test_restore.py
    LSM_SCAN_SEED        tests/test_scan.py, test_scan_readahead.py (seed_list)
    LSM_READ_SEED        tests/test_read_path.py (seed_list)
"""

from __future__ import annotations

import os
import random


def seed(env: str = "LSM_TEST_SEED") -> int:
    """A fresh seed below 2**30 per call, or the integer in the environment
    variable ``env`` when it is set (``LSM_TEST_SEED=<seed>`` replays a
    failure of a test that uses the default). Printed as ``seed N (replay:
    ENV=N)``: pytest shows it with a failing test's captured output."""
    s = int(os.environ.get(env, random.randrange(1 << 30)))
    print(f"seed {s} (replay: {env}={s})")
    return s


def seed_list(env: str, base: int, n: int) -> list[int]:
    """The seeds of a parametrized randomized test: ``base .. base + n - 1``
    (the same cases every run), or only the integer in the environment
    variable ``env`` when it is set (replay). The test prints the seed it
    was given."""
    s = os.environ.get(env)
    return [int(s)] if s else [base + i for i in range(n)]
