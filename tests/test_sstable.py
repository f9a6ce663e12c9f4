"""SSTable writer and reader: round trips against a list model, versions
spanning blocks, the empty table, writer contracts, corruption of every
part of a small table, foreign and truncated files, and a golden file that
pins the on-disk format (docs/format/sstable.md)."""

from __future__ import annotations

import errno
import hashlib
import os
import random
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lsm.base import compression
from lsm.base.coding import MAX_SEQ, ValueKind, pack_trailer
from lsm.base.errors import ClosedError, CorruptionError
from lsm.base.fs import DEFAULT_FS, FileSystem
from lsm.sstable import BlockCache, TableReader, TableWriter
from lsm.sstable.format import BLOCK_TRAILER_SIZE, FOOTER_SIZE, MAGIC, decode_footer

FS = DEFAULT_FS
PUT = ValueKind.PUT
DELETE = ValueKind.DELETE

Entry = tuple[bytes, int, bytes]


# ---------------------------------------------------------------- helpers
def random_entries(rng: random.Random, n_keys: int, *, big: int = 0) -> list[Entry]:
    """Entries in internal order: keys from a small alphabet (b"" included),
    1-4 versions each with distinct seqs, ~20% deletes, empty values, and
    ``big`` values of 5000-20000 bytes."""
    keys = {b""}
    while len(keys) < n_keys:
        keys.add(bytes(rng.choice(b"abcxyz\x00\xff") for _ in range(rng.randint(1, 6))))
    seqs = rng.sample(range(1, 10 * n_keys + 10), 4 * n_keys)
    out: list[Entry] = []
    for key in sorted(keys):
        versions = sorted((seqs.pop() for _ in range(rng.randint(1, 4))), reverse=True)
        for seq in versions:
            if rng.random() < 0.2:
                out.append((key, pack_trailer(seq, DELETE), b""))
            else:
                r = rng.random()
                value = b"" if r < 0.15 else rng.randbytes(rng.randint(1, 40))
                out.append((key, pack_trailer(seq, PUT), value))
    for _ in range(big):
        i = rng.randrange(len(out))
        k, t, _v = out[i]
        if t & 0xFF == PUT:
            out[i] = (k, t, rng.randbytes(rng.randint(5000, 20000)))
    return out


def model_get(entries: list[Entry], key: bytes, snap: int) -> tuple[int, bytes] | None:
    target = (snap << 8) | 0xFF
    for k, t, v in entries:
        if k == key and t <= target:
            return t & 0xFF, v
    return None


def model_range(entries: list[Entry], start: bytes | None, stop: bytes | None) -> list[Entry]:
    return [e for e in entries if (start is None or e[0] >= start) and (stop is None or e[0] < stop)]


def write_table(path: str, entries: list[Entry], **kw) -> object:
    w = TableWriter(FS, path, **kw)
    for e in entries:
        w.add(*e)
    return w.finish(sync=False)


def check_table(r: TableReader, entries: list[Entry], rng: random.Random, n_ranges: int = 20) -> None:
    """Every get at several snapshots, and random ranges both ways, against
    the model."""
    r.check()
    assert list(r.iter_entries()) == entries
    assert list(r.iter_entries(reverse=True)) == entries[::-1]
    seqs = sorted({t >> 8 for _k, t, _v in entries}) or [1]
    snaps = [0, MAX_SEQ, *rng.sample(seqs, min(4, len(seqs)))]
    keys = sorted({e[0] for e in entries} | {b"", b"\x00", b"b", b"zzzzzzz", b"a\x00"})
    for key in keys:
        for snap in snaps:
            assert r.get(key, snap) == model_get(entries, key, snap), (key, snap)
    bounds = [None, *keys]
    for _ in range(n_ranges):
        start, stop = rng.choice(bounds), rng.choice(bounds)
        want = model_range(entries, start, stop)
        assert list(r.iter_entries(start, stop)) == want, (start, stop)
        assert list(r.iter_entries(start, stop, reverse=True)) == want[::-1], (start, stop)


