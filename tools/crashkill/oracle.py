"""The oracle: what a killed writer reported (acknowledged commits,
durability promises), and the check of the reopened database against it:
the kill promises, or the power-cut promises (tools/crash_kill.py's
docstring lists them)."""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, field

from crashkill.failure import Failure
from crashkill.workload import PUT, Commit, Workload, make_commit, value_origin


@dataclass
class CycleResult:
    acked: dict[int, tuple[int, int]] = field(default_factory=dict)  # first seq -> (thread, commit number)
    promises: list[int] = field(default_factory=list)  # seqs reported durable by sync_wal / wait_durable
    ready_seq: int | None = None
    # version edits: flushes, compactions, others (open's); manifest roll-overs in all, in others
    edits: dict[str, int] = field(default_factory=lambda: {"f": 0, "c": 0, "o": 0, "rolls": 0, "o_rolls": 0})
    worked: threading.Event = field(default_factory=threading.Event)  # a flush and a compaction completed
    journal: list[str] = field(default_factory=list)  # SyncTrackingFS lines (power mode)
    errors: list[str] = field(default_factory=list)
    bad_lines: list[str] = field(default_factory=list)


def verify(w: Workload, cycle: int, res: CycleResult, threads: int, model: dict[bytes, bytes], start_seq: int,
           state: dict[bytes, bytes], last_seq: int, power: bool = False) -> dict[str, int]:
    """Check one cycle (module docstring): the kill promises, or with
    ``power`` the power-cut promises. Returns figures; raises Failure."""
    if res.ready_seq is not None and res.ready_seq != start_seq:
        raise Failure(f"the writer opened the database at last_seq {res.ready_seq}, the driver left it at {start_seq}")
    if last_seq < start_seq:
        raise Failure(f"the reopened database ends at seq {last_seq}, below {start_seq}, which an earlier cycle "
                      "verified (and the driver's close made durable)")
    acked: dict[int, Commit] = {}
    per_thread: dict[int, list[int]] = {t: [] for t in range(threads)}
    for seq, (t, n) in sorted(res.acked.items()):
        per_thread[t].append(n)
        acked[seq] = make_commit(w, cycle, t, n)
    for t, ns in per_thread.items():
        if sorted(ns) != list(range(len(ns))):
            raise Failure(f"thread {t} acknowledged commits {sorted(ns)[:20]}...: not 0..n-1")
    pending = [make_commit(w, cycle, t, len(ns)) for t, ns in per_thread.items()]
    # A thread's in-flight commit follows its acknowledged ones: it can only take seqs above them.
    floors = [start_seq + 1] * len(pending)
    for s, c in acked.items():
        floors[c.thread] = max(floors[c.thread], s + c.count)
    ends = sorted((s, s + c.count - 1) for s, c in acked.items())
    for (s1, e1), (s2, _e2) in itertools.pairwise(ends):
        if s2 <= e1:
            raise Failure(f"acknowledged commits overlap: seqs {s1}..{e1} and {s2}")
    if ends and ends[0][0] <= start_seq:
        raise Failure(f"a commit was acknowledged with seq {ends[0][0]}, at or below the cycle's start {start_seq}")
    for p in res.promises:
        if p > last_seq:
            raise Failure(f"sync_wal/wait_durable reported seq {p} durable, but the reopened database ends at "
                          f"{last_seq}")

    # Which acknowledged commits must be there.
    if power:
        newest = max(acked, default=0)
        must = {s: f"acknowledged at {c.level}" for s, c in acked.items() if c.level in ("FULL", "EXTRA")}
        must.update({s: "acknowledged at BARRIER, and a later commit was acknowledged" for s, c in acked.items()
                     if c.level == "BARRIER" and s < newest})
        for s, c in acked.items():
            if s <= last_seq < s + c.count - 1:
                raise Failure(f"the reopened database ends at seq {last_seq}, inside {c.describe()} (seqs {s}.."
                              f"{s + c.count - 1}): a batch was split")
        kept = {s: c for s, c in acked.items() if s <= last_seq}
    else:
        must = {s: "acknowledged (a killed process loses nothing)" for s in acked}
        kept = acked
    lost = [(s, acked[s]) for s in sorted(must) if s + acked[s].count - 1 > last_seq]
    if lost:
        by_level: dict[str, int] = {}
        for _s, c in lost:
            by_level[c.level] = by_level.get(c.level, 0) + 1
        first_seq, first = lost[0]
        raise Failure(
            f"{len(lost)} commit(s) lost that had to survive (by level: {by_level}): the reopened database ends "
            f"at seq {last_seq}, but {first.describe()} was {must[first_seq]}, with seq {first_seq}"
        )

    # The holes between the kept acknowledged commits (up to the recovered
    # end) must be filled exactly by in-flight commits, one per thread at most.
    holes = []
    cur = start_seq + 1
    for s, e in sorted((s, s + c.count - 1) for s, c in kept.items()):
        if s > cur:
            holes.append((cur, s - cur))
        cur = e + 1
    if last_seq >= cur:
        holes.append((cur, last_seq - cur + 1))
    # The ways to fill the holes are tried as they are generated (never
    # listed), up to the first that gives the state: there are up to
    # threads! / (threads - k)! orderings of k one-op commits (listing
    # them grew the driver of a 16-thread power run to 18 GB).
    # An in-flight commit one of whose values the reopened state holds was
    # recovered (values are unique per op): it must fill part of a hole.
    visible = set(state.values())
    required = frozenset(i for i, c in enumerate(pending)
                         if any(kind == PUT and value in visible for kind, _key, value in c.ops))
    best = None
    for assign in _fill(holes, pending, floors, required=required):
        commits = dict(kept)
        commits.update(assign)
        expect = dict(model)
        for s in sorted(commits):
            for kind, key, value in commits[s].ops:
                if kind == PUT:
                    expect[key] = value
                else:
                    expect.pop(key, None)
        if expect == state:
            return {"acked": len(acked), "acked_lost_allowed": len(acked) - len(kept),
                    "in_flight_recovered": len(assign), "seqs": last_seq - start_seq,
                    "promises": len(res.promises)}
        if best is None:
            best = (expect, commits)
    if best is None:
        raise Failure(
            f"sequence numbers {start_seq + 1}..{last_seq} are not explained by this cycle's commits: holes "
            f"(start, length) {holes[:10]} cannot be filled by the in-flight commits of counts "
            f"{[c.count for c in pending]} above seqs {floors} (a hole, or a commit that was never written, came back)"
        )
    expect, commits = best
    writer = {}
    for s in sorted(commits):
        for i, (_k, key, _v) in enumerate(commits[s].ops):
            writer[key] = (s + i, commits[s])
    diffs = []
    for key in sorted(set(expect) | set(state)):
        if expect.get(key) != state.get(key):
            src = writer.get(key)
            why = f"last written at seq {src[0]} by {src[1].describe()}" if src else "not written in this cycle"
            got = value_origin(state[key]) if key in state else "absent"
            want = value_origin(expect[key]) if key in expect else "absent"
            diffs.append(f"  {key!r}: expected {want}, found {got} ({why})")
    raise Failure(f"the reopened database differs from the model after seqs {start_seq + 1}..{last_seq} in "
                  f"{len(diffs)} key(s):\n" + "\n".join(diffs[:15]))


def _fill(holes: list[tuple[int, int]], pending: list[Commit], floors: list[int], used: frozenset = frozenset(),
          required: frozenset = frozenset()):
    """Every way to fill ``holes`` (start, length) with distinct commits of
    ``pending``, each hole by consecutive commits, commit i at or above seq
    ``floors[i]``, every commit of ``required`` (indices) among them:
    yields {first seq: Commit}. A branch is cut as soon as the required
    commits not yet placed no longer fit in the holes left (without that
    cut, 16 threads meant trying billions of orderings that place an
    absent in-flight commit first)."""
    if sum(pending[i].count for i in required - used) > sum(n for _s, n in holes):
        return
    if not holes:
        yield {}
        return
    (start, length), rest = holes[0], holes[1:]
    for i, c in enumerate(pending):
        if i in used or c.count > length or start < floors[i]:
            continue
        sub = [(start + c.count, length - c.count)] + rest if c.count < length else rest
        for tail in _fill(sub, pending, floors, used | {i}, required):
            yield {start: c, **tail}
