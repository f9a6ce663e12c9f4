"""With ``background="inline"`` a writer that fills the memtable runs the
flush and its version install on its own thread while it holds the write
lock, against the lock order that ingests and checkpoints follow
(``_install_mu``, then the write lock). Both must make progress side by
side: before the fix, a writer and an ingest deadlocked within seconds
(the writer holding the write lock and waiting for ``_install_mu``, the
ingest the other way round)."""

from __future__ import annotations

import os
import threading
import time

import lsm

ROUNDS = 60


def _side_by_side(tmp_path, other) -> None:
    db = lsm.open(str(tmp_path / "db"), background="inline", memtable_size=32 << 10, sync="OFF")
    errors: list[BaseException] = []
    done = threading.Event()

    def writer() -> None:
        try:
            i = 0
            while not done.is_set():
                db.put(b"w%09d" % i, b"x" * 100)
                i += 1
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    def second() -> None:
        try:
            for j in range(ROUNDS):
                other(db, j)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)
        finally:
            done.set()

    ts = [threading.Thread(target=writer, daemon=True), threading.Thread(target=second, daemon=True)]
    for t in ts:
        t.start()
    deadline = time.monotonic() + 120  # a generous bound on progress, not a timing
    for t in ts:
        t.join(max(0.0, deadline - time.monotonic()))
    stuck = [t for t in ts if t.is_alive()]
    done.set()
    assert not stuck, "deadlock: a thread made no progress in 120 s"
    assert not errors, errors
    assert db.stats()["levels"][0]["files"] + db.stats()["levels"][1]["files"] > 0  # flushes ran
    db.close()


def test_a_writer_and_an_ingest_side_by_side(tmp_path):
    def ingest(db, j):
        db.ingest([(b"z%08d" % (j * 10 + k), b"y") for k in range(10)], sorted=True)

    _side_by_side(tmp_path, ingest)


def test_a_writer_and_checkpoints_side_by_side(tmp_path):
    def checkpoint(db, j):
        if j < 12:
            db.checkpoint(str(tmp_path / f"ck{j}"))

    _side_by_side(tmp_path, checkpoint)
    assert os.path.isdir(tmp_path / "ck11")
