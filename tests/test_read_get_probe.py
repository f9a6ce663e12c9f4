"""DB._get probes a table's blocked bloom filter itself and calls
``TableReader.find_entry`` only for the tables the filter passes; a table
without a filter goes through ``TableReader.lookup``. Both must find every
present key (level-0 files and deeper levels, a newer version shadowing an
older one in another file) and no absent one, and count the probes as
``lookup`` does."""

from __future__ import annotations

import random

import pytest

import lsm


@pytest.mark.parametrize("bpk", [0, 13])
def test_get_through_the_read_plan(tmp_path, bpk):
    seed = 11
    print("seed", seed)
    rng = random.Random(seed)
    db = lsm.open(str(tmp_path / "db"), background="inline", sync=lsm.Sync.OFF, bloom_bits_per_key=bpk)
    try:
        keys = [b"k%06d" % i for i in range(4000)]
        want = {}
        for k in keys:
            db.put(k, b"old-" + k)
            want[k] = b"old-" + k
        db.flush()
        db.compact_range()  # the old versions go to a deeper level
        for k in rng.sample(keys, 500):
            db.put(k, b"new-" + k)
            want[k] = b"new-" + k
        gone = rng.sample(keys, 100)
        for k in gone:
            db.delete(k)
            del want[k]
        db.flush()  # the new versions and deletions: a level-0 file
        v = db._sv.version
        assert v.num_files(0) >= 1 and sum(v.num_files(i) for i in range(1, v.num_levels)) >= 1
        readers = list(db._sv.readers.values())
        checked = sum(r.bloom_checked for r in readers)
        for k in keys:
            assert db.get(k) == want.get(k), k
        absent = [b"k%06d." % rng.randrange(4000) for _ in range(300)]
        for k in absent:
            assert db.get(k) is None
        probes = sum(r.bloom_checked for r in readers) - checked
        if bpk:
            assert probes > len(keys) and sum(r.bloom_useful for r in readers) > 0
        else:
            assert probes == 0 and all(r._bloom is None for r in readers)
    finally:
        db.close()
