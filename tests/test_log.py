"""The info log (``LOG`` in the database directory, lsm/base/infolog.py):
what open, recovery, flushes, compactions, stalls and fences write there,
rotation, and that the LOG can never fail or fence the database."""

from __future__ import annotations

import errno
import re
import threading
import time

import pytest

import lsm
from lsm.base.crashfs import CrashFS
from lsm.base.infolog import LOG_OLD
from tests.conftest import TINY

LINE = re.compile(r"^\d{4}/\d\d/\d\d-\d\d:\d\d:\d\d\.\d{6} \[[^\]]*\] (DEBUG|INFO|WARNING|ERROR) ")


def log_text(fs: CrashFS, path: str = "/db") -> str:
    return fs.read_file(f"{path}/LOG").decode()


def entries(text: str) -> list[str]:
    """Entries (first lines plus their indented continuation lines)."""
    out: list[str] = []
    for line in text.splitlines():
        if line.startswith("    ") and out:
            out[-1] += "\n" + line
        else:
            assert LINE.match(line), f"not an entry line: {line!r}"
            out.append(line)
    return out


def test_open_logs_options_and_recovery():
    fs = CrashFS()
    db = lsm.open("/db", fs=fs, background="inline", memtable_size=123456)
    text = log_text(fs)
    first = entries(text)[0]
    assert "INFO open: created /db" in first and "memtable_size = 123456" in first and "sync = FULL" in first
    assert "recovery: no WAL records to replay" in text
    for i in range(5):
        db.put(b"k%d" % i, b"v")
    db.close()
    assert "close: last seq 5, durable seq 5" in log_text(fs)
    db = lsm.open("/db", fs=fs, background="inline")
    text = log_text(fs)
    assert text.count("open: created") == 1 and "open: opening /db" in text  # appended, not replaced
    assert re.search(r"recovery: MANIFEST-\d+: 0 tables holding the commits up to seq 0", text)
    assert "recovery: replayed 5 WAL records (seq 1..5) from 1 segments into the memtable (5 entries)" in text
    assert re.search(r"open: done in [\d.]+ s, last seq 5", text)
    db.close()


def test_flush_and_compaction_entries_name_real_tables():
    fs = CrashFS()
    db = lsm.open("/db", fs=fs, background="inline", **TINY)
    for i in range(400):
        db.put(b"key%04d" % (i % 150), b"v%05d" % i + b"x" * 20)
    db.compact_range()
    st = db.stats()
    text = log_text(fs)
    flushes = [e for e in entries(text) if " flush: " in e]
    compactions = [e for e in entries(text) if " compaction (" in e]
    assert len(flushes) == st["flush_count"] and len(compactions) == st["compaction_count"]
    assert all(re.search(r"flush: memtable seq \d+\.\.\d+ \(\d+ entries, .*\) -> level 0: \d{6}\.sst", e)
               for e in flushes)
    assert any("(manual)" in e for e in compactions) and any("(l0_files" in e for e in compactions)
    # the output tables named by the last compactions are the live ones
    live = {int(n[:-4]) for n in fs.listdir("/db") if n.endswith(".sst")}
    named_out = set()
    for e in compactions:
        if "trivial move" in e:
            named_out.update(int(n) for n in re.findall(r"moved (\d{6})\.sst", e))
        else:
            named_out.update(int(n) for n in re.findall(r"(\d{6})\.sst", e.split(" -> ", 1)[1]))
    assert live <= named_out
    merge = next(e for e in compactions if "trivial move" not in e)
    assert re.search(r"read [\d.]+ \w+, wrote [\d.]+ \w+, entries \d+ -> \d+", merge)
    db.close()


def test_fence_is_logged_and_found_at_reopen():
    fs = CrashFS()
    db = lsm.open("/db", fs=fs, background="inline")
    db.put(b"a", b"1")
    fs.fail("sync", 1, site="wal")
    with pytest.raises(lsm.NeedsRecoveryError):
        db.put(b"b", b"2")
    text = log_text(fs)
    (fence,) = [e for e in entries(text) if " ERROR FENCED" in e]
    assert "injected fault in sync" in fence and "reopen" in fence
    db.close()
    db = lsm.open("/db", fs=fs, background="inline")
    text = log_text(fs)
    assert "WARNING recovery: FENCE marker found" in text
    assert text.index("ERROR FENCED") < text.index("FENCE marker found")
    assert db.get(b"a") == b"1"
    db.close()


def test_recovery_logs_what_it_cut_and_dropped():
    fs = CrashFS()
    db = lsm.open("/db", fs=fs, background="inline")
    for i in range(10):
        db.put(b"k%d" % i, b"v" * 10)
    seg = db._wal.segment_path
    db._simulate_crash()
    with fs._mu:  # append a torn half record
        f = fs.open_append(seg)
    f.write(b"\x01\x02\x03")
    f.close()
    db = lsm.open("/db", fs=fs, background="inline")
    text = log_text(fs)
    assert re.search(rf"WARNING recovery: cut the torn tail of {re.escape(seg)} at offset \d+", text)
    db.close()


def test_failed_open_leaves_the_log_unchanged():
    fs = CrashFS()
    db = lsm.open("/db", fs=fs, background="inline")
    db.put(b"a", b"1")
    db.close()
    before = log_text(fs)
    cur = fs.read_file("/db/CURRENT").decode().strip()
    fs.write_file("/db/" + cur, b"garbage")
    with pytest.raises(lsm.CorruptionError):
        lsm.open("/db", fs=fs, background="inline")
    assert log_text(fs) == before


