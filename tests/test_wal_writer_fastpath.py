"""sync_to's fast path (lsm/wal/sync.py, GroupSync.sync_to docstring): a
commit that joins a forming group without completing it waits on the
group's gate without taking ``_cv``'s lock, and one whose gate opens
without its commit durable goes round the locked loop. Helpers from
tests/test_wal_writer_races.py."""

from __future__ import annotations

import threading

from tests.test_wal_writer_races import (
    FULL,
    TIMEOUT,
    LingerSpy,
    Run,
    _after_a_group_of_three,
    _first_two_of_a_group,
    _poll,
    durable,
    in_sync_to,
    seg,
)


class _CountingMu:
    """Wraps ``WalWriter._mu`` (the same lock ``_cv`` uses) and records
    which threads acquire it through ``sync_to``'s ``mu.acquire()``."""

    def __init__(self, lock):
        self.lock = lock
        self.by: list[int] = []

    def acquire(self, *args):
        self.by.append(threading.get_ident())
        return self.lock.acquire(*args)

    def release(self):
        self.lock.release()

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def test_joiner_of_a_forming_group_waits_without_the_lock():
    """sync_to's fast path: a commit that joins a forming group without
    completing it waits on the group's gate without taking ``_mu``, and
    returns durable once the commit that completes the group has led its
    sync (one write, one sync for the three)."""
    fs, log, w = _after_a_group_of_three()
    syncs, writes = w.syncs, fs.counts["write"]
    w._linger_wait = spy = LingerSpy()
    a = log.append(FULL)
    mu = _CountingMu(w._mu)
    first, second, b = _first_two_of_a_group(log, a, spy, TIMEOUT, between=lambda: setattr(w, "_mu", mu))
    assert _poll(lambda: in_sync_to(second)), "the joiner never waited"
    assert w.syncs == syncs and w._forming and w.durable_seq < b
    c = log.append(FULL)
    w.commit_wait(c, FULL)  # completes the group: leads here, under the lock
    assert second.finish().error is None, second.error
    assert first.finish().error is None, first.error
    assert second.ident not in mu.by, "the joiner took the lock"
    assert threading.get_ident() in mu.by
    assert w.durable_seq == c and w.syncs == syncs + 1 and fs.counts["write"] == writes + 1
    w._mu = mu.lock
    w.close()
    assert durable(fs) == {seg(1): [1, 2, 3, a, b, c]}


def test_joiner_whose_gate_opens_uncovered_goes_round_the_loop():
    """The fast path's gate may be stale (read without the lock, just
    after its sync published): a joiner whose gate opens without its
    commit durable must not return; it takes the locked loop and returns
    only after the sync that covers it. Forced here by showing the joiner
    an open gate as the forming group's."""
    fs, log, w = _after_a_group_of_three()
    w._linger_wait = spy = LingerSpy()
    a = log.append(FULL)
    first = Run(lambda: w.commit_wait(a, FULL), "first")
    first.start()
    assert spy.lingering.wait(TIMEOUT)
    forming = w._sync_gate
    stale = threading.Lock()  # open
    with w._mu:
        w._sync_gate = stale
    b = log.append(FULL)
    second = Run(lambda: w.commit_wait(b, FULL), "second")
    second.start()
    assert _poll(lambda: in_sync_to(second)), "the joiner never waited"
    with w._mu:
        w._sync_gate = forming
    assert _poll(lambda: not second.is_alive(), 0.2) is False, "returned before any sync covered it"
    assert w.durable_seq < b
    c = log.append(FULL)
    w.commit_wait(c, FULL)  # completes the group: leads its sync
    assert second.finish().error is None, second.error
    assert first.finish().error is None, first.error
    assert w.durable_seq == c
    w.close()
    assert durable(fs) == {seg(1): [1, 2, 3, a, b, c]}
