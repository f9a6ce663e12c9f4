import pytest

import lsm
from lsm.options import Options, Sync


def test_defaults_validate():
    o = Options().validate()
    assert o.sync is Sync.FULL and o.bloom_bits_per_key == 13


@pytest.mark.parametrize(
    "name,value",
    [
        ("memtable_size", 0),
        ("memtable_size", -5),
        ("block_size", 0),
        ("target_file_size", 0),
        ("level_multiplier", 1),
        ("bloom_bits_per_key", -1),
        ("num_levels", 1),
        ("sync_interval", 0),
        ("wal_segment_size", 10),
        ("compression", "snappy"),
        ("wal_recovery", "whatever"),
        ("background", "gpu"),
        ("wal_retention_segments", -1),
        ("wal_retention_seconds", -0.5),
        ("wal_retention_seconds", float("nan")),
        ("max_total_wal_size", -1),
        ("max_total_wal_size", 100),
    ],
)
def test_absurd_values_name_the_option(name, value):
    with pytest.raises(ValueError, match=name):
        Options.from_kwargs(**{name: value})


def test_wrong_types():
    with pytest.raises(TypeError, match="memtable_size"):
        Options.from_kwargs(memtable_size="big")
    with pytest.raises(TypeError, match="memtable_size"):
        Options.from_kwargs(memtable_size=True)
    with pytest.raises(TypeError, match="mmap_reads"):
        Options.from_kwargs(mmap_reads=1)
    with pytest.raises(TypeError, match="wal_mmap_writes"):
        Options.from_kwargs(wal_mmap_writes=1)


def test_wal_retention_and_limit_options():
    o = Options.from_kwargs(wal_retention_segments=5, wal_retention_seconds=3600, max_total_wal_size=1 << 20)
    assert o.wal_archive and o.total_wal_limit == 1 << 20
    assert Options.from_kwargs(wal_retention_seconds=float("inf")).wal_archive
    d = Options().validate()
    assert not d.wal_archive
    assert d.total_wal_limit == 4 * d.memtable_size * (d.max_immutable_memtables + 1)
    with pytest.raises(TypeError, match="wal_retention_seconds"):
        Options.from_kwargs(wal_retention_seconds="1h")
    with pytest.raises(TypeError, match="wal_retention_segments"):
        Options.from_kwargs(wal_retention_segments=2.5)
    with pytest.raises(TypeError, match="max_total_wal_size"):
        Options.from_kwargs(max_total_wal_size=True)


def test_unknown_option(tmp_path):
    with pytest.raises(ValueError, match="unknown option 'memtabel_size'"):
        lsm.open(tmp_path / "db", memtabel_size=100)


def test_trigger_order():
    with pytest.raises(ValueError, match="l0_stop_trigger"):
        Options.from_kwargs(l0_slowdown_trigger=10, l0_stop_trigger=5)


def test_sync_coerce():
    assert Sync.coerce("full") is Sync.FULL
    assert Sync.coerce(0) is Sync.OFF
    assert Sync.OFF < Sync.NORMAL < Sync.BARRIER < Sync.FULL < Sync.EXTRA
    with pytest.raises(ValueError, match="sync"):
        Sync.coerce("fast")
    with pytest.raises(ValueError):
        Sync.coerce(9)


def test_open_refuses_process_background_with_in_memory_fs():
    """background="process" runs flushes in a worker process, which cannot
    see an in-memory filesystem: the first flush used to fence the DB.
    lsm.open refuses the pair up front, naming both options, and touches
    nothing; thread and inline open it, and restore (no background work)
    still takes such Options."""
    from lsm.base.crashfs import CrashFS
    from lsm.base.fs import FileSystem

    fs = CrashFS()
    for kwargs in ({}, {"background": "process"}, {"options": Options(fs=fs)}):
        with pytest.raises(ValueError, match=r"background='process'.*fs=CrashFS\(\).*'thread' or 'inline'"):
            lsm.open("/db", **({"fs": fs} | kwargs))
    assert fs.tree() == {} and fs.ops == 0  # refused before any I/O (no directory, no LOCK)
    for background in ("thread", "inline"):
        with lsm.open("/db", fs=fs, background=background, memtable_size=4096) as db:
            for i in range(200):
                db.put(b"k%04d" % i, b"v" * 50)
            db.flush()
            assert db.get(b"k0199") == b"v" * 50
    Options(fs=fs).validate()  # Options alone are fine: only an open needs the worker to see the files
    assert not FileSystem().in_memory  # real files: process mode stays the default
