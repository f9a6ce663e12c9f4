"""The randomized tests' seed: a fresh one per call, printed so that a
failure can be replayed with ``LSM_TEST_SEED=<seed>``."""

from __future__ import annotations

import os
import random


def seed() -> int:
    s = int(os.environ.get("LSM_TEST_SEED", random.randrange(1 << 30)))
    print("seed", s)
    return s
