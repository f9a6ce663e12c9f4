"""Group commit (lsm/wal/writer.py ``sync_to`` and its sync gates): many
threads at mixed sync levels, with segment rotations (a tiny memtable), the
background syncer and, in some rounds, a sync that fails. Every thread must
finish (no committer left waiting on a gate nobody will open), every
FULL/EXTRA commit acknowledged must be durable when it returns, and after a
failed sync nothing more is acknowledged.

Seeds: LSM_CRASH_SEED (printed); rounds: LSM_GROUP_ROUNDS (default 6)."""

from __future__ import annotations

import errno
import os
import random
import threading

import pytest

import lsm
from lsm.base.crashfs import CrashFS

SEED = int(os.environ.get("LSM_CRASH_SEED", random.randrange(1 << 30)))
ROUNDS = int(os.environ.get("LSM_GROUP_ROUNDS", "6"))
LEVELS = ("off", "normal", "barrier", "full", "extra")


def _round(seed: int, fail_sync: bool) -> tuple[int, int]:
    rng = random.Random(seed)
    fs = CrashFS(sync_latency=0.002 if fail_sync else 0.0002)
    db = lsm.open("/db", fs=fs, background="thread", memtable_size=8 << 10, sync="off")
    if fail_sync:
        fs.fail("sync", nth=rng.randint(3, 40), err=errno.EIO, path=r"\.wal$")
    acked: list[tuple[int, int]] = []  # (seq, level) of FULL/EXTRA commits, when they returned
    violations: list[str] = []
    refused = [0]
    mu = threading.Lock()

    def writer(t: int) -> None:
        r = random.Random(seed * 31 + t)
        for i in range(150):
            level = r.choice(LEVELS)
            try:
                seq = db.put(b"%02d%06d" % (t, i), b"v" * r.randrange(120), sync=level)
            except lsm.NeedsRecoveryError:
                with mu:
                    refused[0] += 1
                return
            if level in ("full", "extra"):
                durable = db.durable_seq
                with mu:
                    acked.append((seq, durable))
                    if durable < seq:
                        violations.append(f"FULL commit {seq} returned with durable_seq {durable}")

    threads = [threading.Thread(target=writer, args=(t,), daemon=True) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
        assert not t.is_alive(), f"a committer hung (seed {seed}, fail_sync={fail_sync})"
    assert not violations, f"{violations[:3]} (seed {seed})"
    if fail_sync and refused[0]:
        with pytest.raises(lsm.NeedsRecoveryError):
            db.put(b"after", b"fence")
        db._simulate_crash()
    else:
        db.close()
    return len(acked), refused[0]


@pytest.mark.parametrize("fail_sync", [False, True], ids=["healthy", "failing-sync"])
def test_group_commit_mixed_levels_never_hangs(fail_sync):
    print(f"group commit: LSM_CRASH_SEED={SEED}")
    total = 0
    for rnd in range(ROUNDS):
        acked, _refused = _round(SEED + rnd * 7919 + fail_sync, fail_sync)
        total += acked
    assert total > 0


def test_sync_groups_form_under_concurrency():
    """With a disk that takes time to sync, 8 FULL committers share syncs:
    fewer syncs than commits (the point of group commit)."""
    fs = CrashFS(sync_latency=0.002)
    db = lsm.open("/db", fs=fs, background="thread", sync="full")

    def writer(t: int) -> None:
        for i in range(40):
            db.put(b"%02d%06d" % (t, i), b"v")

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
        assert not t.is_alive()
    st = db.stats()
    assert st["wal_synced_commits"] == 320
    assert st["wal_syncs"] < 320 * 0.6, st["wal_syncs"]
    db.close()
