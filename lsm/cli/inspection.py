"""The inspection commands: ``stats``, ``verify`` and the file dumps
(``dump-wal``, ``dump-sst``, ``dump-manifest``, over :mod:`lsm.dump`).
They read; only opening the database (``stats``, ``verify``) may run
recovery."""

from __future__ import annotations

import argparse
from datetime import datetime, timezone
from typing import Any

import lsm
from lsm import dump as _dump
from lsm.base.fs import DEFAULT_FS
from lsm.base.infolog import human_bytes
from lsm.cli.common import Failure, need, open_db, print_json, show, show_report


def _stats_text(st: dict[str, Any]) -> str:
    lat = st.get("wal_sync_latency") or {}
    lines = [
        (f"health              {st['health']}" + (f" ({st['fenced'] or st['background_error']})"
                                                  if st['health'] != 'ok' else "")),
        f"last seq            {st['last_seq']:,} (durable {st['durable_seq']:,})",
        (f"sstables            {st['sst_files']:,} files, {human_bytes(st['sst_bytes'])}"
         f" (space amplification {st.get('space_amplification', 0):.2f})"),
        (f"memtable            {st['memtable_entries']:,} entries, {human_bytes(st['memtable_bytes'])};"
         f" {st['immutable_memtables']} immutable"),
        (f"wal                 {st['wal_files_live']} live segments, {human_bytes(st['wal_bytes_live'])};"
         f" {st['wal_files_archived']} archived, {human_bytes(st['wal_bytes_archived'])}"),
        (f"wal syncs           {st['wal_syncs']:,}; latency p50 {lat.get('p50', 0) * 1e3:.2f} ms,"
         f" p99 {lat.get('p99', 0) * 1e3:.2f} ms, max {lat.get('max', 0) * 1e3:.2f} ms"
         f" (last {lat.get('samples', 0)})"),
        (f"unsynced            {human_bytes(st.get('wal_unsynced_bytes', 0))},"
         f" oldest {st.get('wal_unsynced_age_seconds', 0):.3f} s"),
        (f"written (this open) {st['keys_written']:,} keys, {human_bytes(st['user_bytes_written'])};"
         f" write amplification {st['write_amplification']:.2f}"),
        f"flushes             {st['flush_count']} ({st['flush_seconds']:.2f} s)",
        (f"compactions         {st['compaction_count']} ({st['compaction_seconds']:.2f} s), read"
         f" {human_bytes(st['compaction_bytes_read'])}, wrote {human_bytes(st['compaction_bytes_written'])}"),
        (f"stalls              {st['stall_count']} ({st['stall_seconds']:.2f} s)" + "".join(
             f"; {cause} {v['count']} ({v['seconds']:.2f} s)" for cause, v in (st.get("stalls") or {}).items())),
        f"block cache         {st['block_cache_hits']:,} hits, {st['block_cache_misses']:,} misses, "
        f"{st['block_cache_refused']:,} not admitted",
        "",
        "level  files       bytes      target        read     written",
    ]
    for lv in st["levels"]:
        lines.append(f"{lv['level']:>5}  {lv['files']:>5}  {human_bytes(lv['bytes']):>10}"
                     f"  {human_bytes(lv['target_bytes']) if lv['target_bytes'] else '-':>10}"
                     f"  {human_bytes(lv.get('read_bytes', 0)):>10}  {human_bytes(lv.get('write_bytes', 0)):>10}")
    return "\n".join(lines)


def cmd_stats(args: argparse.Namespace) -> int:
    with open_db(args) as db:
        st = db.stats()
    if args.json:
        print_json(st)
    else:
        print(_stats_text(st))
    return 0


def _problem(p: Any) -> str:
    get = p.get if isinstance(p, dict) else (lambda name: getattr(p, name, None))
    path, reason, offset = get("path"), get("reason"), get("offset")
    if path is None and reason is None:
        return str(p)
    return f"{path}: {reason}" + (f" at offset {offset}" if offset is not None else "")


def _failed(report: Any) -> str | None:
    """Why a verify report says the database is damaged, or None."""
    get = report.get if isinstance(report, dict) else (lambda name, default=None: getattr(report, name, default))
    bad = get("problems", None) or get("corrupt_files", None) or get("errors", None)
    if isinstance(bad, (list, tuple)) and bad:
        return f"{len(bad)} problem(s), the first: {_problem(bad[0])}"
    if get("ok", None) is False:
        return "damage found"
    return None


def cmd_verify(args: argparse.Namespace) -> int:
    need(lsm.DB, "verify", "lsm verify")
    with open_db(args) as db:
        report = db.verify()
    show_report(report, args.format, args.json)
    why = _failed(report)
    if why:
        raise Failure(f"verification failed: {why}")
    return 0


