"""Seeds for the randomized tests, printed so that a failure can be
replayed (STYLE.md, rule 10).

Environment variables (each replays the seed printed by a failed run):

    LSM_TEST_SEED        the default: tests/test_write_path.py,
                         test_memtable_pending.py, test_batch_columns.py,
                         test_flush_handoff.py
    LSM_VERIFY_SEED      tests/test_verify.py
    LSM_CHECKPOINT_SEED  tests/test_checkpoint.py
    LSM_RESTORE_SEED     tests/test_restore.py
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