CONFIGS = [
    {"block_size": 1, "compression": compression.NONE, "bloom_bits_per_key": 10},
    {"block_size": 1, "compression": compression.ZSTD, "bloom_bits_per_key": 0},
    {"block_size": 64, "compression": compression.ZSTD, "bloom_bits_per_key": 10},
    {"block_size": 256, "compression": compression.NONE, "bloom_bits_per_key": 0},
    {"block_size": 4096, "compression": compression.ZSTD, "bloom_bits_per_key": 10},
    {"block_size": 4096, "compression": compression.NONE, "bloom_bits_per_key": 3},
    {"block_size": 64, "compression": compression.LZ4, "bloom_bits_per_key": 10},
    {"block_size": 4096, "compression": compression.LZ4, "bloom_bits_per_key": 10},
]


# ---------------------------------------------------------------- round trips
@pytest.mark.parametrize(
    "cfg", CONFIGS, ids=lambda c: "bs{block_size}-c{compression}-bloom{bloom_bits_per_key}".format(**c)
)
@pytest.mark.parametrize("seed", [1, 2])
def test_round_trip(tmp_path, cfg, seed):
    rng = random.Random(seed)
    print("seed", seed)
    entries = random_entries(rng, 150, big=3)
    path = str(tmp_path / "000001.sst")
    props = write_table(path, entries, **cfg)
    assert props.file_size == os.path.getsize(path)
    cache = BlockCache(1 << 20) if seed == 1 else None
    r = TableReader.open(FS, path, file_number=1, cache=cache)
    try:
        assert r.properties == props
        check_table(r, entries, rng)
    finally:
        r.close()


def test_properties(tmp_path):
    entries = [
        (b"a", pack_trailer(7, PUT), b"xy"),
        (b"a", pack_trailer(3, DELETE), b""),
        (b"b", pack_trailer(9, PUT), b"z" * 10),
        (b"c", pack_trailer(2, DELETE), b""),
    ]
    path = str(tmp_path / "1.sst")
    p = write_table(path, entries)
    assert (p.num_entries, p.num_deletes, p.smallest, p.largest, p.min_seq, p.max_seq, p.data_size) == (
        4,
        2,
        b"a",
        b"c",
        2,
        9,
        3 + 1 + 11 + 1,
    )
    with_reader = TableReader.open(FS, path, file_number=1)
    assert with_reader.properties == p
    with_reader.close()


def test_versions_spanning_blocks(tmp_path):
    # 60 versions of one key over blocks of ~2 entries, between neighbours.
    entries = [(b"a", pack_trailer(1000, PUT), b"first")]
    entries += [
        (b"k", pack_trailer(seq, DELETE if seq % 7 == 0 else PUT), b"v%d" % seq) for seq in range(600, 0, -10)
    ]
    entries += [(b"z", pack_trailer(5, PUT), b"last")]
    path = str(tmp_path / "1.sst")
    write_table(path, entries, block_size=40, compression=compression.NONE)
    cache = BlockCache(1 << 20)
    r = TableReader.open(FS, path, file_number=1, cache=cache)
    assert len(r._boffs) > 20
    for snap in range(620):
        before = cache.misses + cache.hits
        assert r.get(b"k", snap) == model_get(entries, b"k", snap), snap
        assert cache.misses + cache.hits - before <= 1  # at most one data block per get
    check_table(r, entries, random.Random(3))
    r.close()


def test_empty_table(tmp_path):
    path = str(tmp_path / "1.sst")
    w = TableWriter(FS, path)
    assert w.estimated_size == 0 and w.num_entries == 0
    p = w.finish()
    assert (p.num_entries, p.smallest, p.largest, p.data_size) == (0, b"", b"", 0)
    r = TableReader.open(FS, path, file_number=1)
    assert r.properties == p
    assert r.get(b"", MAX_SEQ) is None and r.get(b"a", MAX_SEQ) is None
    assert list(r.iter_entries()) == [] and list(r.iter_entries(b"a", b"b", reverse=True)) == []
    assert r.may_contain(b"x")  # no filter in an empty table
    r.check()
    r.close()


