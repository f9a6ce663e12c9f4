"""Fuzz targets of the SSTable decoders: ``sst_footer``, ``sst_block``,
``sst_unframe`` (checksum, compression id, bounded zstd),
``sst_properties``, ``bloom`` and ``sst_table`` (open, iterate both ways,
get, check; with and without verify_checksums), with their seeds (tables
written by a TableWriter, and the blocks cut from them) and the fixes
that recompute block, footer and table checksums."""

from __future__ import annotations

import contextlib
import random
import struct
from typing import Any

from fuzz.core import L, Target, check


def _table_bytes(n: int, **kw: Any) -> bytes:
    fs = L.CrashFS()
    fs.makedirs("/t")
    w = L.writer.TableWriter(fs, "/t/000001.sst", **kw)
    rng = random.Random(n)
    keys = sorted({bytes(rng.choice(b"abcxyz\x00\xff") for _ in range(rng.randint(0, 5))) for _ in range(n)})
    seq = 10 * n + 10
    for k in keys:
        for _ in range(rng.randint(1, 3)):
            kind = L.ValueKind.DELETE if rng.random() < 0.2 else L.ValueKind.PUT
            w.add(
                k,
                (seq << 8) | kind,
                b"" if kind == L.ValueKind.DELETE else rng.randbytes(rng.randint(0, 30)) * rng.randint(1, 3),
            )
            seq -= 1
    if kw.pop("range_dels", False) and hasattr(w, "add_range_del"):
        w.add_range_del(b"b", b"x", 5)
        w.add_range_del(b"a", b"c", 7)
    w.finish(sync=False)
    return fs.read_file("/t/000001.sst")


def _seed_tables() -> list[bytes]:
    none, zstd = L.compression.NONE, L.compression.ZSTD
    out = [
        _table_bytes(30, block_size=64, compression=zstd, bloom_bits_per_key=10),
        _table_bytes(20, block_size=32, compression=none, bloom_bits_per_key=10),
        _table_bytes(12, block_size=4096, compression=zstd, bloom_bits_per_key=0),
        _table_bytes(0, block_size=64),
    ]
    if hasattr(L.writer.TableWriter, "add_range_del"):
        fs = L.CrashFS()
        fs.makedirs("/t")
        w = L.writer.TableWriter(fs, "/t/000001.sst", block_size=48, compression=none)
        for i in range(12):
            w.add(b"k%02d" % i, ((100 - i) << 8) | L.ValueKind.PUT, b"v%d" % i)
        w.add_range_del(b"k03", b"k07", 200)
        w.add_range_del(b"k05", b"k09", 150)
        w.finish(sync=False)
        out.append(fs.read_file("/t/000001.sst"))
    return out


def _footer(data: bytes) -> tuple[int, tuple[int, int], tuple[int, int], tuple[int, int]]:
    """Footer fields of a table, unchecked: (version, filter, props, index)."""
    f = L.format.FOOTER.unpack(data[-L.format.FOOTER_SIZE :])
    return f[6], (f[0], f[1]), (f[2], f[3]), (f[4], f[5])


def _meta_blocks(table: bytes) -> dict[str, bytes]:
    """Payloads and framed blocks of a valid table, for the block-level seeds."""
    t = L.format.BLOCK_TRAILER_SIZE
    _v, filt, props, index = _footer(table)
    out = {}
    for name, (off, size) in (("filter", filt), ("props", props), ("index", index)):
        if size or name != "filter":
            framed = table[off : off + size + t]
            out[name + "_framed"] = framed
            out[name] = L.format.unframe_block(framed, True)
    handles = [L.format.HANDLE.unpack(v) for v in L.block.decode_block(out["index"])[2]]
    if handles:
        off, size = handles[0]
        out["data_framed"] = table[off : off + size + t]
        out["data"] = L.format.unframe_block(out["data_framed"], True)
    return out


