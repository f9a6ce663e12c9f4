"""The Roaring (legacy) sstable bloom filter, still read from tables written
before session 8 and built by RoaringBloomBuilder for these tests: no false
negatives, ~1% false positives at 10 bits/key, the specified hash (stable
across processes: pinned bit positions), probe count, and rejection of
malformed filters. The blocked filter tables write now:
tests/test_bloom_blocked.py."""

from __future__ import annotations

import os
import random
import struct
import subprocess
import sys
import zlib

import pytest
from crc32c import crc32c
from pyroaring import BitMap

from lsm.sstable.bloom import FILTER_HEADER, num_probes
from lsm.sstable.bloom import RoaringBloomBuilder as BloomBuilder
from lsm.sstable.bloom import RoaringBloomFilter as BloomFilter


def spec_bits(key: bytes, k: int, m: int) -> list[int]:
    """The bit positions of ``key`` exactly as docs/format/sstable.md
    specifies them, written independently of the implementation."""
    h1 = crc32c(key)
    h2 = zlib.crc32(key) | 1
    return [(((h1 + i * h2) % 2**32) * m) >> 32 for i in range(k)]


KEY_SETS = {
    "sequential": lambda: [b"key%013d" % i for i in range(10000)],
    "big-endian ints": lambda: [i.to_bytes(8, "big") for i in range(10000)],
    "random": lambda: [random.Random(1).randbytes(16) + b"%d" % i for i in range(10000)],
    "short": lambda: [b"%d" % i for i in range(10000)],
}


def flip_bits_never_crashes(decode, good: bytes, seed: int = 3) -> None:
    """Flip one random bit of ``good`` 300 times: ``decode`` of the damaged
    bytes raises ValueError or gives a filter that answers a probe, never
    another exception (used by tests/test_bloom_blocked.py too)."""
    print(f"seed {seed}")
    rng = random.Random(seed)
    for _ in range(300):
        d = bytearray(good)
        d[rng.randrange(len(d))] ^= 1 << rng.randrange(8)
        try:
            decode(bytes(d)).may_contain(b"a")
        except ValueError:
            pass


@pytest.mark.parametrize("name", list(KEY_SETS))
def test_no_false_negatives_and_fp_rate(name):
    keys = KEY_SETS[name]()
    f = BloomFilter(BloomFilter.build(keys, 10))
    assert all(map(f.may_contain, keys))
    absent = [b"absent-%d" % i for i in range(10000)]
    fp = sum(map(f.may_contain, absent)) / len(absent)
    print(name, "false positive rate", fp)
    assert fp < 0.02


def test_bits_follow_the_spec():
    rng = random.Random(7)
    keys = [b"", b"\x00", b"a" * 1000] + [rng.randbytes(rng.randint(0, 40)) for _ in range(500)]
    keys = list(dict.fromkeys(keys))
    data = BloomFilter.build(keys, 10)
    k, m = FILTER_HEADER.unpack_from(data)
    assert (k, m) == (6, 10 * len(keys))
    want = BitMap()
    for key in keys:
        want.update(spec_bits(key, k, m))
    assert BitMap.deserialize(data[FILTER_HEADER.size :]) == want


@pytest.mark.parametrize("bpk", [1, 2, 5, 10, 13, 44])
def test_bits_follow_the_spec_for_odd_and_even_probe_counts(bpk):
    # The builder computes the probes two at a time (one lane holds probe i
    # in its low half and probe i + 1 in its high half), then a lone last
    # probe when k is odd: both halves, the pairing and the carry between
    # lanes are checked against the spec, for k = 1, 1, 3, 6, 8, 30.
    rng = random.Random(bpk)
    keys = list(dict.fromkeys([b""] + [rng.randbytes(rng.randint(0, 24)) for _ in range(700)]))
    data = BloomFilter.build(keys, bpk)
    k, m = FILTER_HEADER.unpack_from(data)
    assert k == num_probes(bpk)
    want = BitMap()
    for key in keys:
        want.update(spec_bits(key, k, m))
    assert BitMap.deserialize(data[FILTER_HEADER.size :]) == want


def test_pinned_positions():
    # Stable across processes and versions: Python's hash() would fail this
    # under PYTHONHASHSEED randomisation.
    assert (crc32c(b"hello"), zlib.crc32(b"hello")) == (0x9A71BB4C, 0x3610A686)  # the standard check values
    assert spec_bits(b"hello", 6, 1000) == [603, 814, 25, 236, 448, 659]
    f = BloomFilter(BloomFilter.build([b"hello"], 10))
    assert sorted(f._bits) == sorted(spec_bits(b"hello", 6, 64))


def test_stable_in_another_process():
    keys = [b"k%d" % i for i in range(100)]
    data = BloomFilter.build(keys, 10)
    code = "import sys; from lsm.sstable.bloom import RoaringBloomFilter as BloomFilter; sys.stdout.write(BloomFilter.build([b'k%d' % i for i in range(100)], 10).hex())"
    env = dict(os.environ, PYTHONHASHSEED="12345")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, env=env, check=True, text=True)
    assert bytes.fromhex(out.stdout) == data


def test_num_probes():
    assert num_probes(10) == 6
    assert num_probes(1) == 1
    assert num_probes(2) == 1
    assert num_probes(20) == 13
    assert num_probes(64) == 30


@pytest.mark.parametrize("bpk", [1, 2, 5, 20])
def test_other_sizes(bpk):
    keys = [b"x%d" % i for i in range(3000)]
    f = BloomFilter(BloomFilter.build(keys, bpk))
    assert f.k == num_probes(bpk) and f.m == 3000 * bpk
    assert all(map(f.may_contain, keys))


def test_builder_counts_distinct_keys():
    b = BloomBuilder()
    b.add_keys([b"a", b"a", b"b"])  # versions of one key repeat it
    b.add_keys([b"b", b"c"])
    data = b.finish(10, num_keys=3)
    f = BloomFilter(data)
    assert f.m == 64  # minimum size
    assert all(f.may_contain(k) for k in (b"a", b"b", b"c"))
    with pytest.raises(ValueError):
        b.finish(0)


def test_empty_filter():
    f = BloomFilter(BloomFilter.build([], 10))
    assert f.m == 64 and len(f) == 0
    assert not f.may_contain(b"") and not f.may_contain(b"anything")


def test_malformed_filters():
    good = BloomFilter.build([b"a", b"b"], 10)
    roaring = good[FILTER_HEADER.size :]
    bad = [
        b"",
        b"\x06\x40\x00",  # shorter than the header
        FILTER_HEADER.pack(0, 64) + roaring,  # k = 0
        FILTER_HEADER.pack(31, 64) + roaring,  # k > 30
        FILTER_HEADER.pack(6, 63) + roaring,  # m below minimum
        FILTER_HEADER.pack(6, 64) + b"\x00garbage",  # not a roaring bitmap
        FILTER_HEADER.pack(6, 64) + BitMap([3, 64]).serialize(),  # bit beyond m
        FILTER_HEADER.pack(6, 64) + roaring[:-1],  # truncated
    ]
    for data in bad:
        with pytest.raises(ValueError):
            BloomFilter(data)
    flip_bits_never_crashes(BloomFilter, good)
    assert struct.calcsize("<BI") == FILTER_HEADER.size == 5
