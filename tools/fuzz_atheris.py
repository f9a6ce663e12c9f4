"""Fuzz every decoder of lsm's on-disk formats (issue 5, family 8).

Each *target* feeds bytes to one decoder and checks its contract: it
returns data (and the data passes the target's invariants, e.g. a record
the WAL reader returns re-encodes to the bytes it was read from, a block
that decodes re-encodes to itself) or raises the documented error
(``CorruptionError``; ``ValueError`` for the byte-level helpers of
``lsm.sstable.block`` and ``lsm.sstable.bloom``, which their callers turn
into CorruptionError). Anything else is a *violation*: another exception
(``MemoryError`` included: a length field must never make a decoder
allocate far beyond its input), or no answer within ``--timeout`` seconds.

Targets (``--list``): wal_segment, wal_replay, batch_body, sst_footer,
sst_block, sst_unframe, sst_properties, bloom, sst_table (open, iterate
both ways, get, check; with and without verify_checksums), manifest
(replay of a manifest file, and VersionSet.recover through a directory),
current (the CURRENT file), version_edit.

Inputs are mutations of valid encodings (seeds built here), which reach
much deeper than random bytes: bit flips, interesting bytes and integers
written over length fields, inserted, deleted, duplicated and zeroed runs,
truncation, splices of two seeds; and, for half of them, a structure-aware
*fix* that recomputes the checksums along the mutated framing (WAL
records, manifest records, table blocks and footer), so that the bytes
behind the checksums get fuzzed too. A few inputs are random bytes.

Engines:

* ``atheris`` (coverage-guided, libFuzzer; ``pip install -e ".[fuzz]"``):
  lsm is imported under atheris' instrumentation, the seeds are written
  to a corpus directory, and the same structure-aware fix runs as a custom
  mutator after libFuzzer's own mutations. Arguments after ``--`` go to
  libFuzzer (e.g. ``-- -max_total_time=3600 -rss_limit_mb=2048``).
* ``random``: the same mutations from a seeded ``random.Random`` loop (no
  coverage feedback); needs nothing but lsm.
* ``auto`` (default): atheris when it imports, else random (it says which).

The address-space limit (``--as-limit-mb``, default 1024 MiB above what
the process uses after start-up) turns any huge allocation into a
MemoryError, a violation. Every target run is under a SIGALRM timer.

Examples::

    python tools/fuzz_atheris.py --help
    python tools/fuzz_atheris.py --runs 20000 --seed 7                # every target, random engine if no atheris
    python tools/fuzz_atheris.py --engine random --target sst_table --seconds 3600
    python tools/fuzz_atheris.py --engine atheris --target wal_replay -- -max_total_time=3600
    python tools/fuzz_atheris.py --target manifest --replay crash-1234.bin

Output: one ``FUZZ target=... runs=... accepted=... rejected=...
violations=...`` line per target and a total; with ``LSM_RELIABILITY_LOG``
set, one JSON line per target is appended to that file. A violation
prints the target, the traceback and the input (hex), saves the input
under ``--crash-dir`` and makes the exit status 1. The CI-sized runs are
in tests/test_fuzz_decoders.py (Hypothesis, plus this tool with the random
engine in a subprocess under the address-space limit).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import resource
import signal
import struct
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


class L:
    """The lsm modules, imported by :func:`load` (under atheris'
    instrumentation when that engine runs)."""

    loaded = False


def load(instrument: bool = False) -> None:
    if L.loaded:
        return
    ctx: Any = contextlib.nullcontext()
    if instrument:
        import atheris

        ctx = atheris.instrument_imports(include=["lsm"])
    with ctx:
        import lsm.base.checksum
        import lsm.base.coding
        import lsm.base.compression
        import lsm.base.crashfs
        import lsm.base.errors
        import lsm.base.filenames
        import lsm.batch
        import lsm.manifest.edit
        import lsm.manifest.version
        import lsm.manifest.version_set
        import lsm.sstable.block
        import lsm.sstable.bloom
        import lsm.sstable.cache
        import lsm.sstable.reader
        import lsm.sstable.writer
        import lsm.wal.format
        import lsm.wal.reader
    L.checksum, L.filenames, L.compression = lsm.base.checksum, lsm.base.filenames, lsm.base.compression
    L.MAX_SEQ, L.ValueKind, L.CrashFS = (
        lsm.base.coding.MAX_SEQ,
        lsm.base.coding.ValueKind,
        lsm.base.crashfs.CrashFS,
    )
    L.CorruptionError, L.InvalidDatabaseError = (
        lsm.base.errors.CorruptionError,
        lsm.base.errors.InvalidDatabaseError,
    )
    L.batch, L.edit, L.version, L.version_set = (
        lsm.batch,
        lsm.manifest.edit,
        lsm.manifest.version,
        lsm.manifest.version_set,
    )
    L.block, L.bloom, L.cache = lsm.sstable.block, lsm.sstable.bloom, lsm.sstable.cache
    L.reader, L.writer = lsm.sstable.reader, lsm.sstable.writer
    L.wal_format, L.wal_reader = lsm.wal.format, lsm.wal.reader
    L.loaded = True


class Violation(AssertionError):
    """A decoder broke its contract (wrong data, not an exception type)."""


class Hang(BaseException):
    """No answer within the timeout. A BaseException, so that no decoder's
    ``except Exception`` can turn it into a CorruptionError."""


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise Hang in the main thread after ``seconds`` (0: no limit)."""
    if not seconds or not hasattr(signal, "setitimer"):
        yield
        return

    def on_alarm(_sig: int, _frame: object) -> None:
        raise Hang(f"no answer within {seconds} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def check(cond: bool, what: str) -> None:
    if not cond:
        raise Violation(what)


# ==================================================================================== targets
@dataclass
class Target:
    name: str
    run: Callable[[bytes], str]
    """Feed the input to the decoder; "accepted" or "rejected" (the
    documented error). Anything else it raises is a violation."""
    seeds: Callable[[], list[bytes]]
    fix: Callable[[bytes], bytes] | None = None
    """Recompute the checksums along the input's (mutated) framing."""
    doc: str = ""
    _seeds: list[bytes] = field(default_factory=list)

    def seed_list(self) -> list[bytes]:
        if not self._seeds:
            self._seeds = self.seeds()
        return self._seeds


def _masked(data: bytes | bytearray | memoryview) -> int:
    return L.checksum.masked_crc(data)


# ---- WAL ---------------------------------------------------------------------------------------
_WAL_PATH = "/w/00000000000000000005.wal"
_REC = struct.Struct("<IIQIQ")


def _batch_body(ops: list[tuple[int, bytes, bytes]]) -> bytes:
    return b"".join(L.batch.OP_HEADER.pack(k, len(a), len(b)) + a + b for k, a, b in ops)


def _sample_batches() -> list[list[tuple[int, bytes, bytes]]]:
    put, delete = L.ValueKind.PUT, L.ValueKind.DELETE
    out = [
        [(put, b"k", b"v")],
        [(delete, b"gone", b"")],
        [(put, b"a" * 20, b"x" * 90), (delete, b"b", b""), (put, b"", b"")],
        [(put, b"key%d" % i, b"value%d" % i) for i in range(5)],
    ]
    rd = getattr(L.ValueKind, "RANGE_DELETE", None)
    if rd is not None:
        out.append([(rd, b"c", b"f"), (put, b"d", b"new")])
    return out


def _wal_segment(first: int, tail: bytes = b"", *, version: int = 2, lag: int = 0) -> bytes:
    """A segment of the sample batches. Version 2 records carry ``synced``
    as a FULL writer writes it (each record's own offset), or ``lag``
    records behind it (as while a group sync runs: the rule then forgives
    damage that an older ``synced`` does not cover)."""
    wf = L.wal_format
    data = bytearray(wf.encode_segment_header(first, version))
    seq = first
    ends = [len(data)]  # ends[k]: where record k starts
    for i, ops in enumerate(_sample_batches() * 2):
        ts, body = 1_700_000_000_000_000 + i, _batch_body(ops)
        if version == 1:
            data += wf.encode_record_v1(seq, len(ops), ts, body)
        else:
            k = len(ends) - 1 - lag
            data += wf.encode_record(seq, len(ops), ts, body, ends[k] if k >= 0 else 0)
        ends.append(len(data))
        seq += len(ops)
    return bytes(data) + tail


def _wal_version(data: bytes) -> int:
    """The version a (maybe damaged) segment header claims: 1 or 2 (2 when unknown)."""
    return 1 if len(data) >= 12 and struct.unpack_from("<I", data, 8)[0] == 1 else 2


def _reencode(r: Any, version: int) -> bytes:
    wf = L.wal_format
    if version == 1:
        return wf.encode_record_v1(r.seq, r.count, r.timestamp_us, r.body)
    return wf.encode_record(r.seq, r.count, r.timestamp_us, r.body, r.synced)


def fix_wal(data: bytes) -> bytes:
    """Recompute the header crc and every record crc along the length chain."""
    b = bytearray(data)
    hs = L.wal_format.SEGMENT_HEADER_SIZE
    rh = L.wal_format.RECORD_HEADER_SIZE_V1 if _wal_version(data) == 1 else L.wal_format.RECORD_HEADER_SIZE
    if len(b) >= hs:
        struct.pack_into("<I", b, hs - 4, _masked(b[: hs - 4]))
    off = hs
    while off + rh <= len(b):
        (length,) = struct.unpack_from("<I", b, off + 4)
        end = off + rh + length
        if end > len(b) or not any(b[off : off + rh]):
            break
        struct.pack_into("<I", b, off, _masked(b[off + 4 : end]))
        off = end
    return bytes(b)


def _check_scan(s: Any, data: bytes, first: int | None) -> None:
    rh = L.wal_format.RECORD_HEADER_SIZE_V1 if s.version == 1 else L.wal_format.RECORD_HEADER_SIZE
    expect = s.first_seq
    end = s.valid_end
    for r in s.records:
        raw = _reencode(r, s.version)
        check(
            data[r.offset : r.offset + len(raw)] == raw,
            f"record at {r.offset} does not re-encode to its bytes",
        )
        check(r.seq == expect, f"record at {r.offset}: seq {r.seq}, expected {expect}")
        check(1 <= r.count and r.seq + r.count - 1 <= L.MAX_SEQ, f"record at {r.offset}: bad count {r.count}")
        expect = r.seq + r.count
        end = r.offset + rh + len(r.body)
    if s.records:
        check(s.valid_end == end, f"valid_end {s.valid_end}, last record ends at {end}")
        check(
            first is None or s.first_seq == first, "records returned under a header that contradicts the name"
        )
    check(0 <= s.valid_end <= len(data), f"valid_end {s.valid_end} outside the file")
    if s.damage is None:
        check(not any(data[s.valid_end :]), "clean scan with non-zero bytes after valid_end")
    else:
        check(0 <= s.damage.offset <= len(data), f"damage offset {s.damage.offset} outside the file")


def run_wal_segment(data: bytes) -> str:
    s = L.wal_reader.scan_segment_bytes(data, _WAL_PATH)  # contract: never raises (OSError only, from I/O)
    _check_scan(s, data, 5)
    return "accepted" if s.damage is None else "rejected"


_SEP = b"\xfe--next-segment--\xfe"


class _MemDir:
    def __init__(self, files: dict[str, bytes]):
        self.files = files

    def listdir(self, _d: str) -> list[str]:
        return sorted(self.files)

    def read_file(self, path: str) -> bytes:
        return self.files[os.path.basename(path)]


def run_wal_replay(data: bytes) -> str:
    """Segments separated by _SEP, each named after the first_seq in its
    header (when there is one): replay from two start points under every
    mode. Every mode that succeeds returns what point_in_time returns."""
    files: dict[str, bytes] = {}
    for i, seg in enumerate(data.split(_SEP)[:6]):
        first = struct.unpack_from("<Q", seg, 12)[0] if len(seg) >= 20 else i + 1
        files[L.filenames.wal_name(min(first, 10**20 - 1))] = seg
    names = sorted(files)
    firsts = [L.filenames.parse_wal(n) for n in names]
    result = "rejected"
    for start in sorted({0, max(0, firsts[0] - 1), max(0, firsts[-1] - 1)}):
        got = {}
        for mode in ("point_in_time", "tolerate_tail", "absolute"):
            try:
                r = L.wal_reader.replay(_MemDir(files), "/w", start_seq=start, mode=mode)  # type: ignore[arg-type]
            except L.CorruptionError as e:
                check(mode != "point_in_time", f"point_in_time raised {e!r}")
                check(e.path is not None and os.path.basename(e.path) in files, f"error names {e.path}")
                continue
            seqs = [(x.seq, x.count, x.body) for x in r.records]
            got[mode] = seqs
            check(seqs == got["point_in_time"], f"{mode} returned other records than point_in_time")
            expect = start + 1
            for x in r.records:
                check(x.seq == expect, f"{mode}: record {x.seq}, expected {expect}")
                seg = files[os.path.basename(x.path)]
                raw = _reencode(x, _wal_version(seg))
                check(seg[x.offset : x.offset + len(raw)] == raw, f"{mode}: record does not re-encode")
                expect = x.seq + x.count
            check(r.last_seq == expect - 1, f"{mode}: last_seq {r.last_seq}, records end at {expect - 1}")
            for p in r.dropped_segments + ([r.truncate[0]] if r.truncate else []):
                check(os.path.basename(p) in files, f"{mode}: cuts a file that does not exist: {p}")
            if r.truncate:
                check(
                    0 < r.truncate[1] <= len(files[os.path.basename(r.truncate[0])]), "truncate past the end"
                )
            if mode == "absolute":
                result = "accepted"
    return result


def fix_wal_replay(data: bytes) -> bytes:
    return _SEP.join(fix_wal(s) for s in data.split(_SEP))


# ---- write batch -------------------------------------------------------------------------------
def run_batch_body(data: bytes) -> str:
    count = int.from_bytes(data[:2], "little")
    body = data[2:]
    try:
        ops = L.batch.decode_body(body, count, "fuzz", 0)
    except L.CorruptionError as e:
        check(e.path == "fuzz", "error does not name the record")
        return "rejected"
    check(len(ops) == count, f"{len(ops)} ops for count {count}")
    check(_batch_body(ops) == body, "decoded ops do not re-encode to the body")
    return "accepted"


def fix_batch(data: bytes) -> bytes:
    """Set the count to the number of ops the body frames."""
    body, pos, n = data[2:], 0, 0
    while pos + 9 <= len(body):
        _k, a, b = L.batch.OP_HEADER.unpack_from(body, pos)
        pos += 9 + a + b
        n += 1
    return (n & 0xFFFF).to_bytes(2, "little") + body


def _seed_batches() -> list[bytes]:
    return [len(ops).to_bytes(2, "little") + _batch_body(ops) for ops in _sample_batches()]


# ---- sstable pieces ----------------------------------------------------------------------------
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
    f = L.block.FOOTER.unpack(data[-L.block.FOOTER_SIZE :])
    return f[6], (f[0], f[1]), (f[2], f[3]), (f[4], f[5])


def _meta_blocks(table: bytes) -> dict[str, bytes]:
    """Payloads and framed blocks of a valid table, for the block-level seeds."""
    t = L.block.BLOCK_TRAILER_SIZE
    _v, filt, props, index = _footer(table)
    out = {}
    for name, (off, size) in (("filter", filt), ("props", props), ("index", index)):
        if size or name != "filter":
            framed = table[off : off + size + t]
            out[name + "_framed"] = framed
            out[name] = L.block.unframe_block(framed, True)
    handles = [L.block.HANDLE.unpack(v) for v in L.block.decode_block(out["index"])[2]]
    if handles:
        off, size = handles[0]
        out["data_framed"] = table[off : off + size + t]
        out["data"] = L.block.unframe_block(out["data_framed"], True)
    return out


def _zstd_blocks() -> list[bytes]:
    """Framed zstd-compressed blocks (stored + trailer)."""
    out = []
    for n, size in ((3, 5), (20, 40), (60, 200)):
        keys = [b"key%05d" % i for i in range(n)]
        payload = L.block.encode_block(keys, [(i + 1) << 8 | 1 for i in range(n)], [b"v" * size] * n)
        stored, trailer = L.block.frame_block(payload, L.compression.ZSTD)
        assert trailer[0] == L.compression.ZSTD
        out.append(stored + trailer)
    return out


def fix_block_crc(b: bytearray, off: int, size: int) -> None:
    """Recompute the crc of the block at ``off`` (``size`` stored bytes) in place."""
    t = L.block.BLOCK_TRAILER_SIZE
    if 0 <= off and off + size + t <= len(b):
        struct.pack_into("<I", b, off + size + 5, L.checksum.mask(L.checksum.crc(b[off : off + size + 5])))


def fix_framed(data: bytes) -> bytes:
    b = bytearray(data)
    if len(b) >= L.block.BLOCK_TRAILER_SIZE:
        fix_block_crc(b, 0, len(b) - L.block.BLOCK_TRAILER_SIZE)
    return bytes(b)


def fix_footer(data: bytes) -> bytes:
    b = bytearray(data)
    if len(b) >= L.block.FOOTER_SIZE:
        f0 = len(b) - L.block.FOOTER_SIZE
        struct.pack_into("<I", b, f0 + 52, L.checksum.mask(L.checksum.crc(b[f0 : f0 + 52])))
    return bytes(b)


def fix_table(data: bytes) -> bytes:
    """Footer crc, the meta blocks' crcs, and the crc of every data block the
    (possibly mutated) index names."""
    b = bytearray(fix_footer(data))
    if len(b) < L.block.FOOTER_SIZE:
        return bytes(b)
    version, filt, props, index = _footer(bytes(b))
    handles = [filt, props, index]
    with contextlib.suppress(ValueError, struct.error):
        payload = L.block.unframe_block(bytes(b[props[0] : props[0] + props[1] + 9]), False)
        if version != 1 and hasattr(L.block, "decode_range_dels_props"):
            handles.append(L.block.decode_range_dels_props(payload)[0])
    with contextlib.suppress(ValueError, struct.error):
        payload = L.block.unframe_block(bytes(b[index[0] : index[0] + index[1] + 9]), False)
        handles += [L.block.HANDLE.unpack(v) for v in L.block.decode_block(payload, True)[2][:10000]]
    for off, size in handles:
        fix_block_crc(b, off, size)
    return bytes(b)


def run_sst_footer(data: bytes) -> str:
    dec = getattr(L.block, "decode_footer_version", None)
    try:
        if dec is not None:
            version, *hs = dec(data)
        else:
            version, hs = 1, list(L.block.decode_footer(data))
    except ValueError:
        return "rejected"
    args = (*hs, version) if dec is not None else hs
    check(L.block.encode_footer(*args) == data, "an accepted footer does not re-encode to itself")
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
            out = L.block.unframe_block(data, verify)
        except ValueError:
            continue
        (usize,) = struct.unpack_from("<I", data, len(data) - 8)
        check(len(out) == usize, f"payload of {len(out)} bytes, trailer says {usize}")
        result = "accepted"
    return result


def run_sst_properties(data: bytes) -> str:
    try:
        props, _n = L.block.decode_properties(data, 1 << 20)
    except ValueError:
        return "rejected"
    check(
        isinstance(props.smallest, bytes) and isinstance(props.largest, bytes), "properties of the wrong type"
    )
    if hasattr(L.block, "decode_range_dels_props"):
        with contextlib.suppress(ValueError):
            L.block.decode_range_dels_props(data)
    return "accepted"


_PROBE_KEYS = [b"", b"a", b"b", b"k1", b"key3", b"x" * 20, b"\xff"]


def run_bloom(data: bytes) -> str:
    try:
        f = L.bloom.BloomFilter(data)
    except ValueError:
        return "rejected"
    for k in _PROBE_KEYS:
        check(f.may_contain(k) in (True, False), "may_contain returned a non-bool")
    check(len(f) <= f.m, f"{len(f)} bits set of {f.m}")
    return "accepted"


def _seed_blooms() -> list[bytes]:
    return [
        L.bloom.BloomFilter.build([b"k%d" % i for i in range(n)], bpk)
        for n, bpk in ((0, 10), (3, 10), (60, 10), (40, 2))
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


# ---- manifest, CURRENT, version edits ------------------------------------------------------------
def _seed_manifests() -> tuple[list[bytes], list[bytes]]:
    """Manifest files and version-edit payloads written by a VersionSet."""
    fs = L.CrashFS()
    vs = L.version_set.VersionSet(fs, "/m")
    vs.create()
    FileMeta, VersionEdit = L.version.FileMeta, L.edit.VersionEdit
    edits = []
    nums = []
    for i in range(3):
        n = vs.new_file_number()
        nums.append(n)
        e = VersionEdit(
            added=[(0, FileMeta(n, 1000 + i, b"a%d" % i, b"z%d" % i, 1 + 10 * i, 10 + 10 * i, 5, 1))],
            last_seq=10 + 10 * i,
            flushed_seq=10 + 10 * i,
        )
        vs.log_and_apply(e)
        edits.append(e.encode())
    n = vs.new_file_number()
    e = VersionEdit(
        removed=[(0, nums[0]), (0, nums[1])], added=[(1, FileMeta(n, 5000, b"a0", b"z1", 1, 20, 10, 0))]
    )
    vs.log_and_apply(e)
    edits.append(e.encode())
    path = L.filenames.join("/m", L.filenames.manifest_name(vs.manifest_number))
    vs.close()
    return [fs.read_file(path)], edits


def fix_manifest(data: bytes) -> bytes:
    b = bytearray(data)
    if len(b) >= 16:
        struct.pack_into("<I", b, 12, L.checksum.mask(L.checksum.crc(b[:12])))
    off = 16
    while off + 8 <= len(b):
        (length,) = struct.unpack_from("<I", b, off + 4)
        end = off + 8 + length
        if end > len(b):
            break
        struct.pack_into(
            "<I",
            b,
            off,
            L.checksum.mask(L.checksum.crc(b[off + 8 : end], L.checksum.crc(b[off + 4 : off + 8]))),
        )
        off = end
    return bytes(b)


def run_manifest(data: bytes) -> str:
    path = "/m/MANIFEST-000001"
    try:
        version, nfn, last, flushed, torn = L.version_set._replay(data, path, 7)
    except (L.CorruptionError, L.InvalidDatabaseError) as e:
        check(getattr(e, "path", path) in (path, None) or path in str(e), f"error names {e}")
        result = "rejected"
    except ValueError as e:  # documented: a manifest needing more levels than the database has
        check(str(e).startswith("num_levels"), f"ValueError {e}")
        result = "rejected"
    else:
        version.check()  # AssertionError (a violation) if the replayed version breaks an invariant
        check(
            all(f.number < nfn for _l, f in version.all_files()), "a file number not below next_file_number"
        )
        check(flushed <= last, "flushed_seq above last_seq")
        check(torn is None or 16 <= torn <= len(data), f"torn tail at {torn}")
        result = "accepted"
    # The same bytes through VersionSet.recover (CURRENT, then the manifest, then the tables,
    # which do not exist here: an accepted replay naming files fails on them).
    fs = L.CrashFS()
    fs.makedirs("/m")
    fs.write_file(path, data, sync=False)
    fs.write_file("/m/CURRENT", b"MANIFEST-000001\n", sync=False)
    try:
        L.version_set.VersionSet(fs, "/m").recover()
    except (L.CorruptionError, L.InvalidDatabaseError):
        pass
    except ValueError as e:
        check(str(e).startswith("num_levels"), f"ValueError {e}")
    return result


def run_current(data: bytes) -> str:
    fs = L.CrashFS()
    fs.makedirs("/c")
    fs.write_file("/c/CURRENT", data, sync=False)
    vs = L.version_set.VersionSet(fs, "/c")
    try:
        number = vs._read_current()
    except L.CorruptionError as e:
        check(e.path == "/c/CURRENT", f"error names {e.path}")
        return "rejected"
    check(data == b"MANIFEST-%06d\n" % number, f"accepted {data!r} as manifest {number}")
    return "accepted"


def run_version_edit(data: bytes) -> str:
    L.edit.is_edit_prefix(data)  # a bool, never an exception
    try:
        e = L.edit.VersionEdit.decode(data, "fuzz", 100)
    except L.CorruptionError as err:
        check(
            err.path == "fuzz" and err.offset is not None and 100 <= err.offset <= 100 + len(data),
            f"error at {err.path}:{err.offset}",
        )
        return "rejected"
    check(L.edit.VersionEdit.decode(e.encode()) == e, "a decoded edit does not round-trip")
    return "accepted"


def targets() -> dict[str, Target]:
    """Every target by name (imports lsm if :func:`load` did not yet)."""
    load()
    manifests: list[Any] = []

    def manifest_seeds() -> tuple[list[bytes], list[bytes]]:
        if not manifests:
            manifests.extend(_seed_manifests())
        return manifests[0], manifests[1]

    def metas() -> list[dict[str, bytes]]:
        return [_meta_blocks(t) for t in _seed_tables()]

    ts = [
        Target(
            "wal_segment",
            run_wal_segment,
            lambda: [
                _wal_segment(5),
                _wal_segment(5, bytes(64)),
                _wal_segment(5, lag=3),
                _wal_segment(5, version=1),
                L.wal_format.encode_segment_header(5),
            ],
            fix_wal,
            "scan_segment_bytes of one segment",
        ),
        Target(
            "wal_replay",
            run_wal_replay,
            lambda: [
                _wal_segment(1) + _SEP + _wal_segment(27),
                _wal_segment(1) + _SEP + _wal_segment(27) + _SEP + L.wal_format.encode_segment_header(53),
                _wal_segment(1, version=1) + _SEP + _wal_segment(27, lag=2),
            ],
            fix_wal_replay,
            "replay of up to six segments, every mode, two start points",
        ),
        Target("batch_body", run_batch_body, _seed_batches, fix_batch, "lsm.batch.decode_body"),
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
        Target(
            "manifest",
            run_manifest,
            lambda: manifest_seeds()[0],
            fix_manifest,
            "manifest replay and VersionSet.recover",
        ),
        Target(
            "current",
            run_current,
            lambda: [b"MANIFEST-000001\n", b"MANIFEST-123456789\n", b"MANIFEST-18446744073709551615\n"],
            None,
            "the CURRENT file",
        ),
        Target("version_edit", run_version_edit, lambda: manifest_seeds()[1], None, "VersionEdit.decode"),
    ]
    return {t.name: t for t in ts}


# ==================================================================================== mutation
_INTS = [
    0,
    1,
    2,
    7,
    8,
    0x7F,
    0x80,
    0xFF,
    0x100,
    0x7FFF,
    0xFFFF,
    0x7FFFFFFF,
    0x80000000,
    0xFFFFFFFF,
    1 << 28,
    (1 << 28) + 1,
    1 << 32,
    1 << 56,
    (1 << 63),
    (1 << 64) - 1,
]


def mutate(
    data: bytes, pick: Callable[[int], int], seeds: list[bytes], fix: Callable[[bytes], bytes] | None
) -> bytes:
    """1-8 mutations of ``data``; ``pick(n)`` chooses in ``0..n-1`` (a
    random.Random or a Hypothesis draw). Then, half the time, ``fix``."""
    b = bytearray(data)
    for _ in range(1 + pick(1 + pick(8))):  # mostly one or two: deep inputs stay nearly valid
        op = pick(11)
        n = len(b)
        where = pick(4)  # headers, trailers and footers sit at the ends: favour them
        pos = pick(min(n, 40) + 1) if where == 1 else n - pick(min(n, 40) + 1) if where == 2 else pick(n + 1)
        if op == 0 and n:
            b[min(pos, n - 1)] ^= 1 << pick(8)
        elif op == 1 and n:
            b[min(pos, n - 1)] = (0, 1, 0x7F, 0x80, 0xFF, pick(256))[pick(6)]
        elif op == 2 and n:
            width = (1, 2, 4, 8)[pick(4)]
            value = _INTS[pick(len(_INTS))] % (1 << 8 * width)
            if pick(4) == 0:
                value = (value + pick(5) - 2) % (1 << 8 * width)
            p = min(pos, max(0, n - width))
            b[p : p + width] = value.to_bytes(width, "little")
        elif op == 3:
            b[pos:pos] = bytes(pick(256) for _ in range(1 + pick(16)))
        elif op == 4 and n:
            del b[pos : pos + 1 + pick(16)]
        elif op == 5:
            del b[pos:]
        elif op == 6 and n:
            a = pick(n)
            chunk = b[a : a + 1 + pick(32)]
            b[pos:pos] = chunk
        elif op == 7 and seeds:
            other = seeds[pick(len(seeds))]
            b = b[:pos] + bytearray(other[pick(len(other) + 1) :])
        elif op == 8 and n:
            b[pos : pos + 1 + pick(32)] = bytes(len(b[pos : pos + 1 + pick(32)]))
        elif op == 9 and n:
            b[min(pos, n - 1)] = (b[min(pos, n - 1)] + pick(3) - 1) % 256
        elif op == 10:  # a long run of one byte (one already there, or any)
            byte = b[pick(n)] if n and pick(2) else pick(256)
            b[pos:pos] = bytes([byte]) * (16, 300, 5000)[pick(3)]
    out = bytes(b)
    if fix is not None and pick(2):
        out = fix(out)
    return out


def generate(t: Target, rng: random.Random) -> bytes:
    """One input for ``t``: usually a mutated seed, sometimes random bytes."""
    seeds = t.seed_list()
    if rng.random() < 0.05:
        return rng.randbytes(rng.randint(0, 300))
    return mutate(seeds[rng.randrange(len(seeds))], rng.randrange, seeds, t.fix)


# ==================================================================================== running
@dataclass
class Stats:
    runs: int = 0
    accepted: int = 0
    rejected: int = 0
    violations: list[str] = field(default_factory=list)
    seconds: float = 0.0


def run_one(t: Target, data: bytes, timeout: float) -> str:
    """``t.run(data)`` under the timer: "accepted", "rejected", or raises
    (a violation)."""
    with time_limit(timeout):
        return t.run(data)


def record_violation(t: Target, data: bytes, exc: BaseException, crash_dir: str | None) -> str:
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    where = ""
    if crash_dir:
        os.makedirs(crash_dir, exist_ok=True)
        where = os.path.join(crash_dir, f"{t.name}-{abs(hash(data)) % 10**10}.bin")
        with open(where, "wb") as f:
            f.write(data)
        where = f"\n  saved as {where}: replay with python tools/fuzz_atheris.py --target {t.name} --replay {where}"
    msg = f"VIOLATION in {t.name}: {type(exc).__name__}: {exc}\n  input ({len(data)} bytes): {data[:256].hex()}{where}\n{text}"
    print(msg, file=sys.stderr, flush=True)
    return msg


def fuzz_random(ts: list[Target], args: argparse.Namespace) -> dict[str, Stats]:
    rng = random.Random(args.seed)
    stats = {t.name: Stats() for t in ts}
    deadline = time.monotonic() + args.seconds if args.seconds else None
    for i in range(args.runs if args.runs else 1 << 62):
        if deadline is not None and time.monotonic() > deadline:
            break
        t = ts[i % len(ts)]
        s = stats[t.name]
        data = generate(t, rng)
        t0 = time.perf_counter()
        try:
            outcome = run_one(t, data, args.timeout)
        except (Exception, Hang) as e:  # noqa: BLE001 - anything but the documented error is a violation
            s.violations.append(record_violation(t, data, e, args.crash_dir))
            if args.stop_on_violation:
                break
        else:
            s.accepted += outcome == "accepted"
            s.rejected += outcome == "rejected"
        s.seconds += time.perf_counter() - t0
        s.runs += 1
    return stats


def fuzz_atheris(ts: list[Target], args: argparse.Namespace, libfuzzer_args: list[str]) -> None:
    import atheris

    single = len(ts) == 1
    rnd = random.Random(args.seed)

    def split(data: bytes) -> tuple[Target, bytes]:
        if single:
            return ts[0], data
        return (ts[data[0] % len(ts)], data[1:]) if data else (ts[0], b"")

    def test_one_input(data: bytes) -> None:
        t, payload = split(data)
        run_one(t, payload, args.timeout)  # a violation propagates: libFuzzer reports it and saves the input

    def custom_mutator(data: bytes, max_size: int, seed: int) -> bytes:
        rnd.seed(seed)
        out = atheris.Mutate(data, max_size)
        t, payload = split(out)
        if t.fix is not None and rnd.random() < 0.5:
            payload = t.fix(payload)
            out = payload if single else out[:1] + payload
        return out[:max_size]

    corpus = args.corpus or tempfile.mkdtemp(prefix="lsm-fuzz-corpus-")
    os.makedirs(corpus, exist_ok=True)
    for k, t in enumerate(ts):
        for j, s in enumerate(t.seed_list()):
            with open(os.path.join(corpus, f"seed-{t.name}-{j}"), "wb") as f:
                f.write(s if single else bytes([k]) + s)
    argv = [sys.argv[0], *libfuzzer_args]
    if args.runs and not any(a.startswith("-runs=") for a in argv):
        argv.append(f"-runs={args.runs}")
    if args.seconds and not any(a.startswith("-max_total_time=") for a in argv):
        argv.append(f"-max_total_time={int(args.seconds)}")
    argv.append(f"-seed={args.seed}")
    argv.append(corpus)
    print(f"atheris: targets {', '.join(t.name for t in ts)}; corpus {corpus}", flush=True)
    atheris.Setup(argv, test_one_input, custom_mutator=custom_mutator)
    atheris.Fuzz()


def limit_address_space(extra_mb: int) -> int:
    """Cap the address space at what the process maps now plus
    ``extra_mb``: a huge allocation then fails with MemoryError. Returns the
    limit in bytes (0: not set)."""
    if extra_mb <= 0:
        return 0
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            vm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    except (OSError, StopIteration):
        return 0
    limit = vm + extra_mb * 1024 * 1024
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    return limit


def report(stats: dict[str, Stats], engine: str, seed: int) -> int:
    total = Stats()
    log = os.environ.get("LSM_RELIABILITY_LOG")
    for name, s in stats.items():
        print(
            f"FUZZ target={name} runs={s.runs} accepted={s.accepted} rejected={s.rejected} "
            f"violations={len(s.violations)} seconds={s.seconds:.1f}",
            flush=True,
        )
        total.runs += s.runs
        total.accepted += s.accepted
        total.rejected += s.rejected
        total.violations += s.violations
        if log:
            with open(log, "a", encoding="utf-8") as f:
                f.write(
                    json.dumps(
                        {
                            "family": "fuzz",
                            "target": name,
                            "engine": engine,
                            "seed": seed,
                            "cases": s.runs,
                            "accepted": s.accepted,
                            "rejected": s.rejected,
                            "violations": len(s.violations),
                        },
                        sort_keys=True,
                    )
                    + "\n"
                )
    print(
        f"FUZZ total runs={total.runs} accepted={total.accepted} rejected={total.rejected} "
        f"violations={len(total.violations)} engine={engine} seed={seed}",
        flush=True,
    )
    return 1 if total.violations else 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    libfuzzer_args: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, libfuzzer_args = argv[:i], argv[i + 1 :]
    p = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--target", default="all", help="a target name, a comma-separated list, or 'all' (default)"
    )
    p.add_argument(
        "--engine",
        choices=("auto", "atheris", "random"),
        default="auto",
        help="atheris (coverage-guided), random (seeded mutation loop), auto: atheris if installed",
    )
    p.add_argument("--runs", type=int, default=0, help="inputs to run in total (0: until --seconds)")
    p.add_argument("--seconds", type=float, default=0, help="stop after this long (0: until --runs)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: random, printed)")
    p.add_argument(
        "--timeout", type=float, default=10.0, help="seconds one input may take (a hang), 0: no limit"
    )
    p.add_argument(
        "--as-limit-mb",
        type=int,
        default=1024,
        help="address-space headroom in MiB above start-up (0: no limit); beyond it allocation fails",
    )
    p.add_argument("--crash-dir", default=None, help="save each violating input here")
    p.add_argument("--corpus", default=None, help="atheris: corpus directory (default: a temporary one)")
    p.add_argument(
        "--replay", default=None, metavar="FILE", help="run one saved input against --target and exit"
    )
    p.add_argument(
        "--keep-going",
        dest="stop_on_violation",
        action="store_false",
        help="random engine: do not stop at the first violation",
    )
    p.add_argument("--list", action="store_true", help="list the targets and exit")
    args = p.parse_args(argv)
    limited = any(a.startswith(("-runs=", "-max_total_time=")) for a in libfuzzer_args)
    if not args.runs and not args.seconds and not args.replay and not args.list and not limited:
        args.runs = 5000
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1 << 31)

    engine = args.engine
    if engine == "auto":
        try:
            import atheris  # noqa: F401
        except ImportError:
            engine = "random"
            print(
                "atheris is not installed (pip install -e '.[fuzz]'): using the random mutation engine",
                flush=True,
            )
        else:
            engine = "atheris"
    load(instrument=engine == "atheris" and not args.replay and not args.list)
    all_targets = targets()
    if args.list:
        for t in all_targets.values():
            print(f"{t.name:15} {t.doc}")
        return 0
    names = list(all_targets) if args.target == "all" else args.target.split(",")
    unknown = [n for n in names if n not in all_targets]
    if unknown:
        p.error(f"--target: unknown {', '.join(unknown)} (known: {', '.join(all_targets)})")
    ts = [all_targets[n] for n in names]
    for t in ts:
        t.seed_list()  # build the seeds before the address-space limit
    limit = limit_address_space(args.as_limit_mb)
    if args.replay:
        with open(args.replay, "rb") as f:
            data = f.read()
        try:
            print(f"{ts[0].name}: {run_one(ts[0], data, args.timeout)}")
        except (Exception, Hang) as e:  # noqa: BLE001 - as above
            record_violation(ts[0], data, e, None)
            return 1
        return 0
    print(
        f"fuzz: engine={engine} seed={args.seed} targets={','.join(names)} "
        f"address-space limit={limit >> 20 if limit else 'none'} MiB; replay with --seed {args.seed}",
        flush=True,
    )
    if engine == "atheris":
        fuzz_atheris(ts, args, libfuzzer_args)
        return 0
    return report(fuzz_random(ts, args), engine, args.seed)


if __name__ == "__main__":
    sys.exit(main())
