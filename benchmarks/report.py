"""The report: header text, one table line per engine per workload, notes
and warnings; the JSON document; medians across repeats; comparison with
an earlier JSON document.

JSON document::

    {"header": {...},
     "results": [{"engine", "workload", "ops", "seconds", "ops_per_sec",
                  "micros_per_op", "mb_per_sec",
                  "latency_us": {"p50", "p99", "p999", "max"},
                  "rss_peak_mb", "extra": {...}}, ...]}
"""

from __future__ import annotations

import json
import statistics

RESULT_FIELDS = {
    "engine": str,
    "workload": str,
    "ops": int,
    "seconds": float,
    "ops_per_sec": float,
    "micros_per_op": float,
    "mb_per_sec": float,
    "latency_us": dict,
    "rss_peak_mb": float,
    "extra": dict,
}
LATENCY_FIELDS = ("p50", "p99", "p999", "max")


def validate(doc: dict) -> list[str]:
    """Schema problems of a JSON document (empty when valid)."""
    problems = []
    if not isinstance(doc, dict) or not isinstance(doc.get("header"), dict):
        return ["document: missing header object"]
    results = doc.get("results")
    if not isinstance(results, list):
        return ["document: results is not a list"]
    for i, r in enumerate(results):
        for name, typ in RESULT_FIELDS.items():
            v = r.get(name) if isinstance(r, dict) else None
            ok = isinstance(v, typ) or (typ is float and isinstance(v, int) and not isinstance(v, bool))
            if not ok:
                problems.append(f"results[{i}].{name}: expected {typ.__name__}, got {v!r}")
        lat = r.get("latency_us") if isinstance(r, dict) else None
        if isinstance(lat, dict):
            for name in LATENCY_FIELDS:
                if not isinstance(lat.get(name), (int, float)):
                    problems.append(f"results[{i}].latency_us.{name}: missing or not a number")
    return problems


# --------------------------------------------------------------- repeats


