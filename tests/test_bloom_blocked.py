"""The blocked sstable bloom filter (kind 0x40, docs/format/sstable.md
"Filter block"): the bytes follow the spec (an independent implementation
here), pinned values, no false negatives (hypothesis), the false-positive
rate at the default bits per key, rejection of malformed payloads and
unknown kinds (as CorruptionError naming the file and offset through the
reader), tables of the old Roaring kind still read, and the flush and
compaction paths writing the new kind."""

from __future__ import annotations

import random
import struct
import zlib

import pytest
from crc32c import crc32c
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lsm
from lsm.base.errors import CorruptionError
from lsm.base.fs import DEFAULT_FS
from lsm.options import Options
from lsm.sstable import writer as writer_mod
from lsm.sstable.block import MAX_TRAILER
from lsm.sstable.bloom import (
    BLOCKED_HEADER,
    KIND_BLOCKED64,
    BloomBuilder,
    BloomFilter,
    RoaringBloomBuilder,
    RoaringBloomFilter,
    blocked_probes,
    decode_filter,
    key_hashes,
    patterns,
)
from lsm.sstable.cache import BlockCache
from lsm.sstable.format import FOOTER_SIZE, decode_footer_version, frame_block
from lsm.sstable.reader import TableReader
from lsm.sstable.writer import TableWriter
from tests.test_bloom import flip_bits_never_crashes

PUT = 1


def spec_pattern(k: int, j: int) -> int:
    """Mask j of ``k`` bits as docs/format/sstable.md specifies it."""
    s = j
    bits: list[int] = []
    while len(bits) < k:
        s = (s * 0x5851F42D4C957F2D + 0x14057B7EF767814F) % 2**64
        if s >> 58 not in bits:
            bits.append(s >> 58)
    return sum(1 << b for b in bits)


