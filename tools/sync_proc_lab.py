"""Lab for issue 7, target 2: FULL commits whose fdatasync runs in a
syncer PROCESS (its own GIL) instead of in a committer thread. A model,
not a commit path (no rotation, no fencing, no recovery contract).

    python tools/sync_proc_lab.py MODE THREADS COMMITS [DIR]

MODE ``group``: lsm's own FULL puts (in-process group commit).
MODE ``proc``: each put at OFF (a store into the mapped live WAL segment),
then the committer publishes the segment's size in an anonymous shared page, posts a
semaphore, and blocks on its own lock; a forked syncer process drains the
semaphore, fdatasyncs the segment (its own descriptor) and publishes the
durable offset; a dispatcher thread in this process wakes on a second
semaphore and releases the covered waiters. Syncs then run back to back,
whatever the committers' Python is doing. LINGER_US: the syncer sleeps
that long before each sync (bigger groups). DIR: where the database goes
(default /work/tmp-lab: a real disk). Prints commits/s, this process's CPU
per commit, syncs, commits per sync and context switches per commit.
"""
import mmap
import multiprocessing as mp
import os
import resource
import struct
import sys
import tempfile
import threading
import time

MODE, T, N = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
D = sys.argv[4] if len(sys.argv) > 4 else "/work/tmp-lab"
os.makedirs(D, exist_ok=True)

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import lsm

Q = struct.Struct("<q")
LINGER = float(os.environ.get("LINGER_US", "0")) / 1e6


def syncer_main(path, sh, req, done):
    fd = os.open(path, os.O_RDWR)
    durable = 0
    while True:
        req.acquire()
        while req.acquire(False):
            pass
        if LINGER:
            time.sleep(LINGER)
            while req.acquire(False):
                pass
        target = Q.unpack_from(sh, 0)[0]
        if target < 0:
            return
        if target > durable:
            os.fdatasync(fd)
            durable = target
            Q.pack_into(sh, 8, durable)
            done.release()


def main():
    with tempfile.TemporaryDirectory(dir=D) as t:
        db = lsm.open(t + "/db", sync="full" if MODE == "group" else "off")
        v = b"x" * 100
        for i in range(200):
            db.put(b"w%015d" % i, v, sync="full")
        per = N // T
        st0 = db.stats()
        if MODE == "group":
            def work(tid):
                put = db.put
                for i in range(tid * per, (tid + 1) * per):
                    put(b"%016d" % i, v)
            proc = None
        else:
            wal = db._wal
            f = wal._file
            assert f.mapped, "segment not mapped"
            sh = mmap.mmap(-1, 64)  # anonymous and shared: the forked syncer sees the same page
            ctx = mp.get_context("fork")
            req, done = ctx.Semaphore(0), ctx.Semaphore(0)
            proc = ctx.Process(target=syncer_main, args=(f.path, sh, req, done), daemon=True)
            proc.start()
            wlock = threading.Lock()
            waiters = []  # (off, gate) under wlock
            state = {"written": 0, "durable": 0, "syncs": 0}
            stop = [False]

            def dispatcher():
                acq = done.acquire
                while True:
                    acq()
                    if stop[0]:
                        return
                    d = Q.unpack_from(sh, 8)[0]
                    state["durable"] = d
                    state["syncs"] += 1
                    with wlock:
                        keep = []
                        for off, g in waiters:
                            if off <= d:
                                g.release()
                            else:
                                keep.append((off, g))
                        waiters[:] = keep

            dt = threading.Thread(target=dispatcher, daemon=True)
            dt.start()
            rel = req.release

            def work(tid):
                put = db.put
                pack = Q.pack_into
                for i in range(tid * per, (tid + 1) * per):
                    put(b"%016d" % i, v)
                    off = f.size
                    g = threading.Lock()
                    g.acquire()
                    with wlock:
                        if off <= state["durable"]:
                            continue
                        if off > state["written"]:
                            state["written"] = off
                            pack(sh, 0, off)
                        waiters.append((off, g))
                    rel()
                    g.acquire()

        ths = [threading.Thread(target=work, args=(i,)) for i in range(T)]
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        c0, w0 = time.process_time(), time.perf_counter()
        for th in ths:
            th.start()
        for th in ths:
            th.join()
        w, c = time.perf_counter() - w0, time.process_time() - c0
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        n = per * T
        st = db.stats()
        syncs = st["wal_syncs"] - st0["wal_syncs"] if MODE == "group" else state["syncs"]
        print(f"{MODE} T={T}: {n / w:,.0f}/s, cpu {c / n * 1e6:.1f} us/commit (main process), syncs {syncs}, "
              f"commits/sync {n / max(syncs, 1):.2f}, vcs/commit {(r1.ru_nvcsw - r0.ru_nvcsw) / n:.2f}, "
              f"ivcs {(r1.ru_nivcsw - r0.ru_nivcsw) / n:.2f}", flush=True)
        if proc is not None:
            Q.pack_into(sh, 0, -1)
            req.release()
            proc.join(5)
            stop[0] = True
            done.release()
        db.close()


main()
