"""BlockCache: LRU order, the byte bound, counters, capacity 0, and shared
use from several threads and by table readers."""

from __future__ import annotations

import random
import threading

import pytest

from lsm.base.coding import MAX_SEQ, pack_trailer
from lsm.base.fs import DEFAULT_FS
from lsm.sstable import BlockCache, TableReader, TableWriter


def test_lru_eviction_order():
    c = BlockCache(300)
    c.put("a", 1, 100)
    c.put("b", 2, 100)
    c.put("c", 3, 100)
    assert c.get("a") == 1  # a becomes most recent: b is now the oldest
    c.put("d", 4, 100)
    assert c.get("b") is None
    assert [c.get(k) for k in "acd"] == [1, 3, 4]
    c.put("e", 5, 150)  # evicts the two oldest: a, then c
    assert c.get("a") is None and c.get("c") is None
    assert c.get("d") == 4 and c.get("e") == 5
    c.check()


def test_byte_bound():
    c = BlockCache(1000)
    rng = random.Random(1)
    for i in range(500):
        c.put(i, i, rng.randint(1, 300))
        assert c.usage <= 1000
        c.check()
    assert 0 < len(c) < 500


def test_hits_and_misses():
    c = BlockCache(100)
    assert c.get("x") is None
    c.put("x", "v", 10)
    assert c.get("x") == "v" and c.get("x") == "v" and c.get("y") is None
    assert (c.hits, c.misses) == (2, 2)


def test_capacity_zero_caches_nothing():
    c = BlockCache(0)
    c.put("x", 1, 0)
    c.put("y", 1, 1)
    assert len(c) == 0 and c.get("y") is None and c.usage == 0


def test_oversized_entry_is_not_cached_and_evicts_nothing():
    c = BlockCache(100)
    c.put("a", 1, 60)
    c.put("big", 2, 101)
    assert c.get("big") is None and c.get("a") == 1


def test_replace_updates_charge():
    c = BlockCache(100)
    c.put("a", 1, 60)
    c.put("a", 2, 30)
    assert c.usage == 30 and c.get("a") == 2
    c.put("b", 3, 70)
    assert c.get("a") == 2 and c.get("b") == 3
    c.erase("a")
    assert c.usage == 70
    c.clear()
    assert c.usage == 0 and len(c) == 0
    c.check()


def test_bad_capacity():
    with pytest.raises(ValueError):
        BlockCache(-1)
    with pytest.raises(TypeError):
        BlockCache(1.5)  # type: ignore[arg-type]


