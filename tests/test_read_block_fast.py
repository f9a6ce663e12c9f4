"""TableReader._load_block's one-frame path for the common data block (crc
checked, LZ4 or raw, a consistent layout; lsm/sstable/reader.py): it must
give the view the generic path (unframe_block + BlockView) gives, and every
block it cannot vouch for must end in the generic path's CorruptionError,
naming the file and the block offset."""

from __future__ import annotations

import pytest

import lsm
from lsm.base import compression
from lsm.base.checksum import masked_crc
from lsm.base.errors import CorruptionError
from lsm.base.fs import FileSystem
from lsm.sstable.block import BlockView, encode_block
from lsm.sstable.format import BLOCK_TRAILER, frame_block, unframe_block
from lsm.sstable.reader import _LAYOUTS, TableReader

FS = FileSystem()
KEYS = [b"%08d" % i for i in range(800)]


def _value(i: int) -> bytes:
    return (b"value-%d-" % (i % 97)) * 6


def _table(tmp_path, codec: str) -> str:
    path = tmp_path / codec
    with lsm.open(str(path), background="inline", memtable_size=1 << 20, compression=codec) as db:
        for i, k in enumerate(KEYS):
            db.put(k, _value(i))
        db.flush()
    return next(str(p) for p in path.iterdir() if p.suffix == ".sst")


def _same(a: BlockView, b: BlockView) -> None:
    assert (a.n, a.p, a.o.tolist(), a.t.tolist()) == (b.n, b.p, b.o.tolist(), b.t.tolist())


@pytest.mark.parametrize("codec", ["lz4", "none", "zstd"])
@pytest.mark.parametrize("mapped", [True, False])
def test_fast_path_gives_the_generic_view_for_every_block(tmp_path, codec, mapped):
    r = TableReader.open(FS, _table(tmp_path, codec), file_number=1, mapped=mapped)
    try:
        assert len(r._boffs) > 3
        for off, n in zip(r._boffs, r._bsizes):
            data = r.file.pread(off, n)
            generic = BlockView(unframe_block(data, True))
            _same(r._load_block(off, n, True), generic)
            _same(r._load_block_checked(off, n, True, data), generic)
            _same(r._load_block(off, n, False), generic)
        for i, k in enumerate(KEYS):
            e = r.get_entry(k, 1 << 40)
            assert e is not None and e[0] == k and e[2] == _value(i)
        assert r.get_entry(b"%08d." % 5, 1 << 40) is None
    finally:
        r.close()


def _frame(stored: bytes, cid: int, usize: int) -> bytes:
    head = BLOCK_TRAILER.pack(cid, usize, 0)[:5]
    return stored + BLOCK_TRAILER.pack(cid, usize, masked_crc(stored + head))


def _payload(n: int = 30) -> bytes:
    return encode_block(
        [b"key%03d" % i for i in range(n)], [(i + 1) << 8 | 1 for i in range(n)], [b"v" * 40] * n
    )


