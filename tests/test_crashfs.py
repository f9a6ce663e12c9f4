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


# ------------------------------------------------------------------ short writes
def test_short_write_then_success_is_byte_identical_to_a_full_write():
    fs = CrashFS(trace=True)
    f = fs.create("/a")
    f.write(b"head-")
    rule = fs.fail("write", 1, short=True)  # counted from now
    data = bytes(range(256)) * 3
    f.write(data)
    # the fs layer's loop wrote the rest at once, as the next write operation
    assert fs.read_file("/a") == b"head-" + data and f.size == 5 + len(data)
    writes = [t for t in fs.trace if t[1] == "write"]
    assert len(writes) == 3 and rule.fired == 1 and rule.fired_at == [writes[1][0]]
    f.write(b"tail")  # once: later writes are whole
    assert fs.read_file("/a") == b"head-" + data + b"tail"
    assert sum(t[1] == "write" for t in fs.trace) == 4


@pytest.mark.parametrize("keep", [1, 5, 9, 100])
def test_short_write_keeps_the_asked_prefix(keep):
    fs = CrashFS()
    f = fs.create("/a")
    fs.fail("write", 1, errno.ENOSPC, short=True, keep=keep, persistent=True)
    with pytest.raises(OSError) as ei:
        f.write(b"0123456789")  # short, then the disk is full
    assert ei.value.errno == errno.ENOSPC
    kept = min(keep, 9)  # a short write writes at least 1 byte and fewer than all
    assert fs.read_file("/a") == b"0123456789"[:kept]
    assert f.size == kept  # size counts what is really in the file


def test_persistent_short_then_error_matches_path_and_site():
    from lsm.base.fs import io_site

    fs = CrashFS()
    rule = fs.fail("write", 1, errno.ENOSPC, path=r"/b$", site="flush", short=True, persistent=True)
    a, b = fs.create("/a"), fs.create("/b")
    b.write(b"not in the flush site")
    with io_site("flush"):
        a.write(b"other path")
        with pytest.raises(OSError):
            b.write(b"abcdef")
        with pytest.raises(OSError):
            b.write(b"more")
    assert fs.read_file("/b") == b"not in the flush site" + b"abc"
    assert fs.read_file("/a") == b"other path" and rule.fired == 3


def test_one_byte_write_cannot_be_short():
    fs = CrashFS()
    f = fs.create("/a")
    rule = fs.fail("write", 1, short=True)
    f.write(b"x")
    assert fs.read_file("/a") == b"x" and rule.fired == 1
    f.write(b"")  # nothing to write: no loop
    assert f.size == 1


def test_short_fault_argument_errors():
    fs = CrashFS()
    with pytest.raises(ValueError, match="short"):
        fs.fail("sync", 1, short=True)
    with pytest.raises(ValueError, match="keep"):
        fs.fail("write", 1, keep=3)
    with pytest.raises(ValueError, match="keep"):
        fs.fail("write", 1, short=True, keep=0)


def test_short_write_is_not_durable_until_synced():
    fs = CrashFS()
    f = fs.create("/a")
    fs.sync_dir("/")
    f.write(b"synced")
    f.datasync()
    fs.fail("write", 1, short=True, keep=2)
    f.write(b"-tail")
    assert fs.power_cut(mode="drop").read_file("/a") == b"synced"
    f.datasync()
    assert fs.power_cut(mode="drop").read_file("/a") == b"synced-tail"


def test_write_goes_at_the_file_position_over_preallocated_zeros():
    fs = CrashFS()
    f = fs.create("/a")
    fs.sync_dir("/")
    f.write(b"abc")
    f.datasync()
    f.preallocate(8)
    assert fs.read_file("/a") == b"abc" + bytes(8)
    fs.fail("write", 1, short=True)
    f.write(b"defg")  # short, then the rest: both at the position, not after the zeros
    assert fs.read_file("/a") == b"abcdefg" + bytes(4) and f.size == 7
    f.datasync()
    assert fs.power_cut(mode="drop").read_file("/a") == b"abcdefg" + bytes(4)


def test_each_descriptor_writes_at_its_own_position():
    fs = CrashFS()
    f = fs.create("/a")
    fs.sync_dir("/")
    f.write(b"0123")
    g = fs.open_append("/a")  # at 4
    f.write(b"456789")
    f.datasync()
    g.write(b"AB")  # over synced bytes: after a cut, from offset 4 on the old or the new
    assert fs.read_file("/a") == b"0123AB6789"  # content, or torn, zeroed or garbage blocks
    outs = {fs.power_cut(random.Random(s)).read_file("/a") for s in range(40)}
    assert {b"0123456789", b"0123AB6789"} <= outs, outs
    assert all(o[:4] == b"0123" for o in outs), outs  # never before the first byte written in place
    fs.truncate("/a", 2)
    f.write(b"x")  # f is at 10: a hole of zeros, as a real file gets
    assert fs.read_file("/a") == b"01" + bytes(8) + b"x"
    f.close()
    g.close()