def _zstd_blocks() -> list[bytes]:
    """Framed zstd-compressed blocks (stored + trailer)."""
    out = []
    for n, size in ((3, 5), (20, 40), (60, 200)):
        keys = [b"key%05d" % i for i in range(n)]
        payload = L.block.encode_block(keys, [(i + 1) << 8 | 1 for i in range(n)], [b"v" * size] * n)
        stored, trailer = L.format.frame_block(payload, L.compression.ZSTD)
        assert trailer[0] == L.compression.ZSTD
        out.append(stored + trailer)
    return out


def fix_block_crc(b: bytearray, off: int, size: int) -> None:
    """Recompute the crc of the block at ``off`` (``size`` stored bytes) in place."""
    t = L.format.BLOCK_TRAILER_SIZE
    if 0 <= off and off + size + t <= len(b):
        struct.pack_into("<I", b, off + size + 5, L.checksum.mask(L.checksum.crc(b[off : off + size + 5])))


def fix_framed(data: bytes) -> bytes:
    b = bytearray(data)
    if len(b) >= L.format.BLOCK_TRAILER_SIZE:
        fix_block_crc(b, 0, len(b) - L.format.BLOCK_TRAILER_SIZE)
    return bytes(b)


def fix_footer(data: bytes) -> bytes:
    b = bytearray(data)
    if len(b) >= L.format.FOOTER_SIZE:
        f0 = len(b) - L.format.FOOTER_SIZE
        struct.pack_into("<I", b, f0 + 52, L.checksum.mask(L.checksum.crc(b[f0 : f0 + 52])))
    return bytes(b)


def fix_table(data: bytes) -> bytes:
    """Footer crc, the meta blocks' crcs, and the crc of every data block the
    (possibly mutated) index names."""
    b = bytearray(fix_footer(data))
    if len(b) < L.format.FOOTER_SIZE:
        return bytes(b)
    version, filt, props, index = _footer(bytes(b))
    handles = [filt, props, index]
    with contextlib.suppress(ValueError, struct.error):
        payload = L.format.unframe_block(bytes(b[props[0] : props[0] + props[1] + 9]), False)
        if version != 1 and hasattr(L.format, "decode_range_dels_props"):
            handles.append(L.format.decode_range_dels_props(payload)[0])
    with contextlib.suppress(ValueError, struct.error):
        payload = L.format.unframe_block(bytes(b[index[0] : index[0] + index[1] + 9]), False)
        handles += [L.format.HANDLE.unpack(v) for v in L.block.decode_block(payload, True)[2][:10000]]
    for off, size in handles:
        fix_block_crc(b, off, size)
    return bytes(b)


def run_sst_footer(data: bytes) -> str:
    dec = getattr(L.format, "decode_footer_version", None)
    try:
        if dec is not None:
            version, *hs = dec(data)
        else:
            version, hs = 1, list(L.format.decode_footer(data))
    except ValueError:
        return "rejected"
    args = (*hs, version) if dec is not None else hs
    check(L.format.encode_footer(*args) == data, "an accepted footer does not re-encode to itself")
    return "accepted"


def run_sst_block(data: bytes) -> str:
    try:
        L.block.decode_block(data, False)  # a crc-verified payload: layout checks only, no re-encode
    except ValueError:
        pass
    try:
        keys, trailers, values = L.block.decode_block(data, True)
    except ValueError:
        return "rejected"
    check(len(keys) == len(trailers) == len(values), "ragged block")
    check(
        L.block.encode_block(keys, trailers, values) == data, "an accepted block does not re-encode to itself"
    )
    return "accepted"


def run_sst_unframe(data: bytes) -> str:
    result = "rejected"
    for verify in (True, False):
        try:
            out = L.format.unframe_block(data, verify)
        except ValueError:
            continue
        (usize,) = struct.unpack_from("<I", data, len(data) - 8)
        check(len(out) == usize, f"payload of {len(out)} bytes, trailer says {usize}")
        result = "accepted"
    return result


def run_sst_properties(data: bytes) -> str:
    try:
        props, _n = L.format.decode_properties(data, 1 << 20)
    except ValueError:
        return "rejected"
    check(
        isinstance(props.smallest, bytes) and isinstance(props.largest, bytes), "properties of the wrong type"
    )
    if hasattr(L.format, "decode_range_dels_props"):
        with contextlib.suppress(ValueError):
            L.format.decode_range_dels_props(data)
    return "accepted"


