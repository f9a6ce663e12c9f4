"""Fuzzing every decoder (issue 5, family 8), CI-sized.

The targets, seeds, mutations and contracts live in tools/fuzz_atheris.py
(the long-run harness); here Hypothesis drives them:

* ``test_mutated_inputs``: per target, ``LSM_FUZZ_EXAMPLES`` (default
  150) mutations of valid encodings (half of them with their checksums
  recomputed, so the bytes behind the checksums are fuzzed too);
* ``test_random_inputs``: per target, random bytes (a third as many);
* each run under a timer (a hang fails) and tracemalloc: the peak of
  traced allocations must stay within a bound proportional to the input
  (a length field must not make a decoder allocate beyond it; zstd
  targets may produce up to 32768 bytes per stored byte, the format's
  limit);
* ``test_harness_random_engine``: the tool itself in a subprocess with the
  random engine under an address-space limit (RLIMIT_AS 512 MiB above
  start-up, so any huge allocation, also outside Python's allocator, is a
  MemoryError and a violation); ``LSM_FUZZ_RUNS`` (default 40 times
  ``LSM_FUZZ_EXAMPLES``) inputs,
  ``LSM_FUZZ_SEED`` replays a run (the seed is printed);
* ``test_harness_atheris_engine``: a short coverage-guided run when
  atheris is installed (the ``fuzz`` extra), skipped otherwise;
* one regression test per decoder bug the fuzzing found.

Counts (examples per target, violations) are printed (``-s``) and
appended to ``$LSM_RELIABILITY_LOG`` as JSON lines.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import subprocess
import sys
import tracemalloc
from typing import Any

import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lsm
from lsm.base import compression, filenames
from lsm.base.crashfs import CrashFS
from lsm.base.errors import CorruptionError
from lsm.manifest.version_set import VersionSet
from lsm.sstable.block import encode_block
from lsm.sstable.bloom import FILTER_HEADER
from lsm.sstable.bloom import RoaringBloomFilter as BloomFilter  # the legacy kind this regression is about
from lsm.sstable.format import frame_block, unframe_block
from tests.reliability_log import record

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(ROOT, "tools", "fuzz_atheris.py")
_spec = importlib.util.spec_from_file_location("fuzz_atheris", TOOL)
assert _spec is not None and _spec.loader is not None
fz: Any = importlib.util.module_from_spec(_spec)
sys.modules["fuzz_atheris"] = fz
_spec.loader.exec_module(fz)

EXAMPLES = int(os.environ.get("LSM_FUZZ_EXAMPLES", "150"))
TARGETS = fz.targets()
ZSTD_TARGETS = {"sst_unframe", "sst_table"}
COUNTS: dict[tuple[str, str], dict[str, int]] = {}


def _report(family: str, cases: int, violations: int, **extra: object) -> None:
    line = {"family": family, "cases": cases, "violations": violations, **extra}
    print(f"RELIABILITY {json.dumps(line, sort_keys=True)}")
    record(family, cases=cases, violations=violations, **extra)


@pytest.fixture(scope="module", autouse=True)
def _summary():
    yield
    for (kind, name), c in sorted(COUNTS.items()):
        _report(
            f"fuzz_hypothesis_{kind}",
            c["runs"],
            c["violations"],
            target=name,
            accepted=c["accepted"],
            rejected=c["rejected"],
        )


def _bounded_run(name: str, kind: str, data: bytes) -> None:
    """Run target ``name`` on ``data`` under the timer and tracemalloc."""
    c = COUNTS.setdefault((kind, name), {"runs": 0, "accepted": 0, "rejected": 0, "violations": 0})
    c["runs"] += 1
    factor = 33_000 if name in ZSTD_TARGETS else 300
    bound = (8 << 20) + factor * len(data)
    tracemalloc.start()
    try:
        outcome = fz.run_one(TARGETS[name], data, 30.0)
        peak = tracemalloc.get_traced_memory()[1]
    except BaseException:
        c["violations"] += 1
        raise
    finally:
        tracemalloc.stop()
    if peak > bound:
        c["violations"] += 1
        raise AssertionError(f"{name}: {peak} bytes allocated for a {len(data)}-byte input (bound {bound})")
    c[outcome] += 1


FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


@pytest.mark.parametrize("name", list(TARGETS))
@FUZZ_SETTINGS
@given(data=st.data())
def test_mutated_inputs(name: str, data: st.DataObject) -> None:
    t = TARGETS[name]
    seeds = t.seed_list()
    seed = seeds[data.draw(st.integers(0, len(seeds) - 1), label="seed")]

    def pick(n: int) -> int:
        return data.draw(st.integers(0, n - 1)) if n > 1 else 0

    _bounded_run(name, "mutated", fz.mutate(seed, pick, seeds, t.fix))


@pytest.mark.parametrize("name", list(TARGETS))
@settings(FUZZ_SETTINGS, max_examples=max(10, EXAMPLES // 3))
@given(raw=st.binary(max_size=400))
def test_random_inputs(name: str, raw: bytes) -> None:
    _bounded_run(name, "random", raw)


def test_seeds_are_accepted() -> None:
    """The unmutated seeds decode (a target that rejected everything would
    fuzz nothing but its first check)."""
    for name, t in TARGETS.items():
        outcomes = [fz.run_one(t, s, 30.0) for s in t.seed_list()]
        if name != "current":  # one of its seeds names manifest 2**64-1: accepted as a name
            assert "accepted" in outcomes, name


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def test_harness_random_engine(tmp_path) -> None:
    seed = int(os.environ.get("LSM_FUZZ_SEED") or random.SystemRandom().randrange(1 << 31))
    runs = int(os.environ.get("LSM_FUZZ_RUNS") or 40 * EXAMPLES)
    cmd = [
        sys.executable,
        TOOL,
        "--engine",
        "random",
        "--runs",
        str(runs),
        "--seed",
        str(seed),
        "--as-limit-mb",
        "512",
        "--timeout",
        "30",
        "--crash-dir",
        str(tmp_path / "crashes"),
    ]
    print("replay:", " ".join(cmd[1:]))
    p = subprocess.run(
        cmd, capture_output=True, text=True, timeout=120 + runs // 20, env=_env(), cwd=ROOT, check=False
    )
    print(p.stdout)
    print(p.stderr, file=sys.stderr)
    assert p.returncode == 0, f"fuzz_atheris found violations (seed {seed}):\n{p.stderr[-5000:]}"
    assert f"FUZZ total runs={runs} " in p.stdout and " violations=0 " in p.stdout
    assert "address-space limit=" in p.stdout and "limit=none" not in p.stdout


def test_harness_atheris_engine(tmp_path) -> None:
    try:
        import atheris  # noqa: F401
    except ImportError:
        pytest.skip(
            "atheris is not installed (pip install -e '.[fuzz]'); the random engine covers the harness"
        )
    cmd = [
        sys.executable,
        TOOL,
        "--engine",
        "atheris",
        "--target",
        "version_edit,current,batch_body",
        "--runs",
        "3000",
        "--seed",
        "5",
        "--corpus",
        str(tmp_path / "corpus"),
    ]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=_env(), cwd=ROOT, check=False)
    print(p.stdout[-3000:])
    print(p.stderr[-3000:], file=sys.stderr)
    assert p.returncode == 0, p.stderr[-5000:]
    assert "Done 3000 runs" in p.stderr


def test_help() -> None:
    p = subprocess.run(
        [sys.executable, TOOL, "--help"], capture_output=True, text=True, timeout=60, env=_env(), check=False
    )
    assert p.returncode == 0 and "--engine" in p.stdout and "--as-limit-mb" in p.stdout


# ---- regressions: decoder bugs the fuzzing found ---------------------------------------------------------


def test_regression_current_with_thousands_of_digits() -> None:
    """CURRENT naming ``MANIFEST-`` and 5000 digits raised ValueError from
    int() (Python's limit on integer string conversion) instead of
    CorruptionError; so did any such name in the database directory."""
    fs = CrashFS()
    fs.makedirs("/d")
    fs.write_file("/d/CURRENT", b"MANIFEST-" + b"1" * 5000 + b"\n")
    with pytest.raises(CorruptionError, match="garbled CURRENT") as ei:
        VersionSet(fs, "/d").recover()
    assert ei.value.path == "/d/CURRENT"
    assert filenames.parse_manifest("MANIFEST-" + "1" * 5000) is None
    assert filenames.parse_sst("7" * 5000 + ".sst") is None
    assert filenames.parse_manifest("MANIFEST-000001\n") is None  # "$" matched before a final newline
    assert filenames.parse_sst("\u0661\u0662\u0663\u0664\u0665\u0666.sst") is None  # not ASCII digits
    assert filenames.parse_manifest("MANIFEST-18446744073709551615") == (1 << 64) - 1
    assert filenames.parse_sst(filenames.sst_name((1 << 64) - 1)) == (1 << 64) - 1


def test_regression_stray_file_with_non_ascii_digits(tmp_path) -> None:
    """``\\d`` matched any script's digits, and int() reads them: a stray
    file named with Arabic-Indic digits parsed as table 123456, so open
    deleted it as an orphaned table. Now it is not ours and stays."""
    d = tmp_path / "db"
    with lsm.open(d, background="inline") as db:
        db.put(b"k", b"v")
        db.flush()
    stray = d / "\u0661\u0662\u0663\u0664\u0665\u0666.sst"
    stray.write_bytes(b"not a table")
    with lsm.open(d, background="inline") as db:
        assert db.get(b"k") == b"v"
    assert stray.exists()


def _zstd_block() -> bytes:
    payload = encode_block(
        [b"key%03d" % i for i in range(30)], [(i + 1) << 8 | 1 for i in range(30)], [b"v" * 40] * 30
    )
    stored, trailer = frame_block(payload, compression.ZSTD)
    assert trailer[0] == compression.ZSTD
    return stored + trailer


def test_regression_zstd_frame_header_claiming_a_huge_size() -> None:
    """One flipped bit in a zstd frame header descriptor made the content
    size field 8 bytes wide, claiming ~8 EB: decompress() tried to
    allocate it (MemoryError, or gigabytes under overcommit). Reached from
    a data block read with paranoid_checks off. Now the claim is checked
    against the trailer's size and zstd's maximum ratio first."""
    block = bytearray(_zstd_block())
    block[4] ^= 0x80  # the frame header descriptor follows the 4-byte magic
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="zstd frame claims"):
            unframe_block(bytes(block), False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20
    with pytest.raises(ValueError, match="checksum"):
        unframe_block(bytes(block), True)


def test_zstd_frame_without_content_size_is_streamed() -> None:
    """lsm writes the content size in every frame; a frame without one is
    still read, in chunks bounded by the expected size, never by
    allocating that size up front."""
    data = b"abc" * 5000
    frame = zstandard.ZstdCompressor(write_content_size=False).compress(data)
    assert zstandard.frame_content_size(frame) == -1
    assert compression.decompress(compression.ZSTD, memoryview(frame), len(data)) == data
    with pytest.raises(ValueError, match="larger than"):
        compression.decompress(compression.ZSTD, frame, len(data) - 1)
    tracemalloc.start()
    try:
        assert compression.decompress(compression.ZSTD, frame, (1 << 32) - 1) == data
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20  # was 4 GiB: decompress() allocated max_output_size


def test_regression_zstd_damage_with_paranoid_checks_off(tmp_path) -> None:
    """Through the database: a table whose data blocks are zstd frames, the
    first frame's header damaged, read with paranoid_checks=False: the read
    fails with CorruptionError (it raised MemoryError)."""
    d = tmp_path / "db"
    with lsm.open(d, background="inline", block_size=4096, compression="zstd", min_level_to_compress=0) as db:
        for i in range(200):
            db.put(b"key%04d" % i, b"value" * 20)
        db.flush()
    (sst,) = [p for p in d.iterdir() if p.suffix == ".sst"]
    data = bytearray(sst.read_bytes())
    assert data[:4] == b"\x28\xb5\x2f\xfd"  # the first data block is a zstd frame
    data[4] ^= 0x80
    sst.write_bytes(bytes(data))
    with lsm.open(d, background="inline", paranoid_checks=False) as db:
        with pytest.raises(CorruptionError) as ei:
            db.get(b"key0000")
        assert ei.value.path == str(sst) and ei.value.offset == 0
        with pytest.raises(CorruptionError):
            list(db.items())
        db.put(b"key0001", b"newer")
        db.flush()  # a second table over the same keys: compaction must merge, so read, the damaged one
        with pytest.raises(CorruptionError):
            db.compact_range()
        assert db.health == "background_error"


def test_regression_bloom_filter_without_bitmap_bytes() -> None:
    """A filter payload of only its 5-byte header: pyroaring raised
    IndexError on the empty serialization, which escaped the decoder's
    ValueError contract (and would have escaped TableReader.open)."""
    with pytest.raises(ValueError, match="bloom filter bit set"):
        BloomFilter(FILTER_HEADER.pack(6, 64))
    good = BloomFilter.build([b"a"], 10)
    for n in range(FILTER_HEADER.size, len(good)):
        try:
            BloomFilter(good[:n])
        except ValueError:
            pass


def _counting(monkeypatch: pytest.MonkeyPatch, module: Any, name: str) -> list[int]:
    """Replace ``module.name`` (a crc function) by one that adds the bytes it
    checksums to the returned box."""
    box = [0]
    real = getattr(module, name)

    def counted(data: Any, *args: Any) -> int:
        box[0] += len(data)
        return real(data, *args)

    monkeypatch.setattr(module, name, counted)
    return box


def test_regression_manifest_probe_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by review, not by the fuzzer (its inputs are too small to
    show it): after a damaged manifest record, recovery looks for an intact
    record at every later offset, checksumming each offset's length field's
    worth. A tail whose bytes read as in-bounds lengths everywhere (a
    repeated 4-byte pattern) made that quadratic: 1 MiB of it took 17 s,
    4 MiB minutes, and the damage was then dropped as a torn tail. The
    search now has a byte budget and fails closed past it."""
    from lsm.manifest import version_set as vsm
    from lsm.manifest.edit import VersionEdit

    monkeypatch.setattr(vsm, "_PROBE_BYTES", 1 << 20)
    crc_bytes = _counting(monkeypatch, vsm, "crc")
    head = vsm.encode_header() + vsm.encode_record(
        VersionEdit(next_file_number=10, last_seq=0, flushed_seq=0).encode()
    )
    n = 256 << 10
    data = head + b"\x01\x00\x00\x00\x99" + (n // 2).to_bytes(4, "little") * (n // 4)
    with pytest.raises(CorruptionError, match="too many candidate records") as ei:
        vsm._replay(data, "m", 7)
    assert ei.value.offset == len(head)
    assert crc_bytes[0] <= (1 << 20) + 2 * len(data)  # it was n * n / 16: 4 GiB
    # A torn tail of ordinary garbage is still told apart within the budget.
    rng = random.Random(1)
    assert vsm._replay(head + b"\x01\x00\x00\x00\x99" + rng.randbytes(4096), "m", 7)[4] == len(head)


def test_regression_wal_probe_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Likewise the WAL's torn-tail probe: it stopped after 10 000 candidate
    headers, but each cost a crc over its length field's worth, so a torn
    record followed by many candidates with large lengths (user data can
    hold such bytes) cost up to 10 000 times the segment size. It now also
    has a byte budget, and fails closed past it."""
    import struct

    from lsm.wal import format as wf
    from lsm.wal import reader as wr
    from lsm.wal import torn_tail

    monkeypatch.setattr(torn_tail, "_PROBE_BYTES", 1 << 20)
    crc_bytes = _counting(monkeypatch, torn_tail, "masked_crc")
    damaged = bytearray(wf.encode_record(2, 1, 0, b"xyz", 0))
    damaged[-1] ^= 1
    n = 512 << 10
    candidate = struct.pack("<IIQIQQ", 0, n // 2, 3, 1, 0, 0)
    data = wf.encode_segment_header(1) + wf.encode_record(1, 1, 0, b"abc", 0) + bytes(damaged)
    data += (candidate * (n // 36 + 1))[:n]
    s = wr.scan_segment_bytes(data, "/w/00000000000000000001.wal")
    assert s.damage is not None and not s.damage.is_tail and "cannot rule out" in s.damage.detail
    assert crc_bytes[0] <= (1 << 20) + n  # it was 10 000 * n / 2: 2.5 GiB
