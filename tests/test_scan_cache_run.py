"""BlockCache.get_run, the read-ahead run's cache look-up of a long scan
(lsm/sstable/scan.py): the same values, counters and LRU order as a get
per key, and None when no key of the run is cached."""

from __future__ import annotations

from lsm.sstable import BlockCache


def test_get_run_of_uncached_keys_is_none_and_counts_misses():
    c = BlockCache(300)
    c.put("a", 1, 100)
    assert c.get_run(["x", "y", "z"]) is None
    assert c.get_run([]) is None
    assert (c.hits, c.misses) == (0, 3)
    c.check()


def test_get_run_with_a_cached_key_is_a_get_per_key():
    c = BlockCache(300)
    c.put("a", 1, 100)
    c.put("b", 2, 100)
    c.put("c", 3, 100)
    assert c.get_run(["x", "a", "y"]) == [None, 1, None]  # a becomes most recent
    assert (c.hits, c.misses) == (1, 2)
    c.put("d", 4, 100)  # evicts b, now the oldest
    assert c.get("b") is None
    assert c.get_run(["a", "c", "d"]) == [1, 3, 4]
    c.check()
