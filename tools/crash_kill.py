"""Kill test: SIGKILL a writer process at random moments and verify the
reopened database after every kill; optionally with a simulated power cut.

Each cycle starts a writer child on the same database directory, with tiny
options (a 16 KiB memtable, a small manifest) so that every cycle switches
memtables, rotates WAL segments, flushes, compacts and rolls the manifest
over. Its 1 to 8 threads (``--threads``, drawn per cycle) commit random
puts, deletes and batches at random sync levels (``--sync-mix``), now and
then ask ``sync_wal``/``wait_durable`` for a durability promise, and report
every *acknowledged* commit (thread, commit number, first sequence number)
and every promise through a pipe, after the call returned. The driver
SIGKILLs the child at a random moment (a few per cent of the kills land
while the child is still opening the database), reopens the database itself,
checks it, and starts the next cycle on the same directory.

Two modes:

``--mode kill`` (default): a process crash. The operating system outlives
the writer and keeps everything it wrote with write(2). Checks:

* every acknowledged commit is present, at every sync level;
* the database equals the model after a prefix of the commit order by
  sequence number: the commits of this cycle fill the sequence numbers
  after the cycle's start without a hole, nothing comes back that was never
  written, and a batch is all or nothing. A commit a thread had in flight
  at the kill (at most one per thread, its ops known because every commit's
  ops are a pure function of ``seed, cycle, thread, commit number``) may
  fill a hole, or be absent when it lies beyond the recovered end;
* (Linux) no background worker of the killed writer outlives it: the
  driver is a child subreaper, so orphaned workers become its children,
  and one still running ``--orphan-timeout`` seconds after the kill fails
  the cycle (a stale worker could clobber a table of the reopened
  database; see lsm/compaction/worker.py).

The background mode is drawn per cycle: ``--background mixed`` (default)
runs ``--process-share`` of the cycles (evenly spread) with worker
processes and the rest with a background thread.

When to kill, drawn per cycle: most cycles are killed 0 to ``--max-ms``
after the writer completed a flush and a compaction (so every such cycle
crosses both, and a manifest roll-over, however slow the machine; a fresh
worker process needs a few hundred milliseconds before its first flush);
``--time-kill-prob`` of them 0 to ``--max-ms`` after the open, whatever
was done; ``--early-kill-prob`` of them within ``--early-ms`` of the start,
many while the writer is still opening (recovering) the database; and
``--long-prob`` of the work-bounded ones write on for up to ``--long-ms``.

``--mode power``: a power cut. The writer's filesystem layer is
``tools/power_cut_fs.py``'s SyncTrackingFS, which journals every create,
rename, unlink, truncate, file sync and directory sync to the driver as it
happens (the journal lives outside the crash domain). After the kill the
driver rolls the directory back to a state the disk could hold had the
power failed at that moment (each unsynced directory change applied or
reverted, each unsynced file tail dropped, kept, torn, or torn and followed
by zeros or garbage; the same rules as lsm.base.crashfs.CrashFS), reopens
(journalled too, so the next cut also judges what recovery synced) and
checks the power-cut promises of docs/durability.md:

* every commit acknowledged at FULL or EXTRA, every BARRIER commit that a
  later acknowledged commit followed, and every sequence number a
  ``sync_wal``/``wait_durable`` call reported durable, is present; so is
  everything verified in earlier cycles (the driver's clean close synced it);
* the database equals the model after a prefix of the commit order, ending
  on a commit boundary; holes only where in-flight commits fit; nothing
  that was never written; batches all or nothing.

Worker processes do their I/O outside the tracking layer, so power cycles
use ``background="thread"``. ``DIR.cut.txt`` describes the last cut (which
unsynced changes it applied or reverted, what it left of each unsynced
file), ``--keep-precut`` keeps the directory as the writer left it in
``DIR.precut``; the tracking layer's copies of unlinked and rewritten files
are in ``DIR.shadow``.

Cheap cycles: the driver starts one *zygote* process that imports lsm once
and forks a writer per cycle (a fork costs milliseconds; a fresh Python and
``import lsm`` some 300 ms).

Values are unique per op (``cycle.thread.commit.op:`` plus random filler),
so the comparison is exact.

    python tools/crash_kill.py --seed 1 --cycles 300
    python tools/crash_kill.py --mode power --cycles 200 --threads 1-8
    python tools/crash_kill.py --cycles 20 --background process --threads 2

Figures: the summary line counts flushes, compactions and manifest
roll-overs completed by the writers (from the version edits they made) and
the cycles that saw each; with ``--reliability-log FILE`` (default: the
``LSM_RELIABILITY_LOG`` environment variable) one JSON line per run is
appended, family ``kill9`` or ``kill9_power``.

Exit status: 0 when every cycle verified; 1 on a failed check (the message
names the cycle and prints a command line replaying the run: same workload,
threads, modes and kill schedule; the timing of a kill within the writes is
the OS's); 2 on a usage error.
"""

from __future__ import annotations

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# The harness, by concept, lives in tools/crashkill/ (its __init__ lists the modules); the names below are
# what tests/test_crash_kill.py uses as ``crash_kill.X``.
from crashkill.child import child_main
from crashkill.commandline import parse_args, replay_command
from crashkill.driver import driver_main
from crashkill.failure import Failure
from crashkill.oracle import CycleResult, verify
from crashkill.workload import TINY, Commit, Workload, make_commit
from crashkill.zygote import zygote_main

__all__ = ["TINY", "Commit", "CycleResult", "Failure", "Workload", "child_main", "driver_main", "main",
           "make_commit", "parse_args", "replay_command", "verify", "zygote_main"]


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv, description=__doc__)
    if a.zygote_fd is not None:
        zygote_main(a.zygote_fd)
        return 0
    if a.child:
        child_main(a)
        return 0
    return driver_main(a)


if __name__ == "__main__":
    sys.exit(main())
