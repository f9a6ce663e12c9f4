"""The read path's fast structures against their plain versions, on random
data (each test prints its seed; ``LSM_READ_SEED=N`` replays one,
``LSM_READ_ROUNDS`` runs more rounds):

* ``BlockView`` (lazy block) lookups equal a bisect over the full decode;
* ``TableReader.iter_columns`` equals ``iter_entries``;
* ``visible_columns`` (the bulk forward merge) equals ``visible`` (the heap
  merge), with versions, deletions, snapshots and range tombstones, for
  any chunking of the sources;
* ``Version.read_plan`` names the files ``files_for_key`` names.
"""

from __future__ import annotations

import os
import random
import threading
from array import array
from bisect import bisect_left
from itertools import chain, islice

import pytest

from lsm.base.coding import MAX_SEQ, ValueKind, pack_trailer
from lsm.base.fs import DEFAULT_FS
from lsm.base.rangedel import RangeDels, visible_fragments
from lsm.iterators import chain_columns, columns, visible, visible_columns
from lsm.manifest.edit import VersionEdit
from lsm.manifest.version import FileMeta, Version
from lsm.sstable import BlockCache, TableReader, TableWriter
from lsm.sstable.block import BlockView, decode_block, encode_block
from tests.seeds import seed_list

PUT = ValueKind.PUT
DELETE = ValueKind.DELETE
ROUNDS = int(os.environ.get("LSM_READ_ROUNDS", "30"))


def rand_key(rng: random.Random) -> bytes:
    return bytes(rng.choice(b"abcxyz\x00\xff") for _ in range(rng.randint(0, 6)))


def internal_entries(rng: random.Random, n_keys: int, max_seq: int = 1000) -> list[tuple[bytes, int, bytes]]:
    """Distinct keys with 1-3 versions (distinct seqs), ~25% deletions, in
    internal order."""
    keys = sorted({rand_key(rng) for _ in range(n_keys)})
    out = []
    for k in keys:
        for seq in sorted(rng.sample(range(1, max_seq), rng.randint(1, 3)), reverse=True):
            kind = DELETE if rng.random() < 0.25 else PUT
            out.append((k, pack_trailer(seq, kind), b"" if kind == DELETE else rng.randbytes(rng.randint(0, 12))))
    return out


# ---------------------------------------------------------------- BlockView
@pytest.mark.parametrize("seed", seed_list("LSM_READ_SEED", 100, ROUNDS))
def test_block_view_equals_full_decode(seed):
    print("seed", seed)
    rng = random.Random(seed)
    entries = internal_entries(rng, rng.randint(1, 60))
    keys = [e[0] for e in entries]
    trailers = [e[1] for e in entries]
    payload = encode_block(keys, trailers, [e[2] for e in entries])
    assert decode_block(payload) == (keys, trailers, [e[2] for e in entries])
    v = BlockView(payload, check_offsets=bool(seed & 1))
    n = len(entries)
    assert len(v) == n and v.entries() == entries
    assert [v.key(i) for i in range(n)] == keys
    probes = keys + [rand_key(rng) for _ in range(40)] + [k + b"\x00" for k in keys]
    for k in probes:
        assert v.seek(k) == bisect_left(keys, k), k
        lo = rng.randint(0, n)
        hi = rng.randint(lo, n)
        assert v.seek(k, lo, hi) == bisect_left(keys, k, lo, hi), (k, lo, hi)
        snap = rng.randint(0, 1000)
        target = (snap << 8) | 0xFF
        want = next((e for e in entries if e[0] == k and e[1] <= target), None)
        assert v.find(k, target) == want, (k, snap)
    for _ in range(10):
        lo = rng.randint(0, n)
        hi = rng.randint(lo, n)
        ks, ts, vs = v.columns(lo, hi)
        assert list(zip(ks, ts, vs)) == entries[lo:hi]
        assert v.entries(lo, hi) == entries[lo:hi]


