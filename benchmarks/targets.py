"""The performance targets of issue 7, checked against one results file.

    python -m benchmarks.targets benchmarks/results/full-1m.json [--markdown]

Every figure is a ratio taken within the one run the file holds (ours
against a peer, or against the disk's own limits measured by the
``limits`` workload), so the drift of absolute figures between runs on a
shared machine cancels out. A target whose inputs the file lacks (a peer or
a workload not run) is reported as "not measured", never as met.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass

from benchmarks.report import load_json


@dataclass
class Check:
    target: str  # the wording, short
    measured: str  # the figures behind the verdict
    met: bool | None  # None: not measured


class _Results:
    def __init__(self, doc: dict):
        self.by = {(r["engine"], r["workload"]): r for r in doc["results"]}

    def rate(self, engine: str, workload: str) -> float | None:
        r = self.by.get((engine, workload))
        return r["ops_per_sec"] if r and r["ops"] else None

    def extra(self, engine: str, workload: str, key: str):
        r = self.by.get((engine, workload))
        return (r.get("extra") or {}).get(key) if r else None

    def rss(self, engine: str, workload: str) -> float | None:
        r = self.by.get((engine, workload))
        return r.get("rss_peak_mb") if r else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _fmt(x: float | None, spec: str = "{:.2f}") -> str:
    return "n/a" if x is None else spec.format(x)


def _all(*conds: bool | None) -> bool | None:
    if any(c is None for c in conds):
        return None
    return all(conds)


def _vs_peers(r: _Results, workload: str, floors: dict[str, float]) -> tuple[str, bool | None]:
    parts, conds = [], []
    ours = r.rate("lsm", workload)
    for peer, floor in floors.items():
        q = _ratio(ours, r.rate(peer, workload))
        parts.append(f"{_fmt(q)}x {peer} (>= {floor:g})")
        conds.append(None if q is None else q >= floor)
    return "; ".join(parts), _all(*conds)


def t1(r: _Results) -> Check:
    ours = r.rate("lsm", "fillsync")
    raw = _ratio(ours, r.rate("disk", "limits.append_fdatasync"))
    pre = _ratio(ours, r.rate("disk", "limits.prealloc_fdatasync"))
    peers, ahead = _vs_peers(r, "fillsync", {"rocksdict": 1.0, "plyvel": 1.0, "sqlite3": 1.0})
    return Check("1. fillsync >= 0.95x raw append+fdatasync, ahead of every peer",
                 f"{_fmt(ours, '{:,.0f}')}/s = {_fmt(raw)}x append+fdatasync ({_fmt(pre)}x prealloc+fdatasync); {peers}",
                 _all(None if raw is None else raw >= 0.95, ahead))


def t2(r: _Results) -> Check:
    own = _ratio(r.rate("lsm", "fillsync_threads"), r.rate("lsm", "fillsync"))
    peers, ahead = _vs_peers(r, "fillsync_threads", {"rocksdict": 1.0, "plyvel": 1.0, "sqlite3": 1.0})
    return Check("2. fillsync_threads ahead of every peer, >= 4x our fillsync",
                 f"{_fmt(own)}x our fillsync; {peers}", _all(None if own is None else own >= 4, ahead))


def t3(r: _Results) -> Check:
    peers, ok = _vs_peers(r, "fillrandom", {"rocksdict": 1.0})
    return Check("3. fillrandom >= 1.0x rocksdict", peers, ok)


def t4(r: _Results) -> Check:
    peers, ok = _vs_peers(r, "fillbatch", {"sqlite3": 1.0, "plyvel": 0.8})
    return Check("4. fillbatch >= 1.0x sqlite3, >= 0.8x plyvel", peers, ok)


def t5(r: _Results) -> Check:
    peers, ok = _vs_peers(r, "readrandom", {"rocksdict": 1.0, "sqlite3": 0.8})
    miss = _ratio(r.rate("lsm", "readmissing"), r.rate("lsm", "readrandom"))
    return Check("5. readrandom >= 1.0x rocksdict, >= 0.8x sqlite3; readmissing >= 2x our readrandom",
                 f"{peers}; readmissing {_fmt(miss)}x our readrandom", _all(ok, None if miss is None else miss >= 2))


def t6(r: _Results) -> Check:
    ours = r.rate("lsm", "readseq")
    return Check("6. readseq >= 1,000,000 keys/s", f"{_fmt(ours, '{:,.0f}')} keys/s",
                 None if ours is None else ours >= 1e6)


def t7(r: _Results) -> Check:
    ratios = []
    for w in ("readwhilewriting", "fillrandom", "overwrite"):
        q = r.extra("lsm", w, "writer_rate_ratio")
        if q is not None:
            ratios.append((w, q))
    wl = r.extra("lsm", "readwhilewriting", "writer_latency_us") or {}
    longest = wl.get("max")
    stall = r.extra("lsm", "readwhilewriting", "stall_max_seconds")
    parts = [f"{w}: writer {q:.2f}x while compacting" for w, q in ratios]
    parts.append(f"longest put in readwhilewriting {_fmt(None if longest is None else longest / 1e6, '{:.2f}')} s")
    parts.append(f"longest engine stall {_fmt(stall, '{:.2f}')} s")
    rw = dict(ratios).get("readwhilewriting")
    worst = min((q for _w, q in ratios), default=None)
    return Check("7. writers keep >= 0.8 of their rate while compaction runs; no stall > 1 s",
                 "; ".join(parts),
                 _all(None if worst is None else worst >= 0.8,
                      None if longest is None else longest <= 1e6,
                      None if stall is None else stall <= 1.0) if rw is not None or ratios else None)


def t8(r: _Results) -> Check:
    wa = r.extra("lsm", "fillrandom", "sst_write_amp_settled")
    settled = wa is not None
    if wa is None:
        wa = r.extra("lsm", "fillrandom", "sst_write_amp")
    sa = r.extra("lsm", "compact", "space_amp")
    return Check("8. fillrandom write amp <= 5; space amp after compact <= 1.2",
                 f"write amp {_fmt(wa)} ({'settled' if settled else 'during the workload'}); "
                 f"space amp after compact {_fmt(sa)}",
                 _all(None if wa is None else wa <= 5, None if sa is None else sa <= 1.2))


def t9(r: _Results) -> Check:
    q = _ratio(r.rss("lsm", "fillrandom"), r.rss("rocksdict", "fillrandom"))
    return Check("9. peak RSS in fillrandom <= 1.2x rocksdict's",
                 f"{_fmt(r.rss('lsm', 'fillrandom'), '{:.0f}')} MB vs {_fmt(r.rss('rocksdict', 'fillrandom'), '{:.0f}')} MB"
                 f" = {_fmt(q)}x", None if q is None else q <= 1.2)


CHECKS: tuple[Callable[[_Results], Check], ...] = (t1, t2, t3, t4, t5, t6, t7, t8, t9)


def evaluate(doc: dict) -> list[Check]:
    r = _Results(doc)
    return [c(r) for c in CHECKS]


def render(checks: list[Check]) -> str:
    verdict = {True: "met", False: "NOT met", None: "not measured"}
    lines = ["| target | measured (ratios within one run) | verdict |", "| --- | --- | --- |"]
    for c in checks:
        lines.append(f"| {c.target} | {c.measured} | {verdict[c.met]} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.targets", description=__doc__.split("\n\n")[0])
    ap.add_argument("results", help="a JSON file written by python -m benchmarks --json")
    args = ap.parse_args(argv)
    print(render(evaluate(load_json(args.results))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