def test_bloom_counters(tmp_path):
    entries = [(b"k%05d" % i, pack_trailer(i + 1, PUT), b"v") for i in range(2000)]
    path = str(tmp_path / "1.sst")
    write_table(path, entries)
    r = TableReader.open(FS, path, file_number=1, cache=BlockCache(0))
    for i in range(2000):
        assert r.get(b"k%05d" % i, MAX_SEQ) == (PUT, b"v")
    assert (r.bloom_checked, r.bloom_useful) == (2000, 0)
    for i in range(2000):
        assert r.get(b"absent%05d" % i, MAX_SEQ) is None
    assert r.bloom_checked == 4000
    assert 2000 * 0.95 < r.bloom_useful <= 2000
    assert not r.may_contain(b"absent-key-xyz") or r.may_contain(b"k00001")
    r.close()


def test_lazy_iteration_and_fill_cache(tmp_path):
    entries = [(b"k%05d" % i, pack_trailer(i + 1, PUT), b"v" * 50) for i in range(1000)]
    path = str(tmp_path / "1.sst")
    write_table(path, entries, block_size=512)
    cache = BlockCache(1 << 20)
    r = TableReader.open(FS, path, file_number=7, cache=cache)
    it = r.iter_entries()
    assert next(it) == entries[0]
    assert (cache.hits, cache.misses, len(cache)) == (0, 1, 1)
    it.close()
    n = len(r._boffs)
    assert sum(1 for _ in r.iter_entries(fill_cache=False)) == 1000
    assert len(cache) == 1 and cache.misses == n  # block 0 hit, the rest read uncached
    assert sum(1 for _ in r.iter_entries()) == 1000
    assert len(cache) == n
    r.close()
    r = TableReader.open(FS, path, file_number=8)
    r.close()
    with pytest.raises(ClosedError):
        r.get(b"k00001", MAX_SEQ)


def test_concurrent_readers(tmp_path):
    rng = random.Random(5)
    entries = random_entries(rng, 300)
    path = str(tmp_path / "1.sst")
    write_table(path, entries, block_size=128)
    r = TableReader.open(FS, path, file_number=1, cache=BlockCache(4096))
    keys = sorted({e[0] for e in entries})
    expect = {k: model_get(entries, k, MAX_SEQ) for k in keys}
    errors: list[BaseException] = []

    def work(seed: int) -> None:
        rr = random.Random(seed)
        try:
            for _ in range(400):
                k = rr.choice(keys)
                assert r.get(k, MAX_SEQ) == expect[k]
            assert list(r.iter_entries()) == entries
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    r.close()


# ---------------------------------------------------------------- writer contracts
def test_writer_rejects_out_of_order(tmp_path):
    path = str(tmp_path / "1.sst")
    bad_sequences = [
        [(b"b", pack_trailer(1, PUT), b""), (b"a", pack_trailer(2, PUT), b"")],  # key descending
        [(b"a", pack_trailer(5, PUT), b""), (b"a", pack_trailer(5, PUT), b"")],  # duplicate
        [(b"a", pack_trailer(5, PUT), b""), (b"a", pack_trailer(6, PUT), b"")],  # older first
        [(b"a", pack_trailer(5, PUT), b""), (b"a", pack_trailer(5, PUT) + 1, b"")],  # trailer up
    ]
    for seq in bad_sequences:
        w = TableWriter(FS, path)
        w.add(*seq[0])
        with pytest.raises(ValueError):
            w.add(*seq[1])
        w.abandon()
        assert not os.path.exists(path)


def test_writer_rejects_bad_trailers(tmp_path):
    path = str(tmp_path / "1.sst")
    for trailer in (-1, 1 << 64, pack_trailer(3, 2), pack_trailer(3, 0x7F)):
        w = TableWriter(FS, path)
        with pytest.raises(ValueError):
            w.add(b"k", trailer, b"v")
            w.finish()
        with pytest.raises(ValueError):
            w.add(b"l", pack_trailer(1, PUT), b"")  # a failed writer refuses
        w.abandon()
        assert not os.path.exists(path)
    with pytest.raises(ValueError):
        TableWriter(FS, path, block_size=0)
    with pytest.raises(ValueError):
        TableWriter(FS, path, bloom_bits_per_key=-1)
    with pytest.raises(ValueError):
        TableWriter(FS, path, compression=9)