def test_block_view_rejects_bad_layouts():
    payload = encode_block([b"a", b"b"], [1, 2], [b"x", b"y"])
    with pytest.raises(ValueError):
        BlockView(payload[:5])
    with pytest.raises(ValueError):
        BlockView(payload + b"z")  # offsets no longer span the payload
    bad = bytearray(payload)
    bad[8:12] = (30).to_bytes(4, "little")  # second offset below the first key's start
    with pytest.raises(ValueError):
        BlockView(bytes(bad), check_offsets=True)


def test_block_view_find_straddles_prefixes_and_fast_path(monkeypatch):
    # A first occurrence that straddles two keys, or is a prefix of a longer
    # key, must fall back to the bisection and still answer right.
    cases = [
        ([b"ab", b"ba", b"bab"], b"bab", 2),  # "ba"+"b..." straddles before the real "bab"
        ([b"ab", b"bc"], b"bb", None),  # only a straddle: absent
        ([b"abc", b"abcd"], b"ab", None),  # prefix of a longer key: absent
        ([b"abc", b"abcd"], b"abcd", 1),
        ([b"", b"a", b"aa"], b"a", 1),  # an empty key at the start
    ]
    for keys, probe, want in cases:
        v = BlockView(encode_block(keys, [pack_trailer(5, PUT)] * len(keys), [b"v%d" % i for i in range(len(keys))]))
        got = v.find(probe, MAX_SEQ << 8 | 0xFF)
        assert got == (None if want is None else (probe, pack_trailer(5, PUT), b"v%d" % want)), (keys, probe)
        assert v.find(probe, 4 << 8 | 0xFF) is None  # every version newer than the snapshot
    # Zero-padded numbers: many occurrences straddle two keys
    # ("00000010" + "00000012" holds "00000100"); answers stay right.
    keys = [b"%08d" % i for i in range(0, 400, 2)]
    v = BlockView(encode_block(keys, [pack_trailer(7, PUT)] * len(keys), keys))
    for i in range(400):
        k = b"%08d" % i
        assert v.find(k, MAX_SEQ << 8 | 0xFF) == (None if i & 1 else (k, pack_trailer(7, PUT), k)), k
    # Keys whose first byte starts no other part of a key cannot straddle:
    # then one C-level search answers present and absent keys, never the
    # bisection.
    keys = [b"k%07d" % i for i in range(0, 200, 2)]
    trailers = [pack_trailer(1000 - i, PUT) for i in range(len(keys))]
    v = BlockView(encode_block(keys, trailers, [k[::-1] for k in keys]))

    def no_bisect(*a):
        raise AssertionError("bisection used")

    monkeypatch.setattr(BlockView, "_find_bisect", no_bisect)
    for i, k in enumerate(keys):
        assert v.find(k, MAX_SEQ << 8 | 0xFF) == (k, trailers[i], k[::-1])
        assert v.find(k, trailers[i] - 1) is None
        assert v.find(b"k%07d" % (2 * i + 1), MAX_SEQ << 8 | 0xFF) is None


def test_lookup_bloom_probe_agrees_with_filter(tmp_path):
    # TableReader.lookup inlines BloomFilter.may_contain_hashed: it must
    # reject exactly the keys the filter rejects, and find every present key.
    from lsm.sstable.bloom import key_hashes

    rng = random.Random(11)
    keys = sorted({rng.randbytes(rng.randint(1, 20)) for _ in range(3000)})
    path = str(tmp_path / "1.sst")
    w = TableWriter(DEFAULT_FS, path, block_size=512)
    for i, k in enumerate(keys):
        w.add(k, pack_trailer(i + 1, PUT), b"v%d" % i)
    w.finish()
    r = TableReader.open(DEFAULT_FS, path, file_number=1, cache=BlockCache(1 << 16))
    target = MAX_SEQ << 8 | 0xFF
    for i, k in enumerate(keys):
        assert r.lookup(k, target, *key_hashes(k)) == (k, pack_trailer(i + 1, PUT), b"v%d" % i)
    assert r.bloom_useful == 0
    present = set(keys)
    absent = [k for k in (rng.randbytes(rng.randint(1, 20)) for _ in range(5000)) if k not in present]
    for k in absent:
        assert r.lookup(k, target, *key_hashes(k)) is None
    rejected = sum(not r.may_contain(k) for k in absent)
    assert r.bloom_useful == rejected and rejected > 0.95 * len(absent)
    r._cache.check()
    r.close()


