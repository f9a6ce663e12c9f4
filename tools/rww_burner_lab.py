"""readwhilewriting's writer beside a CPU-bound process, for issue 7's
target 7 (docs/benchmarks.md, twelfth run).

    python tools/rww_burner_lab.py [TEMPLATE] [ROUNDS]

Opens a copy of TEMPLATE (default: the 1M-key template of
``tools/read_bench.py --num 1000000``, built by that tool) with
``Sync.OFF``, starts eight reader threads doing random gets and one writer
thread doing puts, as the harness's readwhilewriting does, and then
alternates 3-second windows: ``alone``, and ``burner`` (a ``nice -n 5``
process spinning in Python on the other core, standing in for a
compaction worker). Prints the writer's puts/s per window.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import threading
import time


def main() -> None:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import lsm

    tmpl = sys.argv[1] if len(sys.argv) > 1 else "/tmp/lsm-read-bench/tmpl-1000000"
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    work = tmpl.rstrip("/") + f"-rww-{os.getpid()}"
    shutil.copytree(tmpl, work)
    db = lsm.open(work, sync=lsm.Sync.OFF)
    stop = threading.Event()
    written = [0]

    def reader(seed: int) -> None:
        rng, get = random.Random(seed), db.get
        while not stop.is_set():
            get(b"%016d" % rng.randrange(1_000_000))

    def writer() -> None:
        put, v, i = db.put, b"w" * 100, 0
        while not stop.is_set():
            put(b"w%015d" % i, v)
            i += 1
            written[0] = i

    ths = [threading.Thread(target=reader, args=(s,)) for s in range(8)] + [threading.Thread(target=writer)]
    try:
        for t in ths:
            t.start()
        time.sleep(1.0)
        for rnd in range(rounds):
            for mode in ("alone", "burner"):
                p = None
                if mode == "burner":
                    p = subprocess.Popen(["nice", "-n", "5", sys.executable, "-c", "while True: pass"])
                time.sleep(0.2)
                w0, t0 = written[0], time.perf_counter()
                time.sleep(3.0)
                rate = (written[0] - w0) / (time.perf_counter() - t0)
                if p is not None:
                    p.kill()
                    p.wait()
                print(f"round {rnd} {mode:6s} writer {rate:,.0f} puts/s", flush=True)
    finally:
        stop.set()
        for t in ths:
            t.join()
        db.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
