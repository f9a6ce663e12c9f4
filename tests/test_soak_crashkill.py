"""tools/crash_kill.py's ``--option NAME=VALUE``: every kind of database
option can be overridden, bools too (``wal_preallocate=false`` reached
Options as the string or int and the writer failed to start: power-cut
runs without preallocation were impossible)."""

from __future__ import annotations

import os
import sys

import pytest

import lsm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.append(os.path.join(ROOT, "tools"))
from crashkill.commandline import parse_args
from crashkill.workload import options_from


def test_option_values_get_the_types_options_want():
    a = parse_args(["--option", "wal_preallocate=false", "--option", "mmap_reads=True",
                    "--option", "memtable_size=65536", "--option", "sync_interval=0.05",
                    "--option", "compression=zstd"])
    opts = options_from(a)
    assert opts["wal_preallocate"] is False and opts["mmap_reads"] is True
    assert opts["memtable_size"] == 65536 and opts["sync_interval"] == 0.05 and opts["compression"] == "zstd"
    lsm.Options(**opts).validate()  # the writer's open would raise TypeError on a wrong type


def _count_fillings(monkeypatch) -> list:
    """Wrap the oracle's ``_fill``: the returned list receives each filling
    its outermost call yields (its recursive calls pass ``used``)."""
    from crashkill import oracle

    pulled: list = []
    fill = oracle._fill

    def counting(*args, **kw):
        for a in fill(*args, **kw):
            if len(args) < 4:
                pulled.append(a)
            yield a

    monkeypatch.setattr(oracle, "_fill", counting)
    return pulled


def test_oracle_tries_hole_fillings_lazily(monkeypatch):
    """verify() tries the ways to fill the holes as _fill generates them
    and stops at the first that gives the reopened state. It listed them
    all first: with 16 writer threads (--threads 16) a power cycle's holes
    had ~1e8 orderings of in-flight commits, and the driver grew to 18 GB.
    Here: 10 threads each with one in-flight one-op commit and no
    acknowledged commit, 5 of them recovered (P(10, 5) = 30240 orderings);
    the state is that of the first ordering _fill yields."""
    from crashkill import oracle
    from crashkill.workload import PUT, Workload, make_commit

    w = Workload(seed=3, batch_prob=0.0, delete_prob=0.0, promise_prob=0.0, mix=(("OFF", 1),))
    res = oracle.CycleResult()
    res.ready_seq = 0
    state: dict[bytes, bytes] = {}
    for t in range(5):
        c = make_commit(w, 0, t, 0)
        assert c.count == 1
        for kind, key, value in c.ops:
            assert kind == PUT
            state[key] = value
    pulled = _count_fillings(monkeypatch)
    figures = oracle.verify(w, 0, res, 10, {}, 0, state, 5, power=True)
    assert figures["in_flight_recovered"] == 5
    assert len(pulled) == 1, f"{len(pulled)} fillings generated before the check"
    with pytest.raises(oracle.Failure, match="not explained by this cycle's commits"):
        oracle.verify(w, 0, res, 2, {}, 0, state, 5, power=True)  # 2 threads cannot fill 5 seqs


def test_oracle_places_recovered_in_flight_commits_first(monkeypatch):
    """An in-flight commit whose value the reopened state holds was
    recovered, so every filling of the holes must include it: _fill cuts a
    branch as soon as those commits no longer fit. Without the cut, 12
    threads whose last 5 in-flight commits were recovered made _fill try
    every ordering that starts with an absent commit first (thousands),
    and 16 threads ran for minutes per cycle."""
    from crashkill import oracle
    from crashkill.workload import Workload, make_commit

    w = Workload(seed=4, batch_prob=0.0, delete_prob=0.0, promise_prob=0.0, mix=(("OFF", 1),))
    res = oracle.CycleResult()
    res.ready_seq = 0
    state = {key: value for t in range(7, 12) for _kind, key, value in make_commit(w, 0, t, 0).ops}
    assert len(state) == 5  # five distinct keys: any order of the five gives this state
    pulled = _count_fillings(monkeypatch)
    assert oracle.verify(w, 0, res, 12, {}, 0, state, 5, power=True)["in_flight_recovered"] == 5
    assert len(pulled) == 1, f"{len(pulled)} fillings generated before the check"
    assert sorted(c.thread for c in pulled[0].values()) == [7, 8, 9, 10, 11]
