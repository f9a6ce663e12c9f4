"""The ``lsm`` argument parser: every command, its arguments and help, in
the order ``lsm --help`` lists them; each command's function comes from
its group's module."""

from __future__ import annotations

import argparse
from collections.abc import Callable

import lsm
from lsm.cli.common import FORMATS
from lsm.cli.data import cmd_delete, cmd_get, cmd_ingest, cmd_put, cmd_scan
from lsm.cli.inspection import cmd_dump_manifest, cmd_dump_sst, cmd_dump_wal, cmd_stats, cmd_verify
from lsm.cli.maintenance import cmd_checkpoint, cmd_compact, cmd_doctor, cmd_flush, cmd_restore


def _db_args(p: argparse.ArgumentParser, *, data: bool = True) -> None:
    p.add_argument("db", metavar="DB", help="the database directory")
    p.add_argument("--wal-dir", metavar="DIR", help="the WAL directory, when the database keeps it apart")
    p.add_argument("-o", "--option", action="append", metavar="NAME=VALUE",
                   help="any other lsm.Options field for the open (repeatable)")
    if data:
        p.add_argument("--format", choices=FORMATS, default="text",
                       help="how keys and values are given and shown (default text; per argument: hex:, b64:)")


def _json_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def _sync_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sync", choices=[s.name.lower() for s in lsm.Sync], default="full",
                   help="sync level of the commit (default full)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lsm", description="Operate an lsm database: read and write keys, inspect files, measure the disk.",
        epilog="Exit status: 0 ok, 1 failure (one line on stderr), 2 usage error. See docs/operations.md.")
    parser.add_argument("--version", action="version", version=f"lsm {lsm.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, fn: Callable[[argparse.Namespace], int], help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(func=fn, _parser=p)
        return p

    p = add("get", cmd_get, "print the value of a key (exit 1 when it is absent)")
    _db_args(p)
    p.add_argument("key", metavar="KEY")
    p.add_argument("--raw", action="store_true", help="write the value's bytes as they are, no newline")
    _json_arg(p)

    p = add("put", cmd_put, "set a key to a value")
    _db_args(p)
    p.add_argument("key", metavar="KEY")
    p.add_argument("value", metavar="VALUE", help="the value, or - to read it (bytes as they are) from stdin")
    p.add_argument("--create", action="store_true", help="create the database if there is none")
    _sync_arg(p)
    _json_arg(p)

    p = add("delete", cmd_delete, "delete a key (no error if it is absent)")
    _db_args(p)
    p.add_argument("key", metavar="KEY")
    _sync_arg(p)
    _json_arg(p)

    p = add("scan", cmd_scan, "print the keys and values in a range, one per line (KEY<tab>VALUE)")
    _db_args(p)
    p.add_argument("--start", metavar="KEY", help="first key (inclusive)")
    p.add_argument("--stop", metavar="KEY", help="end key (exclusive)")
    p.add_argument("--prefix", metavar="P", help="only keys starting with P")
    p.add_argument("--reverse", action="store_true", help="in descending key order")
    p.add_argument("--limit", type=int, metavar="N", help="at most N keys")
    p.add_argument("--keys-only", action="store_true", help="print keys only")
    p.add_argument("--json", action="store_true", help='one JSON object per line: {"key": ..., "value": ...}')

    p = add("stats", cmd_stats, "print the database's figures (counters count since this open)")
    _db_args(p, data=False)
    _json_arg(p)

    p = add("flush", cmd_flush, "write the memtable (what WAL replay rebuilt) to an SSTable")
    _db_args(p, data=False)
    _json_arg(p)

    p = add("compact", cmd_compact, "compact a key range (default: everything) down the levels")
    _db_args(p)
    p.add_argument("--start", metavar="KEY", help="first key of the range (inclusive)")
    p.add_argument("--stop", metavar="KEY", help="last key of the range (inclusive)")
    _json_arg(p)

    p = add("verify", cmd_verify, "check every checksum and the manifest's claims (exit 1 on damage)")
    _db_args(p)
    _json_arg(p)

    p = add("checkpoint", cmd_checkpoint, "make a consistent, openable copy of the database in DEST")
    _db_args(p, data=False)
    p.add_argument("dest", metavar="DEST", help="the new directory (must not exist or be empty)")
    _json_arg(p)

    p = add("restore", cmd_restore, "rebuild a database in DEST as of a sequence number or a time")
    p.add_argument("src", metavar="SRC", help="a checkpoint or database directory (never written to)")
    p.add_argument("dest", metavar="DEST", help="the target directory (must not exist or be empty)")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--to-seq", type=int, metavar="N", help="keep commits up to sequence number N")
    g.add_argument("--to-time", metavar="ISO8601", help="keep commits made up to this time, e.g. 2026-11-21T12:00:00Z")
    p.add_argument("--wal-dir", action="append", metavar="DIR",
                   help="another directory of WAL segments to read (the source database's wal_dir; repeatable)")
    _json_arg(p)

    p = add("ingest", cmd_ingest, "bulk-load key/value rows from a CSV or JSON-lines file as new SSTables")
    _db_args(p)
    p.add_argument("file", metavar="FILE", help="the rows (- for stdin); *.csv is CSV, anything else JSON lines")
    p.add_argument("--input-format", choices=("csv", "jsonl"), help="override the guess from the file name")
    p.add_argument("--sorted", action="store_true", help="the rows are sorted by key already (faster)")
    p.add_argument("--create", action="store_true", help="create the database if there is none")
    _json_arg(p)

    p = add("dump-wal", cmd_dump_wal, "print the records of a WAL segment, or of every segment in a directory")
    p.add_argument("path", metavar="PATH", help="a segment file, a WAL directory or its archive/")
    p.add_argument("--format", choices=FORMATS, default="text", help="how keys and values are shown")
    p.add_argument("--full", action="store_true", help="do not shorten long keys and values")
    p.add_argument("--json", action="store_true", help="one JSON object per segment and line")

    p = add("dump-sst", cmd_dump_sst, "print an SSTable's properties, index and entries")
    p.add_argument("path", metavar="PATH", help="an .sst file")
    p.add_argument("--format", choices=FORMATS, default="text", help="how keys and values are shown")
    p.add_argument("--no-entries", action="store_true", help="properties and index only")
    p.add_argument("--limit", type=int, metavar="N", help="at most N entries")
    p.add_argument("--full", action="store_true", help="do not shorten long keys and values")
    _json_arg(p)

    p = add("dump-manifest", cmd_dump_manifest, "print the manifest's version edits and the version they build")
    p.add_argument("db", metavar="DB", help="a database directory (its CURRENT manifest) or a MANIFEST file")
    p.add_argument("--format", choices=FORMATS, default="text", help="how keys are shown")
    _json_arg(p)

    p = add("doctor", cmd_doctor, "measure the disk's sync latencies and say what each sync level costs there")
    p.add_argument("dir", metavar="DIR", nargs="?", default=".", help="a directory on the disk (default .)")
    p.add_argument("--seconds", type=float, default=1.0, help="length of each of the 6 measurements (default 1)")
    p.add_argument("--threads", type=int, default=8, help="committer threads for the group commit figure")
    p.add_argument("--sync-interval", type=float, default=0.1, help="the NORMAL level's interval to assume")
    _json_arg(p)
    return parser
