"""The writer process: open the database, commit from its threads, report
every acknowledged commit, promise and version edit to the driver through
a pipe; runs until the driver kills it."""

from __future__ import annotations

import argparse
import os
import threading
import time

from power_cut_fs import SyncTrackingFS

import lsm
from crashkill.workload import LEVELS, PUT, make_commit, options_from, workload_from
from lsm.manifest.version_set import VersionSet


def child_main(a: argparse.Namespace) -> None:
    """The writer: open, say ready, commit from --threads threads, report
    each acknowledged commit, each promise and each version edit; runs
    until killed."""
    out = a.report_fd
    w = workload_from(a)
    parent = os.getppid()
    opts = options_from(a)
    if a.mode == "power":
        fs = opts["fs"] = SyncTrackingFS(lambda line: os.write(out, line.encode()), a.shadow)
        _sabotage(fs, a.sabotage)
    log_and_apply = VersionSet.log_and_apply

    def counted(vs, edit):  # one report per version edit the writer made durable
        vs.manifest_max_size = a.manifest_max_size  # roll over (new manifest, CURRENT switch) often
        before = vs.manifest_number
        version = log_and_apply(vs, edit)
        kind = b"c" if edit.removed else (b"f" if edit.added else b"o")
        os.write(out, b"V %s %d\n" % (kind, vs.manifest_number != before))
        return version

    VersionSet.log_and_apply = counted  # this process has one database: patch before the open's first edit
    db = lsm.open(a.dir, background=a.background, **opts)
    os.write(out, b"R %d\n" % db.last_seq)
    stop = threading.Event()

    def writer(t: int) -> None:
        try:
            n = 0
            while not stop.is_set():
                if os.getppid() != parent:  # the driver (or zygote) died: stop writing
                    os._exit(5)
                c = make_commit(w, a.cycle, t, n)
                level = LEVELS[c.level]
                if c.kind == "put":
                    seq = db.put(c.ops[0][1], c.ops[0][2], sync=level)
                elif c.kind == "delete":
                    seq = db.delete(c.ops[0][1], sync=level)
                else:
                    b = lsm.WriteBatch()
                    for kind, key, value in c.ops:
                        b.put(key, value) if kind == PUT else b.delete(key)
                    seq = db.write(b, sync=level) - c.count + 1
                os.write(out, b"A %d %d %d\n" % (t, n, seq))  # one write(2) < PIPE_BUF: atomic
                if c.after == "sync_wal":
                    os.write(out, b"P %d\n" % db.sync_wal())
                elif c.after == "wait_durable":
                    end = seq + c.count - 1
                    if db.wait_durable(end, timeout=1.0):
                        os.write(out, b"P %d\n" % end)
                n += 1
        except BaseException as e:  # noqa: BLE001 - reported to the driver
            os.write(out, b"E %s\n" % repr(e).replace("\n", " ").encode()[:3000])
            os._exit(4)

    threads = [threading.Thread(target=writer, args=(t,), daemon=True) for t in range(a.threads_range[0])]
    for th in threads:
        th.start()
    time.sleep(a.max_seconds)  # the driver kills us long before this
    stop.set()
    os.write(out, b"E the writer was not killed within --max-seconds\n")
    os._exit(3)


def _sabotage(fs: SyncTrackingFS, what: str | None) -> None:
    """Break one durability rule of the engine, as seen by the disk, to
    show that power mode catches it (tests/test_crash_kill.py)."""
    if what == "wal-sync":  # WAL fsyncs do nothing: FULL commits are acknowledged unsynced
        sync = fs._sync
        fs._sync = lambda f, data_only: None if f.path.endswith(".wal") else sync(f, data_only)  # type: ignore
    elif what == "dir-sync":  # directory fsyncs do nothing: new files' names are never durable
        fs.sync_dir = lambda path: None  # type: ignore[method-assign]