# ---------------------------------------------------------------- table columns
@pytest.mark.parametrize("seed", seed_list("LSM_READ_SEED", 200, ROUNDS)[:10])
def test_iter_columns_equals_iter_entries(tmp_path, seed):
    print("seed", seed)
    rng = random.Random(seed)
    entries = internal_entries(rng, rng.randint(1, 400))
    path = str(tmp_path / "1.sst")
    w = TableWriter(DEFAULT_FS, path, block_size=rng.choice([1, 64, 256, 4096]))
    for e in entries:
        w.add(*e)
    w.finish()
    r = TableReader.open(DEFAULT_FS, path, file_number=1, cache=BlockCache(rng.choice([0, 4096, 1 << 20])))
    bounds = [None] + sorted({e[0] for e in entries}) + [rand_key(rng) for _ in range(5)]
    for _ in range(30):
        start, stop = rng.choice(bounds), rng.choice(bounds)
        want = list(r.iter_entries(start, stop))
        got = []
        for ks, ts, vs in r.iter_columns(start, stop):
            assert ks, "empty chunk"
            got += zip(ks, ts, vs)
        assert got == want, (start, stop)
        assert list(r.iter_entries(start, stop, reverse=True)) == want[::-1]
    r.close()


# ---------------------------------------------------------------- merging
def chunked(entries, rng):
    """``entries`` as Columns chunks of random sizes (1-40), as lists,
    tuples or an array of trailers."""
    i = 0
    while i < len(entries):
        j = i + rng.randint(1, 40)
        c = entries[i:j]
        ks, ts, vs = (list(x) for x in zip(*c))
        yield ks, (array("Q", ts) if rng.random() < 0.5 else tuple(ts)), vs
        i = j


def random_sources(rng):
    """1-6 sources, newest first, keys overlapping across sources, with
    distinct seqs; as in an LSM, a newer source's versions of a key are
    newer than an older source's (the heap merge relies on it)."""
    n_src = rng.randint(1, 6)
    keys = sorted({rand_key(rng) for _ in range(rng.randint(1, 120))})
    sources = []
    for si in range(n_src):
        base = (n_src - si) * 800  # source si's seqs lie in (base - 800, base]
        src_seqs = rng.sample(range(base - 799, base + 1), 3 * len(keys))
        out = []
        for k in keys:
            if rng.random() < 0.5:
                for _v in range(rng.choice([1, 1, 1, 2, 3])):
                    seq = src_seqs.pop()
                    kind = DELETE if rng.random() < 0.2 else PUT
                    out.append((k, pack_trailer(seq, kind), rng.randbytes(3)))
        out.sort(key=lambda e: (e[0], -e[1]))
        sources.append(out)
    return sources


def rdels_for(rng, snap):
    pieces = []
    for _ in range(rng.randint(0, 4)):
        a, b = sorted((rand_key(rng), rand_key(rng)))
        if a < b:
            pieces.append((a, b, rng.randint(1, 5000)))
    if not pieces:
        return None
    return visible_fragments([RangeDels.build(pieces)], None, None, snap)


def window(entries, a, b):
    """A windowed source's answer: the entries of [a, b) as Columns."""
    es = [e for e in entries if (a is None or e[0] >= a) and (b is None or e[0] < b)]
    return tuple(list(x) for x in zip(*es)) if es else None


