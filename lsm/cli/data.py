"""The data commands: ``get``, ``put``, ``delete``, ``scan`` (one key or a
range, text or JSON) and ``ingest`` (bulk load of a CSV or JSON-lines file
through ``DB.ingest``; the file is read by :mod:`lsm.cli.rows`)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator

import lsm
from lsm.cli.common import Failure, UsageError, jsonable, need, open_db, parse_bytes, print_json, show
from lsm.cli.progress import Progress
from lsm.cli.rows import read_items


def cmd_get(args: argparse.Namespace) -> int:
    key = parse_bytes(args.key, args.format, "KEY")
    with open_db(args) as db:
        value = db.get(key)
    if args.json:
        print_json({"key": key, "found": value is not None, "value": value}, args.format)
    elif value is not None:
        if args.raw:
            sys.stdout.buffer.write(value)
            sys.stdout.flush()
        else:
            print(show(value, args.format))
    if value is None:
        raise Failure(f"key {show(key, args.format)} not found")
    return 0


def cmd_put(args: argparse.Namespace) -> int:
    key = parse_bytes(args.key, args.format, "KEY")
    value = sys.stdin.buffer.read() if args.value == "-" else parse_bytes(args.value, args.format, "VALUE")
    with open_db(args, create=args.create) as db:
        seq = db.put(key, value, sync=args.sync)
    if args.json:
        print_json({"seq": seq})
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    key = parse_bytes(args.key, args.format, "KEY")
    with open_db(args) as db:
        seq = db.delete(key, sync=args.sync)
    if args.json:
        print_json({"seq": seq})
    return 0


def cmd_scan(args: argparse.Namespace) -> int:
    fmt = args.format
    start = None if args.start is None else parse_bytes(args.start, fmt, "--start")
    stop = None if args.stop is None else parse_bytes(args.stop, fmt, "--stop")
    prefix = None if args.prefix is None else parse_bytes(args.prefix, fmt, "--prefix")
    if args.limit is not None and args.limit < 0:
        raise UsageError("--limit: must be >= 0")
    out = sys.stdout
    n = 0
    with open_db(args) as db:
        for k, v in db.items(start, stop, prefix=prefix, reverse=args.reverse):
            if args.limit is not None and n >= args.limit:
                break
            n += 1
            if args.json:
                obj = {"key": show(k, fmt)} if args.keys_only else {"key": show(k, fmt), "value": show(v, fmt)}
                out.write(json.dumps(obj) + "\n")
            elif args.keys_only:
                out.write(show(k, fmt) + "\n")
            else:
                out.write(f"{show(k, fmt)}\t{show(v, fmt)}\n")
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    need(lsm.DB, "ingest", "lsm ingest")
    kind = args.input_format
    if kind is None:
        kind = "csv" if args.file.lower().endswith(".csv") else "jsonl"
    if args.file != "-" and not os.path.isfile(args.file):
        raise Failure(f"{args.file}: no such file")
    counter = [0]
    bar = Progress("ingesting", unit="rows")
    items = read_items(args.file, kind, args.format, counter)

    def counted() -> Iterator[tuple[bytes, bytes]]:
        for i, kv in enumerate(items, 1):
            if not i & 1023:
                bar.set(i)
            yield kv

    t0 = time.perf_counter()
    try:
        with open_db(args, create=args.create) as db:
            result = db.ingest(counted(), sorted=args.sorted)
    finally:
        bar.close()
    seconds = time.perf_counter() - t0
    if args.json:
        print_json({"rows": counter[0], "seconds": seconds, "result": jsonable(result, "text")})
    else:
        print(f"ingested {args.file} ({counter[0]:,} rows) in {seconds:.2f} s")
    return 0