def test_threads():
    c = BlockCache(5000)
    errors: list[BaseException] = []

    def work(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(3000):
                k = rng.randrange(200)
                v = c.get(k)
                if v is None:
                    c.put(k, k * 2, rng.randint(10, 100))
                else:
                    assert v == k * 2
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert c.hits + c.misses == 4 * 3000
    c.check()


def test_readers_share_a_cache(tmp_path):
    paths = []
    for n in (1, 2):
        path = str(tmp_path / f"{n:06d}.sst")
        w = TableWriter(DEFAULT_FS, path, block_size=64)
        for i in range(100):
            w.add(b"k%03d" % i, pack_trailer(i + 1, 1), b"file%d" % n)
        w.finish(sync=False)
        paths.append(path)
    c = BlockCache(1 << 20)
    r1 = TableReader.open(DEFAULT_FS, paths[0], file_number=1, cache=c)
    r2 = TableReader.open(DEFAULT_FS, paths[1], file_number=2, cache=c)
    # Same block offsets in both files: the file number keeps them apart.
    assert r1.get(b"k005", MAX_SEQ) == (1, b"file1")
    assert r2.get(b"k005", MAX_SEQ) == (1, b"file2")
    assert (c.hits, c.misses) == (0, 2)
    assert r1.get(b"k005", MAX_SEQ) == (1, b"file1")
    assert (c.hits, c.misses) == (1, 2)
    # A cache too small for one block: reads still work, nothing is kept.
    tiny = BlockCache(10)
    r3 = TableReader.open(DEFAULT_FS, paths[0], file_number=1, cache=tiny)
    assert [e[2] for e in r3.iter_entries()] == [b"file1"] * 100
    assert len(tiny) == 0
    for r in (r1, r2, r3):
        r.close()


def test_cache_keys_are_distinct_across_tables(tmp_path, monkeypatch):
    """A reader's block cache keys (``_cbase + offset``, one int per block) never
    equal another file's, and a table past the int keys' span keeps
    ``(file_number, offset)`` tuples that read the same."""
    from lsm.sstable import reader_meta

    paths = []
    for n in (1, 2, 3):
        path = str(tmp_path / f"{n:06d}.sst")
        w = TableWriter(DEFAULT_FS, path, block_size=64)
        for i in range(200):
            w.add(b"k%03d" % i, pack_trailer(i + 1, 1), b"v%d-%d" % (n, i) * (1 + i % 3))
        w.finish(sync=False)
        paths.append(path)
    c = BlockCache(1 << 20)
    readers = [TableReader.open(DEFAULT_FS, p, file_number=n, cache=c) for n, p in zip((1, 2, 3), paths)]
    keys = [{r._cbase + off for off in r._boffs} for r in readers]
    for n, r in zip((1, 2, 3), readers):  # the documented form: file_number * 2**40 + offset
        assert r._cbase == n * 2**40
    assert sum(map(len, keys)) == len(set().union(*keys)) == sum(len(r._boffs) for r in readers)
    monkeypatch.setattr(reader_meta, "_CKEY_SPAN", 64)  # every table is longer: negative keys
    big = TableReader.open(DEFAULT_FS, paths[0], file_number=4, cache=c)
    assert big._cbase == -5 * 2**64
    for _ in range(2):  # the second round reads every block from the cache
        for n, r in zip((1, 2, 3, 1), [*readers, big]):
            for i in range(0, 200, 7):
                assert r.get(b"k%03d" % i, MAX_SEQ) == (1, b"v%d-%d" % (n, i) * (1 + i % 3))
    assert c.hits > 0
    c.check()
    for r in (*readers, big):
        r.close()


# ---------------------------------------------------------------- admission (the doorkeeper)
def test_admission_needs_a_second_miss_only_when_full():
    c = BlockCache(300, admission=True)
    for k in "abc":  # room: each goes in at once
        c.put(k, k, 100)
    assert [c.get(k) for k in "abc"] == list("abc") and c.refused == 0
    c.put("d", "d", 100)  # would evict: its first miss is only remembered
    assert c.get("d") is None and len(c) == 3 and c.refused == 1
    assert [c.get(k) for k in "abc"] == list("abc")  # nothing was evicted
    c.put("d", "d", 100)  # its second miss: in, evicting the least recently used (a)
    assert c.get("d") == "d" and c.get("a") is None and c.refused == 1
    c.put("b", "B", 100)  # a full cache admits a replacement like any put (the old entry stays)
    assert c.get("b") == "b" and c.refused == 2
    c.put("b", "B", 100)
    assert c.get("b") == "B" and c.get("c") == "c" and c.get("d") == "d" and c.refused == 2
    c.check()


def test_admission_set_remembers_the_last_two_refused_keys():
    c = BlockCache(100, admission=True)
    c.put("x", 1, 100)
    n = c._sets
    a, b, d = 7, 7 + n, 7 + 2 * n  # ints hash as themselves: one set
    c.put(a, 1, 100)
    c.put(b, 1, 100)
    c.put(a, 1, 100)  # two keys of one set read in turn: each in at its second miss
    assert c.get(a) == 1 and c.get("x") is None and c.refused == 2
    c.put(b, 1, 100)
    assert c.get(b) == 1 and c.get(a) is None and c.refused == 2
    c.put(d, 1, 100)  # the set now remembers d and b: a's miss is forgotten
    c.put(a, 1, 100)
    assert c.get(d) is None and c.get(a) is None and c.refused == 4
    c.put(b, 2, 100)  # b (cached) was pushed out of the set by a: its replacement is refused
    assert c.get(b) == 1 and c.refused == 5
    assert n % 2 == 1 and n >= 32  # odd: an int key's file number (its high bits) changes its set
    assert BlockCache(32 << 20, admission=True)._sets == (32 << 20 >> 14) | 1
    c.check()


def test_plain_cache_admits_everything():
    c = BlockCache(200)
    for i in range(50):
        c.put(i, i, 100)
        assert c.get(i) == i
    assert c.refused == 0 and len(c) == 2