@pytest.mark.parametrize("seed", seed_list("LSM_READ_SEED", 300, ROUNDS))
def test_visible_columns_equals_heap_merge(seed):
    print("seed", seed)
    rng = random.Random(seed)
    sources = random_sources(rng)
    for _ in range(5):
        snap = rng.choice([MAX_SEQ, rng.randint(0, 5000)])
        rdels = rdels_for(rng, snap) if rng.random() < 0.4 else None
        want = list(visible([iter(s) for s in sources], snap, False, rdels))
        cs = [chunked(s, rng) for s in sources]
        if rng.random() < 0.3:
            cs = [columns(iter(s), first=rng.randint(1, 8), most=rng.randint(8, 64)) for s in sources]
        calls = []
        got = list(chain.from_iterable(visible_columns(cs, snap, rdels, lambda c=calls: c.append(1))))
        assert got == want, (snap, rdels)
        assert calls or not want
        # Some sources read by key range instead (as the memtables are),
        # within a scan range [lo, hi).
        lo, hi = rng.choice([None, rand_key(rng)]), rng.choice([None, rand_key(rng)])
        inr = [[e for e in s if (lo is None or e[0] >= lo) and (hi is None or e[0] < hi)] for s in sources]
        want = list(visible([iter(s) for s in inr], snap, False, rdels))
        # The windowed sources are the newest (as the memtables are).
        cs, win = [], []
        nwin = rng.randint(0, len(inr))
        for i, s in enumerate(inr):
            if i < nwin:
                win.append(lambda a, b, s=s: window(s, a, b))
            else:
                cs.append(chunked(s, rng))
        got = list(chain.from_iterable(visible_columns(cs, snap, rdels, None, win, lo, hi)))
        assert got == want, (snap, rdels, lo, hi)


def test_visible_columns_versions_of_a_key_split_across_chunks():
    # One key with many versions cut into chunks of one entry: every round
    # must see all of its versions before deciding.
    a = [(b"k", pack_trailer(s, PUT), b"v%d" % s) for s in range(50, 0, -1)]
    b = [(b"j", pack_trailer(60, PUT), b"j"), (b"k", pack_trailer(70, DELETE), b""), (b"l", pack_trailer(1, PUT), b"l")]

    def one_by_one(es):
        for e in es:
            yield [e[0]], [e[1]], [e[2]]

    for snap in (MAX_SEQ, 69, 30, 0):
        want = list(visible([iter(b), iter(a)], snap))  # b is the newer source
        got = list(chain.from_iterable(visible_columns([one_by_one(b), one_by_one(a)], snap)))
        assert got == want, snap
    assert list(chain.from_iterable(visible_columns([one_by_one(b), one_by_one(a)], 69))) == [
        (b"j", b"j"), (b"k", b"v50"), (b"l", b"l")]
    assert list(chain.from_iterable(visible_columns([one_by_one(b), one_by_one(a)], MAX_SEQ))) == [
        (b"j", b"j"), (b"l", b"l")]


def test_chain_columns_and_seek_reads_few_chunks():
    pulled = []

    def src(tag, n):
        for i in range(n):
            pulled.append(tag)
            yield [b"%s%04d" % (tag, i)], [pack_trailer(1, PUT)], [b"v"]

    it = chain.from_iterable(visible_columns([chain_columns([src(b"a", 100), src(b"b", 100)])], MAX_SEQ))
    assert list(islice(it, 3)) == [(b"a0000", b"v"), (b"a0001", b"v"), (b"a0002", b"v")]
    assert len(pulled) <= 4  # lazily: a chunk or so beyond what was read


