"""Write pacing (DB._delay_write, Background.delayed_write_rate) and the
benchmark harness's split of the writer's rate by compaction activity
(benchmarks/bgsample.py). No timing assertions: the rate function is a
function of the state it is given, and the pacing schedule is checked by
its bound, not by how long a sleep took."""

from __future__ import annotations

import time
from array import array

import lsm
from benchmarks.bgsample import split_rate
from lsm.base.crashfs import CrashFS
from lsm.options import MiB


def open_db(**kw):
    return lsm.open("/db", fs=CrashFS(), background="inline", **kw)


def test_no_pacing_below_the_triggers():
    db = open_db(l0_compaction_trigger=2, l0_slowdown_trigger=4, l0_stop_trigger=8)
    bg = db._bg
    assert bg.delayed_write_rate(0) == (0.0, "l0_slowdown")
    assert not db._l0_delay
    db.close()


def test_each_level0_file_past_the_trigger_halves_the_rate():
    db = open_db(l0_compaction_trigger=2, l0_slowdown_trigger=4, l0_stop_trigger=20, delayed_write_rate=4 * MiB)
    bg = db._bg
    rates = []
    for k in range(6):
        bg.l0_files = 4 + k
        rate, cause = bg.delayed_write_rate(0)
        assert cause == "l0_slowdown"
        rates.append(rate)
    assert rates == [4 * MiB / 2**k for k in range(6)]
    with db._write_mu:
        bg.update_delay_locked(0)
    assert db._l0_delay
    bg.l0_files = 0
    with db._write_mu:
        bg.update_delay_locked(0)
    assert not db._l0_delay
    db.close()


def test_memtable_pacing_follows_the_flush_rate():
    db = open_db(memtable_size=1 * MiB, max_immutable_memtables=2, delayed_write_rate=2 * MiB)
    bg = db._bg
    with db._write_mu:
        bg.update_delay_locked(1)
    assert not db._l0_delay and bg.delayed_write_rate(0) == (0.0, "l0_slowdown")  # a slot is free
    with db._write_mu:
        bg.update_delay_locked(2)
    assert db._l0_delay
    # No flush timed yet: a memtable at delayed_write_rate.
    assert bg.delayed_write_rate(1000) == (2 * MiB, "memtables")
    bg._flush_recent = 4.0  # flushes take 4 s: they drain 1 MiB per 4 s
    assert bg.delayed_write_rate(1000) == (MiB / 4, "memtables")
    # A flush running for 1 s of its 4: the room (half a memtable) lasts
    # 3 s at 1/6 MiB/s, slower than the drain rate, so the drain rate holds;
    # with 3.9 s gone the room may go at room / 0.1 s.
    bg._flush_started = time.perf_counter() - 1.0
    rate, _ = bg.delayed_write_rate(MiB // 2)
    assert rate == MiB / 4
    bg._flush_started = time.perf_counter() - 3.9
    rate, _ = bg.delayed_write_rate(MiB // 2)
    assert MiB / 4 < rate <= (MiB // 2) / 0.05
    # A full memtable is left to the hard stall; the lower limit wins.
    assert bg.delayed_write_rate(MiB) == (0.0, "l0_slowdown")
    bg._flush_started = 0.0
    bg.l0_files = db._opts.l0_slowdown_trigger + 10
    assert bg.delayed_write_rate(0)[1] == "l0_slowdown"
    db.close()


def test_pacing_schedule_never_runs_more_than_a_tenth_of_a_second_ahead():
    db = open_db(l0_slowdown_trigger=4, l0_stop_trigger=100, delayed_write_rate=1024)
    bg = db._bg
    db.put(b"k", b"v" * 100)
    bg.l0_files = 4 + 30  # a rate of about one byte per second
    db._l0_delay = True
    before = db.stats()["write_pacing"]["l0_slowdown"]["count"]
    for _ in range(3):
        db._delay_write()
        assert bg.delay_next <= time.perf_counter() + 0.1
    st = db.stats()
    assert st["write_pacing"]["l0_slowdown"]["count"] == before + 3
    assert st["stalls"]["l0_slowdown"]["count"] >= 3
    assert st["stall_seconds"] > 0
    bg.l0_files = 0
    with db._write_mu:
        bg.update_delay_locked(0)
    assert not db._l0_delay
    db.close()


def test_stats_report_background_state():
    db = open_db(memtable_size=4096, l0_compaction_trigger=2)
    for i in range(400):
        db.put(b"%06d" % i, b"x" * 50)
    st = db.stats()
    assert st["flushes_running"] == 0 and st["compactions_running"] == 0
    assert st["compaction_pending"] is False  # inline: every wanted compaction already ran
    assert st["stall_max_seconds"] == 0.0
    assert set(st["background_cpu_seconds"]) == {"flush", "compaction"}
    db.close()


def test_split_rate_counts_ops_by_compaction_activity():
    s = 1_000_000_000
    samples = [(0, False), (s, False), (2 * s, True), (3 * s, True), (4 * s, False)]
    # 100 ops in [0, 1 s), 100 in [1, 2), 50 in [2, 3), 50 in [3, 4)
    ends = array("q", sorted([i * s // 100 for i in range(100)] + [s + i * s // 100 for i in range(100)]
                             + [2 * s + i * s // 50 for i in range(50)] + [3 * s + i * s // 50 for i in range(50)]))
    r = split_rate(samples, ends)
    # [1, 2) ends at a busy sample, so it counts as compacting: 200 ops in 3 s
    # while compacting, 100 in 1 s not.
    assert r is not None
    assert abs(r["writer_rate_compacting"] - 200 / 3) < 1e-9
    assert abs(r["writer_rate_not_compacting"] - 100) < 1e-9
    assert abs(r["writer_rate_ratio"] - 2 / 3) < 1e-9
    assert r["compacting_fraction"] == 0.75
    assert split_rate(samples[:1], ends) is None
    assert split_rate(samples, array("q")) is None