def _when(us: int) -> str:
    try:
        return datetime.fromtimestamp(us / 1e6, timezone.utc).isoformat(timespec="microseconds").replace(
            "+00:00", "Z")
    except (OverflowError, OSError, ValueError):
        return f"@{us}us"


def _short(b: bytes, fmt: str, full: bool) -> str:
    s = show(b, fmt)
    return s if full or len(s) <= 80 else f"{s[:77]}... ({len(b)} bytes)"


def cmd_dump_wal(args: argparse.Namespace) -> int:
    fmt = args.format
    segments = _dump.dump_wal(DEFAULT_FS, args.path)
    for seg in segments:
        if args.json:
            for r in seg["records"]:
                r["time"] = _when(r["timestamp_us"])
                r["ops"] = [{"kind": k, "key": key, "value": v} for k, key, v in r["ops"]]
            print_json(seg, fmt, lines=True)
            continue
        print(f"== {seg['path']}: first seq {seg['first_seq']}, {seg['file_size']:,} bytes,"
              f" {len(seg['records'])} records")
        for r in seg["records"]:
            ops = "; ".join(f"{k} {_short(key, fmt, args.full)}" + (f" = {_short(v, fmt, args.full)}"
                                                                     if k != "DELETE" else "")
                            for k, key, v in r["ops"])
            err = f" UNDECODABLE BODY: {r['error']}" if r.get("error") else ""
            print(f"seq {r['seq']} count {r['count']} {_when(r['timestamp_us'])} @{r['offset']}: {ops}{err}")
        d = seg["damage"]
        if d is not None:
            print(f"damage at offset {d['offset']}: {d['reason']}"
                  + (" (a torn tail: nothing intact follows)" if d["is_tail"] else f" (not a tail: {d['detail']})"))
    return 0


def cmd_dump_sst(args: argparse.Namespace) -> int:
    fmt = args.format
    d = _dump.dump_sst(DEFAULT_FS, args.path, entries=not args.no_entries, limit=args.limit)
    if args.json:
        print_json(d, fmt)
        return 0
    print(f"== {d['path']}: {d['file_size']:,} bytes")
    print("properties:")
    for k, v in d["properties"].items():
        print(f"  {k} = {show(v, fmt) if isinstance(v, bytes) else v}")
    print(f"index: {len(d['index'])} data blocks")
    for i, b in enumerate(d["index"]):
        print(f"  block {i} @{b['offset']} ({b['size']} bytes): last key {_short(b['last_key'], fmt, args.full)}"
              f" seq {b['last_seq']} {b['last_kind']}")
    if "entries" in d:
        print(f"entries{'' if args.limit is None else f' (first {args.limit})'}:")
        for e in d["entries"]:
            tail = f" = {_short(e['value'], fmt, args.full)}" if e["kind"] == "PUT" else ""
            print(f"  {_short(e['key'], fmt, args.full)} @{e['seq']} {e['kind']}{tail}")
    if d["damage"]:
        print(f"damage: {d['damage']['reason']}")
        raise Failure(d["damage"]["reason"])
    return 0


def _file_line(f: dict[str, Any], fmt: str) -> str:
    return (f"{f['number']:06d}.sst {human_bytes(f['file_size'])} [{_short(f['smallest'], fmt, False)} .."
            f" {_short(f['largest'], fmt, False)}] seq {f['min_seq']}..{f['max_seq']},"
            f" {f['num_entries']} entries ({f['num_deletes']} deletes)")


def cmd_dump_manifest(args: argparse.Namespace) -> int:
    fmt = args.format
    d = _dump.dump_manifest(DEFAULT_FS, args.db)
    if args.json:
        print_json(d, fmt)
        return 0
    print(f"== {d['manifest']}: {d['file_size']:,} bytes, {len(d['edits'])} edits")
    for i, e in enumerate(d["edits"]):
        counters = ", ".join(f"{name.replace('_', ' ')} {e[name]}" for name in
                             ("next_file_number", "last_seq", "flushed_seq") if e[name] is not None)
        print(f"edit {i} @{e['offset']}: {counters or 'no counters'}")
        for r in e["removed"]:
            print(f"  - level {r['level']}: {r['number']:06d}.sst")
        for f in e["added"]:
            print(f"  + level {f['level']}: {_file_line(f, fmt)}")
    if d["damage"]:
        print(f"damage at offset {d['damage']['offset']}: {d['damage']['reason']}")
    v = d["version"]
    if v is not None:
        print(f"current version: next file number {v['next_file_number']}, last seq {v['last_seq']},"
              f" flushed seq {v['flushed_seq']}")
        for lv, files in enumerate(v["levels"]):
            if files:
                print(f"  level {lv}: {len(files)} files, {human_bytes(sum(f['file_size'] for f in files))}")
                for f in files:
                    print(f"    {_file_line(f, fmt)}")
    return 0
