import pytest

import lsm
from lsm.options import Options, Sync


def test_defaults_validate():
    o = Options().validate()
    assert o.sync is Sync.FULL and o.bloom_bits_per_key == 10


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
        ("compression", "lz4"),
        ("wal_recovery", "whatever"),
        ("background", "gpu"),
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