_PROBE_KEYS = [b"", b"a", b"b", b"k1", b"key3", b"x" * 20, b"\xff"]


def run_bloom(data: bytes) -> str:
    try:
        f = L.bloom.decode_filter(data)  # either kind, by the first byte
    except ValueError:
        return "rejected"
    for k in _PROBE_KEYS:
        check(f.may_contain(k) in (True, False), "may_contain returned a non-bool")
    m = f.nw * 64 if isinstance(f, L.bloom.BloomFilter) else f.m
    check(len(f) <= m, f"{len(f)} bits set of {m}")
    return "accepted"


def _seed_blooms() -> list[bytes]:
    return [
        cls.build([b"k%d" % i for i in range(n)], bpk)
        for n, bpk in ((0, 10), (3, 10), (60, 10), (40, 2))
        for cls in (L.bloom.BloomFilter, L.bloom.RoaringBloomFilter)
    ]


def run_sst_table(data: bytes) -> str:
    fs = L.CrashFS()
    fs.makedirs("/t")
    path = "/t/000001.sst"
    fs.write_file(path, data, sync=False)
    result = "rejected"
    for verify in (True, False):
        try:
            r = L.reader.TableReader.open(
                fs, path, file_number=1, cache=L.cache.BlockCache(1 << 16), verify_checksums=verify
            )
        except L.CorruptionError as e:
            check(e.path == path, f"error names {e.path}")
            continue
        try:
            fwd = list(r.iter_entries())
            rev = list(r.iter_entries(reverse=True))
            check(rev == fwd[::-1], "reverse iteration is not the forward one reversed")
            keys = sorted({e[0] for e in fwd[:50]} | set(_PROBE_KEYS))
            for k in keys:
                r.get(k, L.MAX_SEQ)
                r.get(k, 3)
            for lo, hi in ((b"a", b"c"), (b"b", None), (None, b"b")):
                list(r.iter_entries(lo, hi))
                list(r.iter_entries(lo, hi, reverse=True))
            r.check()
        except L.CorruptionError as e:
            check(e.path == path, f"error names {e.path}")
            continue
        finally:
            r.close()
        # check() passed: entries are in internal order and agree with the index, so a get
        # the filter lets through must find each key's newest version.
        first: dict[bytes, tuple[int, bytes]] = {}
        for k, t, v in fwd:
            first.setdefault(k, (t & 0xFF, v))
        r = L.reader.TableReader.open(fs, path, file_number=1, verify_checksums=verify)
        try:
            for k, want in list(first.items())[:30]:
                if r.may_contain(k):
                    check(r.get(k, L.MAX_SEQ) == want, f"get({k!r}) after a passing check()")
        finally:
            r.close()
        result = "accepted"
    return result


def targets() -> list[Target]:
    def metas() -> list[dict[str, bytes]]:
        return [_meta_blocks(t) for t in _seed_tables()]

    return [
        Target(
            "sst_footer",
            run_sst_footer,
            lambda: [t[-64:] for t in _seed_tables()],
            fix_footer,
            "decode_footer(_version)",
        ),
        Target(
            "sst_block",
            run_sst_block,
            lambda: [m[k] for m in metas() for k in ("data", "index", "props") if k in m],
            None,
            "decode_block payloads (data, index, properties)",
        ),
        Target(
            "sst_unframe",
            run_sst_unframe,
            lambda: [m[k] for m in metas() for k in m if k.endswith("_framed")] + _zstd_blocks(),
            fix_framed,
            "unframe_block: checksum, compression id, bounded zstd",
        ),
        Target(
            "sst_properties",
            run_sst_properties,
            lambda: [m["props"] for m in metas()],
            None,
            "decode_properties",
        ),
        Target("bloom", run_bloom, _seed_blooms, None, "BloomFilter (roaring deserialization)"),
        Target(
            "sst_table",
            run_sst_table,
            _seed_tables,
            fix_table,
            "TableReader.open, iterate, get, check (verify on and off)",
        ),
    ]