# ---------------------------------------------------------------- read plan
@pytest.mark.parametrize("seed", seed_list("LSM_READ_SEED", 400, ROUNDS)[:10])
def test_read_plan_matches_files_for_key(seed):
    print("seed", seed)
    rng = random.Random(seed)
    v = Version.empty(4)
    number = 1
    edit = VersionEdit()
    for _ in range(rng.randint(0, 5)):
        a, b = sorted((rand_key(rng), rand_key(rng)))
        edit.added.append((0, FileMeta(number, 100, a, b, number, number, 1, 0)))
        number += 1
    for level in (1, 2, 3):
        ks = sorted({rand_key(rng) for _ in range(rng.randint(0, 12))})
        for i in range(0, len(ks) - 1, 2):
            edit.added.append((level, FileMeta(number, 100, ks[i], ks[i + 1], 1, 1, 1, 0)))
            number += 1
    v = v.apply(edit)
    v.check()
    for _ in range(100):
        key = rand_key(rng)
        got = []
        for largest, smallest, nums in v.read_plan:
            i = bisect_left(largest, key)
            if i < len(nums) and smallest[i] <= key:
                got.append(nums[i])
        assert got == [f.number for _l, f in v.files_for_key(key)], key


# ---------------------------------------------------------------- cache
def test_cache_lock_free_get_under_eviction():
    # Readers hit and miss while writers evict: every value returned is the
    # one stored under its key, and the invariants hold afterwards.
    c = BlockCache(50 * 10)
    errors = []

    def reader(seed):
        rng = random.Random(seed)
        try:
            for _ in range(20000):
                k = rng.randrange(200)
                v = c.get(k)
                assert v is None or v == k * 3
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    def writer(seed):
        rng = random.Random(seed)
        for _ in range(20000):
            k = rng.randrange(200)
            c.put(k, k * 3, 10)

    ts = [threading.Thread(target=reader, args=(i,)) for i in range(3)]
    ts += [threading.Thread(target=writer, args=(10 + i,)) for i in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors
    c.check()
    assert len(c) <= 50


# ---------------------------------------------------------------- DB._get
def test_db_get_inlined_memtable_and_hashes(tmp_path):
    # DB._get reads the memtable's newest version itself and computes the
    # bloom hashes itself: a version newer than the snapshot must still
    # fall back to the older one (memtable, then tables), and the hashes
    # must be the filter's (a present key in a table is found, an absent
    # one is rejected by exactly the filters that reject it).
    import lsm
    from lsm.sstable.bloom import key_hashes

    rng = random.Random(5)
    print("seed 5")
    db = lsm.open(str(tmp_path / "db"), background="inline", sync=lsm.Sync.OFF)
    try:
        keys = [b"k%06d" % i for i in range(3000)]
        for k in keys:
            db.put(k, b"t-" + k)
        db.flush()
        assert db._sv.version.num_files(0) + sum(db._sv.version.num_files(i) for i in range(1, 7)) >= 1
        for k in rng.sample(keys, 300):
            assert db.get(k) == b"t-" + k
        readers = list(db._sv.readers.values())
        before = sum(r.bloom_useful for r in readers)
        absent = [b"k%06d." % rng.randrange(3000) for _ in range(500)]
        for k in absent:
            assert db.get(k) is None
        rejected = sum(1 for k in absent for r in readers if not r._bloom.may_contain_hashed(*key_hashes(k))
                       and r.properties.smallest <= k <= r.properties.largest)
        assert sum(r.bloom_useful for r in readers) - before == rejected > 0

        snap = db.snapshot()
        try:
            db.put(b"k000001", b"m1")  # memtable version newer than the snapshot, table version older
            db.put(b"new", b"a")
            snap2 = db.snapshot()
            try:
                db.put(b"new", b"b")  # both versions in the memtable
                db.delete(b"k000002")
                assert db.get(b"k000001") == b"m1" and db.get(b"new") == b"b" and db.get(b"k000002") is None
                assert snap.get(b"k000001") == b"t-k000001" and snap.get(b"new") is None
                assert snap.get(b"k000002") == b"t-k000002"
                assert snap2.get(b"new") == b"a" and snap2.get(b"k000002") == b"t-k000002"
            finally:
                snap2.close()
        finally:
            snap.close()
    finally:
        db.close()