def median_records(runs: list[list[dict]]) -> list[dict]:
    """Per (engine, workload), the record of the repeat with the median
    ops/s (the lower median for an even count), so every figure of a line
    comes from one real run; ``extra.repeats_ops_per_sec`` lists all."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for run in runs:
        for r in run:
            groups.setdefault((r["engine"], r["workload"]), []).append(r)
    out = []
    for recs in groups.values():
        if len(recs) == 1:
            out.append(recs[0])
            continue
        ordered = sorted(recs, key=lambda r: r["ops_per_sec"])
        chosen = dict(ordered[(len(ordered) - 1) // 2])
        chosen["extra"] = dict(chosen["extra"])
        chosen["extra"]["repeats_ops_per_sec"] = [r["ops_per_sec"] for r in recs]
        chosen["extra"]["median_ops_per_sec"] = statistics.median(r["ops_per_sec"] for r in recs)
        out.append(chosen)
    return out


# ------------------------------------------------------------------- text


def _lat(us: float | None) -> str:
    if us is None:
        return "-"
    if us < 10:
        return f"{us:.2f}"
    if us < 1000:
        return f"{us:.1f}"
    return f"{us:,.0f}"


def _num(x, fmt="{:,.0f}") -> str:
    return "-" if x is None else fmt.format(x)


COLUMNS = [
    ("engine", 10, "<"),
    ("workload", 26, "<"),
    ("ops", 9, ">"),
    ("us/op", 9, ">"),
    ("ops/s", 10, ">"),
    ("MB/s", 7, ">"),
    ("p50", 8, ">"),
    ("p99", 8, ">"),
    ("p99.9", 8, ">"),
    ("max", 9, ">"),
    ("wamp", 6, ">"),
    ("sst wa", 6, ">"),
    ("samp", 6, ">"),
    ("stall s", 7, ">"),
    ("flush", 5, ">"),
    ("compact", 7, ">"),
    ("rss MB", 7, ">"),
]


def _row(cells: list[str]) -> str:
    return "  ".join(f"{c:{align}{width}}" for c, (_name, width, align) in zip(cells, COLUMNS)).rstrip()


def table(results: list[dict]) -> str:
    lines = [_row([name for name, _w, _a in COLUMNS]), _row(["-" * w for _n, w, _a in COLUMNS])]
    footnotes = set()
    for r in results:
        x = r.get("extra", {})
        lat = r["latency_us"]
        wamp = "-"
        if x.get("write_amp") is not None:
            wamp = f"{x['write_amp']:.2f}"
        elif x.get("write_amp_io") is not None:
            wamp = f"{x['write_amp_io']:.2f}*"
            footnotes.add(
                "* write amp from /proc/PID/io write_bytes (pages dirtied by the engine's "
                "process; approximate)"
            )
        unit = x.get("latency_unit", "op")
        workload = (
            r["workload"] if unit in ("op", "write", "write+fdatasync") else f"{r['workload']} (/{unit})"
        )
        if unit not in ("op", "write", "write+fdatasync"):
            footnotes.add("(/unit): latency percentiles are per batch, entry, seek or call, not per key")
        lines.append(
            _row(
                [
                    r["engine"],
                    workload,
                    f"{r['ops']:,}",
                    _lat(r["micros_per_op"]),
                    _num(r["ops_per_sec"]),
                    _num(r["mb_per_sec"], "{:,.1f}"),
                    _lat(lat["p50"]),
                    _lat(lat["p99"]),
                    _lat(lat["p999"]),
                    _lat(lat["max"]),
                    wamp,
                    _num(x.get("sst_write_amp"), "{:.2f}"),
                    _num(x.get("space_amp"), "{:.2f}"),
                    _num(x.get("stall_seconds"), "{:.2f}"),
                    _num(x.get("flush_count")),
                    _num(x.get("compaction_count")),
                    _num(r.get("rss_peak_mb"), "{:,.0f}"),
                ]
            )
        )
    lines.append("")
    lines.append("latency columns p50..max are microseconds; MB/s counts key+value bytes (1 MB = 2^20 B);")
    lines.append("wamp = bytes written to disk / user bytes; samp = disk bytes / live key+value bytes")
    lines.append("sst wa = SSTable bytes written (flush + compaction) / user bytes, during the workload")
    lines.extend(write_path_lines(results))
    lines.extend(sorted(footnotes))
    return "\n".join(lines)


def write_path_lines(results: list[dict]) -> list[str]:
    """One line per write workload with background figures: the writer's
    rate while a compaction ran and while none did (benchmarks/bgsample.py),
    its longest put, and the settled SSTable write amp (--settle)."""
    out = []
    for r in results:
        x = r.get("extra", {})
        parts = []
        if x.get("writer_rate_compacting") is not None or x.get("writer_rate_not_compacting") is not None:
            ratio = x.get("writer_rate_ratio")
            parts.append(
                f"writer {_num(x.get('writer_rate_compacting'))}/s compacting "
                f"({_num(x.get('compacting_fraction'), '{:.0%}')} of the time), "
                f"{_num(x.get('writer_rate_not_compacting'))}/s not: "
                f"{_num(ratio, '{:.2f}')}"
            )
        wl = x.get("writer_latency_us")
        if wl:
            parts.append(f"writer {_num(x.get('writes_per_sec'))}/s, put p99 {_lat(wl['p99'])} us, max {_lat(wl['max'])} us")
        elif parts:
            parts.append(f"longest put {_lat(r['latency_us']['max'])} us")
        if x.get("stall_max_seconds") is not None and parts:
            parts.append(f"longest stall (engine, since open) {x['stall_max_seconds']:.3f} s")
        if x.get("sst_write_amp_settled") is not None:
            parts.append(f"sst wa settled {x['sst_write_amp_settled']:.2f} (waited {x.get('settle_seconds', 0):.1f} s)")
        if parts:
            out.append(f"{r['engine']} {r['workload']}: " + "; ".join(parts))
    if out:
        out.insert(0, "")
        out.insert(1, "background (writer rate split by whether a compaction ran; longest put = longest write stall):")
    return out


def header_text(header: dict) -> str:
    py = header["python"]
    cfg = header.get("config", {})
    out = [
        ("date", header["date"]),
        ("python", f"{py['implementation']} {py['version']} (optimize={py['optimize']})"),
        (
            "cpu",
            f"{header['cpu']['model']} x {header['cpu']['count']}; memory {header.get('memory_gib')} GiB",
        ),
        ("platform", header["platform"]),
    ]
    for role, d in header.get("disk", {}).items():
        rot = {True: ", rotational", False: ", non-rotational"}.get(d.get("rotational"), "")
        where = (
            f"{d['path']} on {d['device']} ({d['fstype']}, mounted at {d['mount']}{rot}; "
            f"{d.get('free_gib', '?')} of {d.get('size_gib', '?')} GiB free)"
        )
        out.append((f"disk ({role})", where))
    if "lsm" in header:
        lsm = header["lsm"]
        opts = ", ".join(f"{k}={v}" for k, v in lsm.get("options", {}).items())
        out.append(("lsm", f"{lsm.get('version')}; options: {opts or 'defaults'}"))
    versions = header.get("engine_versions") or {}
    if versions:
        out.append(("engines", ", ".join(f"{k} {v}" for k, v in versions.items())))
    if cfg:
        keys = (
            f"{cfg['num']:,} keys of {cfg['key_size']} B, values {cfg['value_size']} B "
            f"(compressible to {cfg['compressible_ratio']})"
        )
        runs = (
            f"{cfg['threads']} threads; batch {cfg['batch_size']}; sync={cfg['sync']}; "
            f"sync-num {cfg['sync_num']:,}; seed {cfg['seed']}; repeat {cfg.get('repeat', 1)}"
        )
        out.extend([("keys", keys), ("workloads", runs)])
    return "\n".join(f"{label + ':':<12} {text}" for label, text in out)


def report_text(doc: dict) -> str:
    header = doc["header"]
    parts = [header_text(header), ""]
    for w in header.get("warnings", []):
        parts.append(f"WARNING: {w}")
    for n in header.get("notes", []):
        parts.append(f"note: {n}")
    if header.get("warnings") or header.get("notes"):
        parts.append("")
    parts.append(table(doc["results"]))
    return "\n".join(parts)


def write_json(path: str, doc: dict) -> None:
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")


def load_json(path: str) -> dict:
    with open(path) as f:
        doc = json.load(f)
    problems = validate(doc)
    if problems:
        raise ValueError(f"{path}: not a benchmark result file: " + "; ".join(problems[:3]))
    return doc


# ---------------------------------------------------------------- compare


def compare_text(old: dict, new: dict, old_name: str = "old", new_name: str = "new") -> str:
    """Ratios new/old of ops/s per (engine, workload); > 1 means faster."""
    lines = [f"compare: {new_name} vs {old_name} (ratio = new ops/s / old ops/s; > 1 is faster)"]
    for key in ("num", "key_size", "value_size", "sync", "compressible_ratio"):
        a, b = old["header"].get("config", {}).get(key), new["header"].get("config", {}).get(key)
        if a != b:
            lines.append(f"WARNING: {key} differs: {old_name} {a}, {new_name} {b}")
    a, b = old["header"]["python"]["version"], new["header"]["python"]["version"]
    if a != b:
        lines.append(f"WARNING: Python version differs: {old_name} {a}, {new_name} {b}")
    olds = {(r["engine"], r["workload"]): r for r in old["results"]}
    news = {(r["engine"], r["workload"]): r for r in new["results"]}
    lines.append(
        f"{'engine':<10}  {'workload':<26}  {'old ops/s':>12}  {'new ops/s':>12}  {'ratio':>7}"
        f"  {'old p99':>9}  {'new p99':>9}"
    )
    for key, n in news.items():
        o = olds.get(key)
        if o is None:
            lines.append(f"{key[0]:<10}  {key[1]:<26}  {'-':>12}  {n['ops_per_sec']:>12,.0f}  {'new':>7}")
            continue
        ratio = n["ops_per_sec"] / o["ops_per_sec"] if o["ops_per_sec"] else float("inf")
        lines.append(
            f"{key[0]:<10}  {key[1]:<26}  {o['ops_per_sec']:>12,.0f}  {n['ops_per_sec']:>12,.0f}  "
            f"{ratio:>7.2f}  {_lat(o['latency_us']['p99']):>9}  {_lat(n['latency_us']['p99']):>9}"
        )
    for key in olds.keys() - news.keys():
        lines.append(
            f"{key[0]:<10}  {key[1]:<26}  {olds[key]['ops_per_sec']:>12,.0f}  {'-':>12}  {'gone':>7}"
        )
    return "\n".join(lines)