def _bad_blocks() -> list[tuple[str, bytes, str]]:
    """(case, framed block with a valid crc, what the error must say)."""
    p = _payload()
    lz = compression.compress(compression.LZ4, p)
    bad_offsets = bytearray(p)
    bad_offsets[4] ^= 1  # offsets[0] no longer 16n+8
    bad_end = bytearray(p)
    bad_end[4 + 4 * 60] ^= 1  # offsets[2n] (n = 30) no longer the payload's length
    damaged = bytearray(lz)
    damaged[len(lz) // 2 :] = b"\xff" * (len(lz) - len(lz) // 2)
    return [
        ("lz4 size one more", _frame(lz, compression.LZ4, len(p) + 1), "lz4"),
        ("lz4 size one less", _frame(lz, compression.LZ4, len(p) - 1), "lz4"),
        ("lz4 size past the ratio", _frame(lz, compression.LZ4, 300 * len(lz)), "cannot hold"),
        ("lz4 stream damaged", _frame(bytes(damaged), compression.LZ4, len(p)), "lz4"),
        (
            "lz4 offsets off",
            _frame(compression.compress(compression.LZ4, bytes(bad_offsets)), compression.LZ4, len(p)),
            "offsets",
        ),
        (
            "lz4 offsets end off",
            _frame(compression.compress(compression.LZ4, bytes(bad_end)), compression.LZ4, len(p)),
            "offsets",
        ),
        ("raw size claim", _frame(p, compression.NONE, len(p) + 3), "claims"),
        ("raw offsets off", _frame(bytes(bad_offsets), compression.NONE, len(p)), "offsets"),
        (
            "raw too many entries",
            _frame(b"\xff\x00\x00\x00" + p[4:], compression.NONE, len(p)),
            "cannot hold",
        ),
        ("raw empty block", _frame(encode_block([], [], []), compression.NONE, 8), "empty data block"),
        ("raw too short", _frame(b"\x01\x00", compression.NONE, 2), "too short"),
        ("unknown codec", _frame(p, 9, len(p)), "compression"),
    ]


@pytest.mark.parametrize("case,block,says", _bad_blocks(), ids=[c[0] for c in _bad_blocks()])
def test_fast_path_refusals_raise_the_generic_corruption_error(tmp_path, case, block, says):
    r = TableReader.open(FS, _table(tmp_path, "lz4"), file_number=1, mapped=True)
    try:
        at = 4096
        # _payload()'s fixed-size layout learned first: a damaged block of
        # its size must still be refused when its head differs.
        good = b"".join(frame_block(_payload(), compression.LZ4))
        r._map = b"\x00" * at + good
        assert r._load_block(at, len(good), True).p == _payload()
        assert len(_payload()) in _LAYOUTS
        r._map = b"\x00" * at + block  # a block read is a slice of the map
        with pytest.raises(CorruptionError, match=says) as ei:
            r._load_block(at, len(block), True)
        assert ei.value.path == r.path and ei.value.offset == at, case
        bad = bytearray(block)
        bad[0] ^= 0x40  # the same block with its crc no longer matching
        r._map = b"\x00" * at + bytes(bad)
        with pytest.raises(CorruptionError, match="checksum") as ei:
            r._load_block(at, len(bad), True)
        assert ei.value.offset == at
    finally:
        r._map = None
        r.close()


def test_a_good_block_at_a_fake_offset_loads(tmp_path):
    """The harness of the refusal test reads a valid block as such."""
    r = TableReader.open(FS, _table(tmp_path, "lz4"), file_number=1, mapped=True)
    try:
        p = _payload()
        stored, trailer = frame_block(p, compression.LZ4)
        r._map = b"\x00" * 100 + stored + trailer
        b = r._load_block(100, len(stored) + len(trailer), True)
        _same(b, BlockView(p))
        assert b.find(b"key007", 1 << 40) == (b"key007", 8 << 8 | 1, b"v" * 40)
    finally:
        r._map = None
        r.close()


def flip_byte(path, offset: int, mask: int) -> None:
    """XOR the byte at ``offset`` of the file at ``path`` with ``mask``
    (damage on disk, behind the engine's back)."""
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ mask]))


@pytest.mark.parametrize("mapped", [True, False])
def test_damaged_table_byte_is_corruption_on_get(tmp_path, mapped):
    """A flipped byte in a data block on disk: the get that reads it raises
    CorruptionError naming the file and the block's offset."""
    path = _table(tmp_path, "lz4")
    r = TableReader.open(FS, path, file_number=1)
    i = 2
    off, n, key = r._boffs[i], r._bsizes[i], r._ikeys[i]
    r.close()
    flip_byte(path, off + n // 3, 0x10)
    r = TableReader.open(FS, path, file_number=1, mapped=mapped)
    try:
        with pytest.raises(CorruptionError, match="checksum") as ei:
            r.get_entry(key, 1 << 40)
        assert ei.value.path == path and ei.value.offset == off
        assert r.get_entry(KEYS[0], 1 << 40) is not None  # other blocks still read
    finally:
        r.close()


def _oracle(entries, key, target):
    return next((e for e in entries if e[0] == key and e[1] <= target), None)


def test_fixed_layout_fast_path_and_find(tmp_path):
    """A fixed-size block (every key 4 bytes, every value 12) loads the
    second time through the learned layout (shared offsets, ``k`` set), and
    its find gives the oracle's answer for every key and snapshot: several
    versions and tombstones of a key, absent keys, keys of another length,
    and a key whose first occurrence straddles two keys (``aaab`` +
    ``abaa`` holds ``abab`` at 2)."""
    keys = [b"aaab", b"abaa", b"abab", b"b\x00zz", b"qqqq", b"zzzz"]
    entries = []
    for i, k in enumerate(keys):
        for seq in sorted({3 + i, 10, 20 - i}, reverse=True):
            entries.append((k, seq << 8 | (seq % 3 != 0), b"%-12d" % (seq * 100 + i)))
    payload = encode_block([e[0] for e in entries], [e[1] for e in entries], [e[2] for e in entries])
    block = b"".join(frame_block(payload, compression.LZ4))
    r = TableReader.open(FS, _table(tmp_path, "lz4"), file_number=1, mapped=True)
    try:
        r._map = b"\x00" * 64 + block
        first = r._load_block(64, len(block), True)
        second = r._load_block(64, len(block), True)
        assert first.k == 0 and second.k == 4 and second.o is _LAYOUTS[len(payload)][1]
        _same(second, BlockView(payload))
        probes = keys + [b"abab"[:3], b"aaaa", b"abac", b"zzzzz", b"", b"baba", b"aba", b"baab"]
        for k in probes:
            for snap in range(25):
                target = snap << 8 | 0xFF
                want = _oracle(entries, k, target)
                assert second.find(k, target) == want, (k, snap)
                assert first.find(k, target) == want, (k, snap)
    finally:
        r._map = None
        r.close()