def test_writer_lifecycle(tmp_path):
    path = str(tmp_path / "1.sst")
    w = TableWriter(FS, path, block_size=100, compression=compression.NONE)
    w.add_many((b"k%03d" % i, pack_trailer(i + 1, PUT), b"x" * 30) for i in range(20))
    assert w.num_entries == 20
    assert 20 * 50 <= w.estimated_size <= 20 * 50 + 10 * (8 + BLOCK_TRAILER_SIZE)  # 10 blocks of 2
    p = w.finish()
    assert p.file_size == os.path.getsize(path)
    with pytest.raises(ValueError):
        w.add(b"z", pack_trailer(99, PUT), b"")
    with pytest.raises(ValueError):
        w.finish()
    # A first entry with the empty key, then more versions of it.
    w = TableWriter(FS, path)
    w.add(b"", pack_trailer(MAX_SEQ, PUT), b"max")
    w.add(b"", pack_trailer(0, DELETE), b"")
    p = w.finish()
    r = TableReader.open(FS, path, file_number=1)
    assert r.get(b"", MAX_SEQ) == (PUT, b"max") and r.get(b"", 5) == (DELETE, b"")
    assert p.min_seq == 0 and p.max_seq == MAX_SEQ
    r.close()


class _FaultyFS(FileSystem):
    """Counts writes; fails the write number ``fail_write`` and, when
    ``fail_sync``, every fsync."""

    def __init__(self, fail_write: int = 0, fail_sync: bool = False):
        self.writes = 0
        self.fail_write = fail_write
        self.fail_sync = fail_sync

    def _write(self, f, data):
        self.writes += 1
        if self.writes == self.fail_write:
            raise OSError(errno.EIO, "injected write failure", f.path)
        super()._write(f, data)

    def _sync(self, f, data_only):
        if self.fail_sync:
            raise OSError(errno.EIO, "injected fsync failure", f.path)
        super()._sync(f, data_only)


def test_writes_are_buffered_through_fs(tmp_path):
    fs = _FaultyFS()
    path = str(tmp_path / "1.sst")
    w = TableWriter(fs, path, compression=compression.NONE)
    w.add_many((b"k%06d" % i, pack_trailer(i + 1, PUT), b"v" * 100) for i in range(10000))
    p = w.finish()
    assert p.file_size > 1_000_000
    assert fs.writes <= p.file_size // (256 * 1024) + 2  # ~256 KiB per write, not one per entry


@pytest.mark.parametrize("fault", ["write", "sync"])
def test_io_failure_fails_the_writer(tmp_path, fault):
    fs = _FaultyFS(fail_write=2) if fault == "write" else _FaultyFS(fail_sync=True)
    path = str(tmp_path / "1.sst")
    w = TableWriter(fs, path, compression=compression.NONE)
    with pytest.raises(OSError, match="injected"):
        for i in range(10000):
            w.add(b"k%06d" % i, pack_trailer(i + 1, PUT), b"v" * 100)
        w.finish()
    with pytest.raises(ValueError, match="failed"):
        w.add(b"z", pack_trailer(1, PUT), b"")
    with pytest.raises(ValueError, match="failed"):
        w.finish()
    w.abandon()
    w.abandon()
    assert not os.path.exists(path)


# ---------------------------------------------------------------- corruption
def _small_table(tmp_path, comp: int) -> tuple[str, bytes, list[Entry]]:
    entries = [
        (b"key%02d" % i, pack_trailer(100 - i, PUT if i % 5 else DELETE), b"val%d" % i * (i % 4))
        for i in range(40)
    ]
    path = str(tmp_path / "000009.sst")
    write_table(path, entries, block_size=120, compression=comp, bloom_bits_per_key=10)
    with open(path, "rb") as f:
        return path, f.read(), entries


