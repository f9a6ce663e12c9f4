"""The crash-simulating filesystem itself: what a power cut keeps, faults,
the crash point. The durability proofs (test_power_cut.py) rest on it."""

import errno
import random

import pytest

from lsm.base.crashfs import CrashFS


def _write(fs, path, data, sync=False):
    f = fs.create(path)
    f.write(data)
    if sync:
        f.datasync()
    f.close()


def test_synced_data_and_entries_survive_every_cut():
    fs = CrashFS()
    fs.makedirs("/d")
    fs.sync_dir("/")
    _write(fs, "/d/a", b"hello", sync=True)
    fs.sync_dir("/d")
    for seed in range(20):
        img = fs.power_cut(random.Random(seed))
        assert img.read_file("/d/a") == b"hello"


def test_unsynced_tail_outcomes():
    fs = CrashFS()
    f = fs.create("/a")
    fs.sync_dir("/")
    f.write(b"synced")
    f.datasync()
    f.write(b"-tail-bytes")
    assert fs.read_file("/a") == b"synced-tail-bytes"  # the page cache shows it
    assert fs.power_cut(mode="drop").read_file("/a") == b"synced"
    assert fs.power_cut(mode="keep").read_file("/a") == b"synced-tail-bytes"
    seen = set()
    for seed in range(200):
        got = fs.power_cut(random.Random(seed)).read_file("/a")
        assert got.startswith(b"synced")
        tail = got[6:]
        assert len(tail) <= 11
        seen.add("dropped" if not tail else "kept" if tail == b"-tail-bytes" else
                 "torn" if b"-tail-bytes".startswith(tail) else "other")
    assert seen == {"dropped", "kept", "torn", "other"}  # other: zeros or garbage after a cut


def test_unsynced_create_and_rename_may_be_lost_until_dir_sync():
    fs = CrashFS()
    _write(fs, "/a", b"x", sync=True)
    assert not fs.power_cut(mode="drop").exists("/a")  # the entry was never synced
    fs.sync_dir("/")
    fs.rename("/a", "/b")
    img = fs.power_cut(mode="drop")
    assert img.exists("/a") and not img.exists("/b")
    # a rename in one directory is atomic: old or new name, never both or none
    for seed in range(50):
        img = fs.power_cut(random.Random(seed))
        assert img.exists("/a") != img.exists("/b")
    fs.sync_dir("/")
    assert fs.power_cut(mode="drop").read_file("/b") == b"x"


def test_unlink_without_dir_sync_can_come_back():
    fs = CrashFS()
    _write(fs, "/a", b"x", sync=True)
    fs.sync_dir("/")
    fs.remove("/a")
    assert not fs.exists("/a")
    assert fs.power_cut(mode="drop").read_file("/a") == b"x"
    assert not fs.power_cut(mode="keep").exists("/a")


def test_truncate_below_synced_length_is_old_or_new():
    fs = CrashFS()
    _write(fs, "/a", b"0123456789", sync=True)
    fs.sync_dir("/")
    fs.truncate("/a", 4)
    outs = {fs.power_cut(random.Random(s)).read_file("/a") for s in range(40)}
    assert outs == {b"0123", b"0123456789"}
    f = fs.open_append("/a")
    f.fsync()
    f.close()
    assert fs.power_cut(mode="drop").read_file("/a") == b"0123"


def test_hard_link_shares_content():
    fs = CrashFS()
    _write(fs, "/a", b"data", sync=True)
    fs.link("/a", "/b")
    fs.sync_dir("/")
    img = fs.power_cut(mode="drop")
    assert img.read_file("/a") == img.read_file("/b") == b"data"
    with pytest.raises(FileExistsError):
        fs.link("/a", "/b")


def test_nth_fault_once_and_persistent():
    fs = CrashFS()
    f = fs.create("/a")
    rule = fs.fail("sync", nth=2)
    f.write(b"1")
    f.datasync()
    with pytest.raises(OSError) as ei:
        f.datasync()
    assert ei.value.errno == errno.EIO
    f.datasync()  # once: the third works
    assert rule.fired == 1
    fs.fail("write", nth=1, err=errno.ENOSPC, path=r"/b$", persistent=True)
    g = fs.create("/b")
    for _ in range(3):
        with pytest.raises(OSError) as ei:
            g.write(b"x")
        assert ei.value.errno == errno.ENOSPC
    f.write(b"other files are fine")


def test_crash_point_takes_image_then_disk_dies():
    fs = CrashFS()
    f = fs.create("/a")
    fs.sync_dir("/")
    f.write(b"one")
    f.datasync()
    fs.arm_crash(2, kind="write", mode="keep")
    f.write(b"two")
    with pytest.raises(OSError):
        f.write(b"three")  # the crash point: never happens
    assert fs.dead and fs.image is not None
    assert fs.image.read_file("/a") == b"onetwo"
    with pytest.raises(OSError):
        fs.create("/c")  # dead disk
    assert fs.read_file("/a") == b"onetwo"  # reads still see the page cache


def test_crash_on_call_site():
    from lsm.base.fs import io_site

    fs = CrashFS()
    fs.arm_crash(1, site="flush", mode="drop")
    _write(fs, "/a", b"x", sync=True)
    with io_site("flush"):
        with pytest.raises(OSError):
            fs.create("/b")
    assert fs.crash_index == 4 and not fs.image.exists("/a")


def test_namespace_errors_are_real_errors():
    fs = CrashFS()
    with pytest.raises(FileNotFoundError):
        fs.open_read("/nope")
    with pytest.raises(FileNotFoundError):
        fs.create("/no/dir/file")
    with pytest.raises(FileNotFoundError):
        fs.remove("/nope")
    fs.makedirs("/d/e")
    assert fs.is_dir("/d") and fs.listdir("/d") == ["e"]
    with pytest.raises(IsADirectoryError):
        fs.remove("/d")
    lk = fs.lock("/d")
    with pytest.raises(BlockingIOError):
        fs.lock("/d")
    lk.release()
    fs.lock("/d").release()


def test_late_fault_pretends_success_then_reports_on_the_next_sync():
    fs = CrashFS()
    f = fs.create("/a")
    fs.sync_dir("/")
    f.write(b"one")
    fs.fail("sync", 1, late=True)
    f.datasync()  # "succeeds"
    assert fs.power_cut(mode="drop").read_file("/a") == b""  # but nothing is durable
    f.write(b"two")
    with pytest.raises(OSError) as ei:
        f.datasync()
    assert ei.value.errno == errno.EIO and "late" in str(ei.value)
    f.datasync()  # reported once; this sync works
    assert fs.power_cut(mode="drop").read_file("/a") == b"onetwo"
    with pytest.raises(ValueError):
        fs.fail("write", 1, late=True)