def test_path_errors_match_the_real_filesystem():
    fs = CrashFS()
    fs.makedirs("/d")
    _write(fs, "/f", b"x")
    for call, exc in [
        (lambda: fs.create("/"), OSError),  # not a file path (EINVAL)
        (lambda: fs.create("/f/x"), NotADirectoryError),
        (lambda: fs.create("/d"), IsADirectoryError),
        (lambda: fs.open_read("/d"), IsADirectoryError),
        (lambda: fs.rename("/nope", "/g"), FileNotFoundError),
        (lambda: fs.rename("/f", "/d"), IsADirectoryError),
        (lambda: fs.listdir("/nope"), FileNotFoundError),
        (lambda: fs.listdir("/f"), NotADirectoryError),
        (lambda: fs.makedirs("/f/sub"), FileExistsError),
        (lambda: fs.sync_dir("/nope"), FileNotFoundError),
        (lambda: fs.fail("open", 1), ValueError),
        (lambda: fs.power_cut(mode="half"), ValueError),
    ]:
        with pytest.raises(exc):
            call()
    assert fs.tree() == {"/f": 1}  # nothing changed
    f = fs.create("/g")
    f.close()
    with pytest.raises(OSError) as ei:
        f.write(b"after close")
    assert ei.value.errno == errno.EBADF


def test_rename_within_and_across_directories():
    fs = CrashFS()
    fs.makedirs("/a")
    fs.makedirs("/b")
    fs.sync_dir("/")
    _write(fs, "/a/f", b"data", sync=True)
    fs.sync_dir("/a")
    fs.makedirs("/a/sub")  # through an existing directory
    assert fs.is_dir("/a/sub")
    fs.rename("/a/f", "/a/f")  # onto itself: nothing changes
    assert fs.listdir("/a") == ["f", "sub"]
    fs.rename("/a/f", "/b/g")
    assert fs.tree() == {"/b/g": 4} and fs.file_size("/b/g") == 4
    # two directory changes, each durable only with its own directory's sync
    img = fs.power_cut(mode="drop")
    assert img.tree() == {"/a/f": 4}
    fs.sync_dir("/b")
    img = fs.power_cut(mode="drop")
    assert img.tree() == {"/a/f": 4, "/b/g": 4}  # on both, until /a is synced too
    fs.sync_dir("/a")
    assert fs.power_cut(mode="drop").tree() == {"/b/g": 4}
    assert fs.clone().read_file("/b/g") == b"data"


def test_recreate_truncates_and_a_cut_keeps_old_or_new():
    fs = CrashFS()
    _write(fs, "/a", b"old content", sync=True)
    fs.sync_dir("/")
    _write(fs, "/a", b"new")  # O_TRUNC of a synced file, not synced again
    assert fs.read_file("/a") == b"new"
    assert {fs.power_cut(random.Random(s)).read_file("/a") for s in range(40)} == {b"old content", b"new"}
    _write(fs, "/b", b"")  # a never-synced file recreated: nothing on the platter either way
    fs.sync_dir("/")
    _write(fs, "/b", b"again")
    assert fs.power_cut(mode="drop").read_file("/b") == b""


def test_truncate_up_extends_with_zeros_and_preallocate_below_the_end_is_a_no_op():
    fs = CrashFS()
    _write(fs, "/a", b"abc", sync=True)
    fs.sync_dir("/")
    fs.truncate("/a", 6)
    assert fs.read_file("/a") == b"abc\0\0\0"
    assert fs.power_cut(mode="drop").read_file("/a") == b"abc"  # growth is an unsynced tail
    f = fs.open_append("/a")
    fs.truncate("/a", 10)
    f.preallocate(2)  # 6 + 2 is inside the file already
    assert fs.file_size("/a") == 10
    f.close()


def test_hooks_and_sync_latency():
    fs = CrashFS(sync_latency=0.001)
    seen = []
    fs.trace_hook = lambda i, kind, path, site, info: seen.append((i, kind, path, bytes(info) if kind == "write" else info))
    f = fs.create("/a")
    f.write(b"xy")
    f.datasync()  # sleeps sync_latency, outside the lock
    fs.rename("/a", "/b")
    assert seen == [(1, "create", "/a", None), (2, "write", "/a", b"xy"), (3, "sync", "/a", None),
                    (4, "rename", "/a", "/b")]
    images = []
    fs.crash_hook = lambda: images.append(fs.image)
    fs.arm_crash(1, kind="sync_dir", mode="keep")
    with pytest.raises(OSError):
        fs.sync_dir("/")
    assert images == [fs.image] and fs.image.read_file("/b") == b"xy"
    assert seen[-1][1] == "sync_dir"  # the hook sees the operation that crashed too


def test_lock_release_is_idempotent():
    fs = CrashFS()
    fs.makedirs("/d")
    lk = fs.lock("/d")
    lk.release()
    lk.release()
    lk2 = fs.lock("/d")  # the second release did not free someone else's lock
    with pytest.raises(BlockingIOError):
        fs.lock("/d")
    lk2.release()
