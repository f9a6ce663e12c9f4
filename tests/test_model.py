"""A Hypothesis state machine: the DB against a dict model, with snapshots,
flush, compaction, reopen and crash, under tiny options so that flush and
compaction happen constantly. Hypothesis prints the failing op sequence and
its seed (replay with --hypothesis-seed)."""

import shutil
import tempfile

import hypothesis.strategies as st
from hypothesis import settings
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, precondition, rule

import lsm
from tests.conftest import TINY

KEYS = st.binary(min_size=0, max_size=6).map(lambda b: b"k" + b)
SMALL_KEYS = st.sampled_from([b"k", b"k\x00", b"ka", b"kb", b"kb\xff", b"kc", b"kz"])
ANY_KEY = st.one_of(KEYS, SMALL_KEYS)
VALUES = st.binary(min_size=0, max_size=40)


class DBModel(RuleBasedStateMachine):
    mode = "inline"
    snaps = Bundle("snaps")

    def __init__(self):
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="lsm-model-")
        self.path = self.dir + "/db"
        self.db = lsm.open(self.path, background=self.mode, sync=lsm.Sync.OFF, **TINY)
        self.model: dict[bytes, bytes] = {}
        self.live_snaps = []

    def teardown(self):
        for s, _m in self.live_snaps:
            s.close()
        try:
            self.db.close()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    @rule(k=ANY_KEY, v=VALUES)
    def put(self, k, v):
        self.db.put(k, v)
        self.model[k] = v

    @rule(k=ANY_KEY)
    def delete(self, k):
        self.db.delete(k)
        self.model.pop(k, None)

    @rule(ops=st.lists(st.tuples(st.booleans(), ANY_KEY, VALUES), max_size=8))
    def batch(self, ops):
        with self.db.batch() as b:
            for is_put, k, v in ops:
                if is_put:
                    b.put(k, v)
                else:
                    b.delete(k)
        for is_put, k, v in ops:
            if is_put:
                self.model[k] = v
            else:
                self.model.pop(k, None)

    @rule(k=ANY_KEY)
    def get(self, k):
        assert self.db.get(k) == self.model.get(k)

    @rule(a=ANY_KEY, b=ANY_KEY, reverse=st.booleans())
    def scan(self, a, b, reverse):
        lo, hi = min(a, b), max(a, b)
        want = sorted((k, v) for k, v in self.model.items() if lo <= k < hi)
        if reverse:
            want.reverse()
        assert list(self.db.items(lo, hi, reverse=reverse)) == want

    @rule(p=st.sampled_from([b"", b"k", b"ka", b"kb", b"k\x00", b"kb\xff"]), reverse=st.booleans())
    def prefix_scan(self, p, reverse):
        want = sorted((k, v) for k, v in self.model.items() if k.startswith(p))
        if reverse:
            want.reverse()
        assert list(self.db.items(prefix=p, reverse=reverse)) == want

    @rule(target=snaps)
    def take_snapshot(self):
        s = self.db.snapshot()
        entry = (s, dict(self.model))
        self.live_snaps.append(entry)
        return entry

    @rule(entry=snaps, k=ANY_KEY)
    def snapshot_get(self, entry, k):
        s, m = entry
        if s._open:
            assert s.get(k) == m.get(k)

    @rule(entry=snaps)
    def snapshot_scan(self, entry):
        s, m = entry
        if s._open:
            assert list(s.items()) == sorted(m.items())

    @rule(entry=snaps)
    def release_snapshot(self, entry):
        entry[0].close()

    @rule()
    def flush(self):
        self.db.flush()

    @rule(a=st.none() | ANY_KEY, b=st.none() | ANY_KEY)
    def compact(self, a, b):
        self.db.compact_range(a, b)

    def _forget_snapshots(self):
        for s, _m in self.live_snaps:
            s._open = False  # they belonged to the closed DB
        self.live_snaps = []

    @rule()
    def reopen(self):
        self.db.close()
        self._forget_snapshots()
        self.db = lsm.open(self.path, background=self.mode, sync=lsm.Sync.OFF, **TINY)

    @rule()
    def crash(self):
        # Process crash: every commit reached the OS, so nothing is lost.
        self.db._simulate_crash()
        self._forget_snapshots()
        self.db = lsm.open(self.path, background=self.mode, sync=lsm.Sync.OFF, **TINY)

    @precondition(lambda self: len(self.model) < 400)
    @rule(n=st.integers(1, 120), v=VALUES)
    def bulk(self, n, v):
        for i in range(n):
            k = b"kbulk%04d" % i
            self.db.put(k, v)
            self.model[k] = v

    @invariant()
    def counts_match(self):
        st_ = self.db.stats()
        assert st_["health"] == "ok", st_
        self.db._sv.version.check()


TestDBModelInline = DBModel.TestCase
TestDBModelInline.settings = settings(TestDBModelInline.settings, max_examples=TestDBModelInline.settings.max_examples * 4)


class ThreadModel(DBModel):
    mode = "thread"


TestDBModelThread = ThreadModel.TestCase
TestDBModelThread.settings = settings(TestDBModelThread.settings, max_examples=max(5, TestDBModelThread.settings.max_examples // 3))