def spec_filter(keys: list[bytes], bits_per_key: int) -> bytes:
    """The payload of a blocked filter, written from the spec alone."""
    k = min(16, max(1, (2 * bits_per_key + 2) // 5))
    nw = -(-len(set(keys)) * bits_per_key // 64) | 1
    words = [0] * nw
    for key in keys:
        h1 = crc32c(key)
        h2 = zlib.crc32(key) | 1
        words[h1 % nw] |= spec_pattern(k, h2 >> 20)
    return (
        bytes([0x40, k, 12, 0]) + nw.to_bytes(4, "little") + b"".join(w.to_bytes(8, "little") for w in words)
    )


def _key_sets(n: int) -> dict[str, list[bytes]]:
    rng = random.Random(1)
    return {
        "sequential": [b"key%013d" % i for i in range(n)],
        "big-endian ints": [i.to_bytes(8, "big") for i in range(n)],
        "random": [rng.randbytes(16) for _ in range(n)],
        "short": [b"%d" % i for i in range(n)],
    }


@pytest.mark.parametrize("bpk", [1, 2, 5, 10, 13, 20, 64])
def test_bytes_follow_the_spec(bpk):
    rng = random.Random(bpk)
    keys = list(
        dict.fromkeys([b"", b"\x00", b"a" * 1000] + [rng.randbytes(rng.randint(0, 40)) for _ in range(700)])
    )
    assert BloomFilter.build(keys, bpk) == spec_filter(keys, bpk)
    assert blocked_probes(bpk) == BloomFilter(spec_filter(keys, bpk)).k


def test_patterns_follow_the_spec():
    for k in (1, 5, 6, 16):
        p = patterns(k)
        assert len(p) == 4096 and len(set(p)) > 4000 or k == 1
        for j in (0, 1, 2, 777, 4095):
            assert p[j] == spec_pattern(k, j)
        assert all(m.bit_count() == k and m < 2**64 for m in p)
    with pytest.raises(ValueError):
        patterns(0)
    with pytest.raises(ValueError):
        patterns(17)


def test_pinned_values():
    # Stable across processes and versions (docs/format/sstable.md pins the
    # example; Python's hash() would fail this under PYTHONHASHSEED).
    assert patterns(5)[0] == 0x40_0300_0060
    assert patterns(5)[1] == 0x4_0201_0900_0000
    data = BloomFilter.build([b"apple", b"banana", b"cherry"], 13)
    assert data.hex() == "40050c00010000002900c0128482020a"
    h1, h2 = key_hashes(b"hello")
    assert (h1, h2, h1 % 1001, h2 >> 20) == (0x9A71BB4C, 0x3610A687, 224, 865)
    assert patterns(5)[865] == 1 << 32 | 1 << 33 | 1 << 39 | 1 << 49 | 1 << 53


def test_blocked_probes():
    assert [blocked_probes(b) for b in (1, 2, 3, 10, 12, 13, 14, 16, 40, 64)] == [
        1,
        1,
        1,
        4,
        5,
        5,
        6,
        6,
        16,
        16,
    ]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.binary(max_size=24), max_size=300), st.integers(1, 64), st.integers(0, 3))
def test_no_false_negatives(keys, bpk, dups):
    b = BloomBuilder()
    b.add_keys(keys)
    b.add_keys(keys[:dups])  # versions of a key repeat it
    f = decode_filter(b.finish(bpk, len(set(keys))))
    assert isinstance(f, BloomFilter)
    assert all(map(f.may_contain, keys))
    assert all(f.may_contain_hashed(*key_hashes(k)) for k in keys)


@pytest.mark.parametrize("name", ["sequential", "big-endian ints", "random", "short"])
def test_false_positive_rate_at_the_default(name):
    keys = _key_sets(20000)[name]
    bpk = Options().bloom_bits_per_key
    f = BloomFilter(BloomFilter.build(keys, bpk))
    assert f.k == blocked_probes(bpk) and f.nw == -(-20000 * bpk // 64) | 1
    absent = [b"absent-%d" % i for i in range(20000)]
    fp = sum(map(f.may_contain, absent)) / len(absent)
    print(name, "false positive rate", fp)
    assert fp < 0.0125  # M10: 0.84-0.86% at 13 bits/key


def test_empty_and_len():
    f = BloomFilter(BloomFilter.build([], 13))
    assert f.nw == 1 and len(f) == 0 and not f.may_contain(b"x")
    f = BloomFilter(BloomFilter.build([b"a", b"b"], 13))
    assert 0 < len(f) <= 2 * f.k


def test_malformed_and_unknown_kinds():
    good = BloomFilter.build([b"a", b"b", b"c"], 13)
    k, pb, nw = good[1], good[2], struct.unpack_from("<I", good, 4)[0]
    body = good[8:]
    bad = [
        b"",
        good[:7],  # shorter than the header
        good[:-1],  # truncated words
        good + b"\x00",  # trailing byte
        BLOCKED_HEADER.pack(KIND_BLOCKED64, 0, pb, 0, nw) + body,  # k = 0
        BLOCKED_HEADER.pack(KIND_BLOCKED64, 17, pb, 0, nw) + body,  # k > 16
        BLOCKED_HEADER.pack(KIND_BLOCKED64, k, 11, 0, nw) + body,  # other pattern bits
        BLOCKED_HEADER.pack(KIND_BLOCKED64, k, pb, 1, nw) + body,  # reserved set
        BLOCKED_HEADER.pack(KIND_BLOCKED64, k, pb, 0, 0),  # no words
        BLOCKED_HEADER.pack(KIND_BLOCKED64, k, pb, 0, 2) + bytes(16),  # an even word count
        BLOCKED_HEADER.pack(KIND_BLOCKED64, k, pb, 0, nw + 2) + body,  # count disagrees
    ]
    for n in range(len(good)):
        bad.append(good[:n])
    for kind in (0, 31, 0x3F, 0x41, 0x80, 0xFF):  # neither 0x40 nor a Roaring k
        bad.append(bytes([kind]) + good[1:])
    for data in bad:
        with pytest.raises(ValueError):
            decode_filter(data)
    with pytest.raises(ValueError, match="unknown bloom filter kind 0x41"):
        decode_filter(b"\x41" + good[1:])
    flip_bits_never_crashes(decode_filter, good)


# ---------------------------------------------------------------- through the table reader
def _write(path: str, keys: list[bytes], bpk: int = 13) -> None:
    w = TableWriter(DEFAULT_FS, path, block_size=512, bloom_bits_per_key=bpk)
    for i, k in enumerate(keys):
        w.add(k, (i + 1) << 8 | PUT, b"v%d" % i)
    w.finish()


def _replace_filter(path: str, payload: bytes) -> int:
    """Swap the table's filter payload for one of the same size, with a
    valid block crc (so the filter's own checks are what fails); returns the
    filter block's offset."""
    with open(path, "rb") as f:
        data = f.read()
    _v, (off, size), _p, _i = decode_footer_version(data[-FOOTER_SIZE:])
    assert len(payload) == size
    stored, trailer = frame_block(payload, 0)
    with open(path, "wb") as f:
        f.write(data[:off] + stored + trailer + data[off + size + len(trailer) :])
    return off


def _filter_payload(path: str) -> bytes:
    with open(path, "rb") as f:
        data = f.read()
    _v, (off, size), _p, _i = decode_footer_version(data[-FOOTER_SIZE:])
    return data[off : off + size]


@pytest.mark.parametrize(
    "damage",
    [
        lambda p: b"\x41" + p[1:],  # unknown kind
        lambda p: b"\x00" + p[1:],  # unknown kind (0 is no Roaring k)
        lambda p: p[:1] + b"\x11" + p[2:],  # k = 17
        lambda p: (
            p[:4] + struct.pack("<I", struct.unpack_from("<I", p, 4)[0] - 2) + p[8:]
        ),  # word count short (odd, but the payload is longer)
        lambda p: p[:4] + struct.pack("<I", struct.unpack_from("<I", p, 4)[0] - 1) + p[8:],  # even word count
        lambda p: p[:4] + struct.pack("<I", 0) + p[8:],  # no words
    ],
)
def test_reader_raises_corruption_naming_file_and_offset(tmp_path, damage):
    path = str(tmp_path / "1.sst")
    _write(path, [b"k%05d" % i for i in range(500)])
    off = _replace_filter(path, damage(_filter_payload(path)))
    with pytest.raises(CorruptionError, match="filter block") as ei:
        TableReader.open(DEFAULT_FS, path, file_number=1)
    assert ei.value.path == path and ei.value.offset == off
    assert f"at offset {off}" in str(ei.value)


def test_lookup_agrees_with_the_filter(tmp_path):
    rng = random.Random(11)
    print("seed 11")
    keys = sorted({rng.randbytes(rng.randint(1, 20)) for _ in range(3000)})
    path = str(tmp_path / "1.sst")
    _write(path, keys)
    r = TableReader.open(DEFAULT_FS, path, file_number=1, cache=BlockCache(1 << 16))
    assert isinstance(r._bloom, BloomFilter) and r._bloom_old is None
    target = MAX_TRAILER
    for i, k in enumerate(keys):
        assert r.lookup(k, target, *key_hashes(k)) == (k, (i + 1) << 8 | PUT, b"v%d" % i)
    present = set(keys)
    absent = [k for k in (rng.randbytes(rng.randint(1, 20)) for _ in range(5000)) if k not in present]
    before = r.bloom_useful
    for k in absent:
        assert r.lookup(k, target, *key_hashes(k)) is None
    rejected = sum(not r.may_contain(k) for k in absent)
    assert r.bloom_useful - before == rejected > 0.97 * len(absent)
    r.close()


def test_old_roaring_tables_still_read(tmp_path, monkeypatch):
    # A table written by the pre-session-8 writer: the Roaring builder in
    # the writer's place (its bytes are the old format's, tests/test_bloom.py).
    keys = [b"k%05d" % i for i in range(2000)]
    path = str(tmp_path / "old.sst")
    monkeypatch.setattr(writer_mod, "BloomBuilder", RoaringBloomBuilder)
    _write(path, keys, bpk=10)
    monkeypatch.undo()
    assert 1 <= _filter_payload(path)[0] <= 30  # first byte: the Roaring k
    r = TableReader.open(DEFAULT_FS, path, file_number=1, cache=BlockCache(1 << 16))
    assert r._bloom is None and isinstance(r._bloom_old, RoaringBloomFilter)
    for i, k in enumerate(keys):
        assert r.lookup(k, MAX_TRAILER, *key_hashes(k)) == (k, (i + 1) << 8 | PUT, b"v%d" % i)
        assert r.get(k, 1 << 40) == (PUT, b"v%d" % i)
    absent = [b"k%05d." % i for i in range(2000)]
    for k in absent:
        assert r.lookup(k, MAX_TRAILER, *key_hashes(k)) is None
    assert r.bloom_useful == sum(not r.may_contain(k) for k in absent) > 1900
    r.close()


def test_db_reads_old_tables_and_rewrites_them_blocked(tmp_path, monkeypatch):
    # Flush under the old builder (tables of the Roaring kind), reopen with
    # the new one: reads see both kinds; a compaction (the worker path,
    # lsm/compaction/worker.py through TableWriter) rewrites them blocked.
    d = str(tmp_path / "db")
    keys = [b"k%06d" % i for i in range(3000)]
    monkeypatch.setattr(writer_mod, "BloomBuilder", RoaringBloomBuilder)
    db = lsm.open(d, background="inline", sync=lsm.Sync.OFF)
    for k in keys[:1500]:
        db.put(k, b"old-" + k)
    db.flush()
    db.close()
    monkeypatch.undo()
    db = lsm.open(d, background="inline", sync=lsm.Sync.OFF)
    try:
        for k in keys[1500:]:
            db.put(k, b"new-" + k)
        db.flush()
        kinds = {type(r._bloom or r._bloom_old).__name__ for r in db._sv.readers.values()}
        assert kinds == {"BloomFilter", "RoaringBloomFilter"}
        for i, k in enumerate(keys):
            assert db.get(k) == (b"old-" if i < 1500 else b"new-") + k
            assert db.get(k + b".") is None
        db.compact_range()
        readers = list(db._sv.readers.values())
        assert readers and all(isinstance(r._bloom, BloomFilter) and r._bloom_old is None for r in readers)
        for i, k in enumerate(keys):
            assert db.get(k) == (b"old-" if i < 1500 else b"new-") + k
        before = sum(r.bloom_useful for r in readers)
        for k in keys:
            assert db.get(k + b".") is None
        assert sum(r.bloom_useful for r in readers) - before > 0.97 * len(keys)
    finally:
        db.close()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(st.binary(min_size=1, max_size=12), min_size=1, max_size=200, unique=True), st.integers(1, 20)
)
def test_tables_find_every_key(tmp_path_factory, keys, bpk):
    path = str(tmp_path_factory.mktemp("t") / "1.sst")
    keys = sorted(keys)
    _write(path, keys, bpk)
    r = TableReader.open(DEFAULT_FS, path, file_number=1)
    try:
        for i, k in enumerate(keys):
            assert r.get(k, 1 << 40) == (PUT, b"v%d" % i)
    finally:
        r.close()