def _regions(data: bytes) -> dict[str, tuple[int, int]]:
    filt, props, index = decode_footer(data[-FOOTER_SIZE:])
    t = BLOCK_TRAILER_SIZE
    return {
        "footer": (len(data) - FOOTER_SIZE, len(data)),
        "index": (index[0], index[0] + index[1] + t),
        "filter": (filt[0], filt[0] + filt[1] + t),
        "properties": (props[0], props[0] + props[1] + t),
    }


def _outcome(path: str, entries: list[Entry]) -> str:
    """Open and read everything; return "error" on CorruptionError naming
    the path, "ok" when everything read equals the model; fail on wrong
    data."""
    try:
        r = TableReader.open(FS, path, file_number=1, cache=BlockCache(1 << 20))
    except CorruptionError as e:
        assert e.path == path and path in str(e)
        return "error"
    try:
        got = []
        try:
            got = list(r.iter_entries())
        except CorruptionError as e:
            assert e.path == path and e.offset is not None
            return "error"
        assert got == entries, "corruption returned wrong data"
        for k, _t, _v in entries[::3]:
            assert r.get(k, MAX_SEQ) == model_get(entries, k, MAX_SEQ)
        return "ok"
    finally:
        r.close()


@pytest.mark.parametrize("comp", [compression.NONE, compression.ZSTD, compression.LZ4])
def test_flip_every_byte_of_meta_and_edge_blocks(tmp_path, comp):
    path, pristine, entries = _small_table(tmp_path, comp)
    regions = _regions(pristine)
    r = TableReader.open(FS, path, file_number=1)
    boffs, bsizes = list(r._boffs), list(r._bsizes)
    r.close()
    assert len(boffs) >= 4
    regions["first data block"] = (boffs[0], boffs[0] + bsizes[0])
    regions["last data block"] = (boffs[-1], boffs[-1] + bsizes[-1])
    for name, (lo, hi) in regions.items():
        errors = 0
        for pos in range(lo, hi):
            for flip in (0x01, 0x80):
                data = bytearray(pristine)
                data[pos] ^= flip
                with open(path, "wb") as f:
                    f.write(data)
                errors += _outcome(path, entries) == "error"
        assert errors == 2 * (hi - lo), f"{name}: a flipped byte went unnoticed"


def test_data_block_corruption_names_offset(tmp_path):
    path, pristine, entries = _small_table(tmp_path, compression.NONE)
    r = TableReader.open(FS, path, file_number=1)
    off = r._boffs[2]
    r.close()
    data = bytearray(pristine)
    data[off + 3] ^= 0x10
    with open(path, "wb") as f:
        f.write(data)
    r = TableReader.open(FS, path, file_number=1)
    assert r.get(entries[0][0], MAX_SEQ) is not None  # block 0 intact
    with pytest.raises(CorruptionError) as ei:
        list(r.iter_entries())
    assert ei.value.path == path and ei.value.offset == off
    assert f"offset {off}" in str(ei.value)
    with pytest.raises(CorruptionError):
        r.check()
    r.close()


def test_truncated_file(tmp_path):
    path, pristine, _entries = _small_table(tmp_path, compression.ZSTD)
    for n in range(len(pristine)):
        with open(path, "wb") as f:
            f.write(pristine[:n])
        with pytest.raises(CorruptionError) as ei:
            TableReader.open(FS, path, file_number=1)
        assert ei.value.path == path
    # Appended garbage moves the footer: also refused.
    with open(path, "wb") as f:
        f.write(pristine + b"\0")
    with pytest.raises(CorruptionError):
        TableReader.open(FS, path, file_number=1)


@pytest.mark.parametrize(
    "content",
    [b"", b"x", os.urandom(63), os.urandom(64), os.urandom(10000), b"hello, this is a text file\n" * 40],
    ids=["empty", "1byte", "63random", "64random", "10k-random", "text"],
)
def test_foreign_file(tmp_path, content):
    path = str(tmp_path / "foreign.sst")
    with open(path, "wb") as f:
        f.write(content)
    with pytest.raises(CorruptionError) as ei:
        TableReader.open(FS, path, file_number=1)
    assert ei.value.path == path and path in str(ei.value)
    assert "sstable" in ei.value.reason


