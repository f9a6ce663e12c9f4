"""A large ingest with a small memtable: many flushes and compactions in the
worker process, then every key read back, level targets respected,
deleted-then-compacted keys gone and old WAL segments deleted."""

import os
import random

import lsm
from lsm.base import filenames

N = int(os.environ.get("LSM_INGEST_KEYS", "500000"))


def test_ingest_500k(tmp_path):
    seed = random.randrange(1 << 30)
    print("seed", seed)
    rnd = random.Random(seed)
    p = tmp_path / "db"
    opts = dict(memtable_size=1 << 20, target_file_size=1 << 20, max_bytes_for_level_base=4 << 20,
                sync=lsm.Sync.OFF)
    order = list(range(N))
    rnd.shuffle(order)
    deleted = set(rnd.sample(range(N), N // 50))
    with lsm.open(p, **opts) as db:
        for i in order:
            db.put(b"key%012d" % i, b"value-%d-" % i + b"x" * 60)
        for i in deleted:
            db.delete(b"key%012d" % i)
        db.compact_range()
        st = db.stats()
        # ~107 bytes charged per entry: one flush per ~9,800 puts.
        expected_flushes = N * 100 // (1 << 20)
        assert st["flush_count"] >= expected_flushes, (st["flush_count"], expected_flushes)
        assert st["compaction_count"] >= expected_flushes // 10, st["compaction_count"]
        assert st["wal_files_deleted"] >= expected_flushes
        # Level targets: every level except the last is within its target
        # (the last level holds the rest), and level 0 is empty after compact.
        levels = st["levels"]
        nonempty = [lv for lv in levels if lv["files"]]
        assert levels[0]["files"] == 0
        for lv in nonempty[:-1]:
            assert lv["bytes"] <= lv["target_bytes"], levels
        # Deleted keys are gone from the files too: a full compaction to the
        # bottom drops their tombstones and shadowed values.
        total_entries = sum(f.num_entries for level in db._sv.version.levels for f in level)
        assert total_entries == N - len(deleted)
    wals = [n for n in os.listdir(p) if filenames.parse_wal(n) is not None]
    assert len(wals) <= 2, wals
    with lsm.open(p, **opts) as db:
        get = db.get
        for i in range(N):
            v = get(b"key%012d" % i)
            if i in deleted:
                assert v is None, i
            else:
                assert v == b"value-%d-" % i + b"x" * 60, i
        assert sum(1 for _ in db.keys()) == N - len(deleted)
