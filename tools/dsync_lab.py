"""write(2)+fdatasync(2) against one pwritev2(RWF_DSYNC) per record, on a
real disk, for docs/durability.md ("Group commit": the sync call).

    python tools/dsync_lab.py [DIR] [ROUNDS] [PER_ROUND] [SIZE]

Two files per mode, one per loop: *prealloc* (zeros written in 4 KiB
pages and fdatasync'd first, then overwritten from offset 0, as a spare WAL
segment is) and *append* (a new empty file, as a WAL segment without a
spare). The loops alternate in many short rounds (``PER_ROUND`` records
each, the first loop of a round alternating too), so a load from other
processes hits both alike. Prints per loop: records/s over its own time,
p50 and p90 latency, CPU us per record, and the ratios dsync/write+sync.
DIR defaults to the current directory (must not be tmpfs: /dev/shm syncs
nothing).
"""

from __future__ import annotations

import os
import sys
import time

DIR = sys.argv[1] if len(sys.argv) > 1 else "."
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 60
PER = int(sys.argv[3]) if len(sys.argv) > 3 else 100
SIZE = int(sys.argv[4]) if len(sys.argv) > 4 else 160
_pc, _cpu = time.perf_counter, time.process_time
RWF_DSYNC = os.RWF_DSYNC


def _ws(fd: int, rec: bytes, n: int, lat: list[float]) -> None:
    write, sync = os.write, os.fdatasync
    for _ in range(n):
        t0 = _pc()
        write(fd, rec)
        sync(fd)
        lat.append(_pc() - t0)


def _dsync(fd: int, rec: bytes, n: int, lat: list[float]) -> None:
    pwritev, bufs = os.pwritev, [rec]
    for _ in range(n):
        t0 = _pc()
        pwritev(fd, bufs, -1, RWF_DSYNC)  # -1: at (and moving) the file position, like write(2)
        lat.append(_pc() - t0)


def _open(path: str, prealloc: int) -> int:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    if prealloc:
        page = bytes(4096)
        for _ in range(prealloc // 4096):
            os.write(fd, page)
        os.fdatasync(fd)
        os.lseek(fd, 0, os.SEEK_SET)
    return fd


def main() -> None:
    rec = os.urandom(SIZE)
    need = ROUNDS * PER * SIZE
    prealloc = (need + (1 << 20)) & ~4095
    loops = {"write+fdatasync": _ws, "pwritev2 RWF_DSYNC": _dsync}
    for mode in ("prealloc", "append"):
        fds, lat, wall, cpu = {}, {}, {}, {}
        for name in loops:
            fds[name] = _open(os.path.join(DIR, f"dsync_lab_{mode}_{len(fds)}.tmp"), prealloc if mode == "prealloc" else 0)
            lat[name], wall[name], cpu[name] = [], 0.0, 0.0
        names = list(loops)
        for r in range(ROUNDS):
            for name in (names if r % 2 == 0 else names[::-1]):
                t0, c0 = _pc(), _cpu()
                loops[name](fds[name], rec, PER, lat[name])
                wall[name] += _pc() - t0
                cpu[name] += _cpu() - c0
        res = {}
        for name in names:
            xs = sorted(lat[name])
            n = len(xs)
            res[name] = (n / wall[name], xs[n // 2], xs[n * 9 // 10], cpu[name] / n)
            print(f"{mode:8} {name:20} {res[name][0]:8.0f}/s  p50 {res[name][1] * 1e6:6.0f} us  "
                  f"p90 {res[name][2] * 1e6:6.0f} us  cpu {res[name][3] * 1e6:5.1f} us/rec")
            os.close(fds[name])
        a, b = res[names[0]], res[names[1]]
        print(f"{mode:8} dsync/write+sync: rate {b[0] / a[0]:.3f}x  p50 {b[1] / a[1]:.3f}x  cpu {b[3] / a[3]:.3f}x")
        for i in range(len(names)):
            os.remove(os.path.join(DIR, f"dsync_lab_{mode}_{i}.tmp"))


if __name__ == "__main__":
    main()