def test_stall_is_logged_with_its_cause():
    fs = CrashFS()
    db = lsm.open("/db", fs=fs, background="thread", memtable_size=2048, max_immutable_memtables=1)
    gate = threading.Event()
    real = db._bg._do_flush

    def slow_flush(job):
        gate.wait(10)
        real(job)

    db._bg._do_flush = slow_flush
    done = threading.Event()

    def writer():
        for i in range(300):
            db.put(b"k%04d" % i, b"v" * 40, sync=lsm.Sync.OFF)
        done.set()

    t = threading.Thread(target=writer)
    t.start()
    deadline = time.monotonic() + 10
    while db.stats()["immutable_memtables"] < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)  # the writer fills the next memtable and waits for the blocked flush
    gate.set()
    t.join(30)
    assert done.is_set()
    st = db.stats()
    assert st["stalls"]["memtables"]["count"] >= 1 and st["stalls"]["memtables"]["seconds"] > 0
    assert st["stalls"]["l0_stop"]["count"] == 0
    db.close()
    stalls = [e for e in entries(log_text(fs)) if "WARNING stall: a writer waited" in e]
    assert len(stalls) == st["stalls"]["memtables"]["count"]
    assert "immutable memtables wait for their flush (max_immutable_memtables 1)" in stalls[0]


def test_l0_slowdown_is_logged_and_counted():
    fs = CrashFS()
    db = lsm.open("/db", fs=fs, background="inline", memtable_size=2048, l0_compaction_trigger=2,
                  l0_slowdown_trigger=3, l0_stop_trigger=50)
    db._bg._compact_once = lambda: False  # compaction never catches up
    for i in range(200):
        db.put(b"k%04d" % i, b"v" * 40, sync=lsm.Sync.OFF)
    st = db.stats()
    assert st["levels"][0]["files"] >= 3
    assert st["stalls"]["l0_slowdown"]["count"] > 0
    db.close()
    text = log_text(fs)
    assert "WARNING stall: level 0 has 3 files (l0_slowdown_trigger 3): writes are paced" in text


def test_rotation_keeps_log_old_and_reopen_accepts_it():
    fs = CrashFS()
    db = lsm.open("/db", fs=fs, background="inline", info_log_max_size=4096, **TINY)
    for i in range(600):
        db.put(b"key%04d" % i, b"x" * 30)
    db.close()
    assert fs.exists(f"/db/{LOG_OLD}")
    assert fs.file_size("/db/LOG") <= 4096 and fs.file_size(f"/db/{LOG_OLD}") <= 4096
    db = lsm.open("/db", fs=fs, background="inline", info_log_max_size=4096, **TINY)
    assert db.get(b"key0599") == b"x" * 30
    db.close()
    for name in ("LOG", LOG_OLD):
        entries(fs.read_file(f"/db/{name}").decode())  # whole entries only: rotation never splits one


def test_info_log_off_writes_nothing():
    fs = CrashFS()
    db = lsm.open("/db", fs=fs, background="inline", info_log=False, **TINY)
    for i in range(300):
        db.put(b"k%d" % i, b"v" * 30)
    db.close()
    assert not fs.exists("/db/LOG")


def test_warning_level_keeps_only_warnings():
    fs = CrashFS()
    db = lsm.open("/db", fs=fs, background="inline", info_log_level="WARNING", **TINY)
    for i in range(300):
        db.put(b"k%d" % i, b"v" * 30)
    fs.fail("sync", 1, site="wal")
    with pytest.raises(lsm.NeedsRecoveryError):
        db.put(b"x", b"y")
    db.close()
    text = log_text(fs)
    assert " INFO " not in text and "ERROR FENCED" in text


def test_log_failures_never_fail_the_database():
    fs = CrashFS()
    db = lsm.open("/db", fs=fs, background="inline", **TINY)
    fs.fail("write", 1, errno.ENOSPC, path=r"/LOG$", persistent=True)
    fs.fail("create", 1, errno.ENOSPC, path=r"/LOG$", persistent=True)
    fs.fail("rename", 1, errno.ENOSPC, path=r"/LOG$", persistent=True)
    for i in range(300):
        db.put(b"k%04d" % i, b"v" * 30)
    db.compact_range()
    st = db.stats()
    assert st["health"] == "ok" and st["info_log_errors"] > 0
    assert db.get(b"k0299") == b"v" * 30
    db.close()


def test_log_options_are_validated():
    with pytest.raises(ValueError, match="info_log_level"):
        lsm.Options(info_log_level="chatty").validate()
    with pytest.raises(ValueError, match="info_log_max_size"):
        lsm.Options(info_log_max_size=10).validate()
    with pytest.raises(TypeError, match="info_log"):
        lsm.Options(info_log="yes").validate()
    assert lsm.Options(info_log_level="Debug").validate().info_log_level == "debug"


def test_real_filesystem_log(tmp_path):
    with lsm.open(tmp_path / "db", background="inline", **TINY) as db:
        for i in range(200):
            db.put(b"k%d" % i, b"v" * 30)
    text = (tmp_path / "db" / "LOG").read_text()
    assert "open: created" in text and " flush: " in text and "close:" in text
    entries(text)