def test_unknown_version(tmp_path):
    path, pristine, _ = _small_table(tmp_path, compression.NONE)
    data = bytearray(pristine)
    data[-16] = 3  # format version u32 at footer offset 48 (1 and 2 are known)
    with open(path, "wb") as f:
        f.write(data)
    with pytest.raises(CorruptionError, match="version 3"):
        TableReader.open(FS, path, file_number=1)


def test_unverified_reads_still_check_layout(tmp_path):
    path, pristine, entries = _small_table(tmp_path, compression.NONE)
    r = TableReader.open(FS, path, file_number=1, verify_checksums=False)
    assert list(r.iter_entries()) == entries
    off = r._boffs[1]
    r.close()
    data = bytearray(pristine)
    data[off] ^= 0xFF  # the entry count
    with open(path, "wb") as f:
        f.write(data)
    r = TableReader.open(FS, path, file_number=1, verify_checksums=False)
    with pytest.raises(CorruptionError):
        list(r.iter_entries())
    r.close()


# ---------------------------------------------------------------- hypothesis
_keys = st.binary(min_size=0, max_size=4)


@st.composite
def _tables(draw):
    keys = sorted(draw(st.sets(_keys, max_size=25)))
    seqs = iter(draw(st.permutations(range(1, 4 * len(keys) + 2))))
    entries = []
    for k in keys:
        n = draw(st.integers(1, 3))
        for seq in sorted((next(seqs) for _ in range(n)), reverse=True):
            kind = draw(st.sampled_from([PUT, PUT, DELETE]))
            entries.append((k, pack_trailer(seq, kind), draw(st.binary(max_size=30)) if kind == PUT else b""))
    cfg = {
        "block_size": draw(st.sampled_from([1, 2, 16, 64, 4096])),
        "compression": draw(st.sampled_from([compression.NONE, compression.ZSTD, compression.LZ4])),
        "bloom_bits_per_key": draw(st.sampled_from([0, 1, 10])),
    }
    return entries, cfg


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(_tables(), st.randoms(use_true_random=False))
def test_hypothesis_round_trip(tmp_path, table, rng):
    entries, cfg = table
    path = str(tmp_path / "h.sst")
    write_table(path, entries, **cfg)
    r = TableReader.open(FS, path, file_number=1, cache=BlockCache(512))
    try:
        check_table(r, entries, rng, n_ranges=8)
    finally:
        r.close()


# ---------------------------------------------------------------- golden file
GOLDEN_ENTRIES = [
    (b"apple", pack_trailer(3, PUT), b"red"),
    (b"banana", pack_trailer(5, PUT), b"yellow"),
    (b"banana", pack_trailer(2, DELETE), b""),
    (b"cherry", pack_trailer(4, PUT), b"dark red"),
]
GOLDEN_SHA256 = "05b47f03aa22317f5d9d6bd64664b266cbebd8aac9ce9c4a002ba3c80bf2f46b"


def test_golden_file(tmp_path):
    """Pins the bytes of a tiny table (compression none, 2 data blocks, no
    filter: the filter's Roaring container choice is pyroaring's, and
    tests/test_bloom.py pins its bits instead). A change here is a format
    change: bump FORMAT_VERSION and update docs/format/sstable.md, whose
    worked example is this file."""
    path = str(tmp_path / "000001.sst")
    write_table(path, GOLDEN_ENTRIES, block_size=64, compression=compression.NONE, bloom_bits_per_key=0)
    with open(path, "rb") as f:
        data = f.read()
    assert data[-8:] == MAGIC.to_bytes(8, "little") == b"\x89LSMSST\n"
    assert hashlib.sha256(data).hexdigest() == GOLDEN_SHA256, data.hex()
    r = TableReader.open(FS, path, file_number=1)
    assert list(r.iter_entries()) == GOLDEN_ENTRIES
    r.close()
