"""The ``lsm`` command: thin argument handling over the library.

::

    lsm get DB KEY                    lsm put DB KEY VALUE          lsm delete DB KEY
    lsm scan DB [--start K] [--stop K] [--prefix P] [--reverse] [--limit N]
    lsm stats DB                      lsm flush DB                  lsm compact DB [--start K] [--stop K]
    lsm verify DB                     lsm checkpoint DB DEST        lsm ingest DB FILE
    lsm restore SRC DEST --to-seq N | --to-time ISO8601
    lsm dump-wal PATH                 lsm dump-sst PATH             lsm dump-manifest DB
    lsm doctor [DIR]

Conventions (docs/operations.md, "Command line"):

* Every command has ``--help``. Exit status 0 on success, 1 on failure with
  one line ``lsm: error: REASON`` on stderr (an lsm error, an OSError, a
  bad value, a key not found), 2 for a usage error (argparse's message,
  also for a key that is not valid hex or base64).
* Keys and values are text (UTF-8) by default; ``--format hex|base64``
  switches every key and value of the command, in and out, and a single
  argument may carry its own: ``hex:00ff``, ``b64:AP8=``, ``text:hex:x``
  (the literal text ``hex:x``). Text output escapes what is not printable
  (``\\xNN``) and the backslash (``\\\\``).
* ``--json`` prints the result as JSON (``scan`` and ``dump-wal`` print
  one JSON object per line, so they stream).
* Long operations show progress on stderr only when it is a terminal
  (tqdm when installed, else a plain line); piped, they print nothing but
  their result.
* Commands that open a database take ``--wal-dir`` (a database whose WAL
  lives elsewhere must be opened with it, or its log is not found) and
  ``-o NAME=VALUE`` for any other option. Only ``put`` and ``ingest`` with
  ``--create`` create a database; everything else refuses a directory
  without one.

``verify``, ``checkpoint``, ``restore`` and ``ingest`` call library APIs
(``DB.verify``, ``DB.checkpoint``, ``lsm.restore``, ``DB.ingest``) when
this build has them, and otherwise fail with "not available in this
build".

Why argparse and not click: the command ships inside the library's own
package, and argparse gives everything needed here (subcommands, --help,
exit status 2 on usage errors) without adding a dependency to every
program that only wants the storage engine.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import csv
import dataclasses
import inspect
import io
import json
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any

import lsm
from lsm import doctor as _doctor
from lsm import dump as _dump
from lsm.base.fs import DEFAULT_FS
from lsm.base.infolog import human_bytes

FORMATS = ("text", "hex", "base64")
_PREFIXES = (("hex:", "hex"), ("b64:", "base64"), ("base64:", "base64"), ("text:", "text"))


class Failure(Exception):
    """A failure reported as ``lsm: error: MESSAGE``, exit status 1."""


class UsageError(Exception):
    """A bad argument value: argparse's usage message, exit status 2."""


# ------------------------------------------------------------------ encoding
def parse_bytes(s: str, fmt: str, what: str) -> bytes:
    """An argument as bytes: ``fmt`` unless ``s`` carries a prefix. Raises
    UsageError naming ``what`` for bad hex or base64."""
    for prefix, f in _PREFIXES:
        if s.startswith(prefix):
            s, fmt = s[len(prefix):], f
            break
    if fmt == "hex":
        try:
            return bytes.fromhex(s)
        except ValueError:
            raise UsageError(f"{what}: not valid hex: {s!r}") from None
    if fmt == "base64":
        try:
            return base64.b64decode(s, validate=True)
        except (binascii.Error, ValueError):
            raise UsageError(f"{what}: not valid base64: {s!r}") from None
    return s.encode("utf-8", "surrogateescape")  # argv bytes that are not UTF-8 come back unchanged


def show(b: bytes, fmt: str) -> str:
    """Bytes for output in ``fmt``. Text: printable characters as they are,
    ``\\\\`` for a backslash, ``\\xNN`` for other bytes and control
    characters (unambiguous, so a value can be told apart from its
    escaping)."""
    if fmt == "hex":
        return b.hex()
    if fmt == "base64":
        return base64.b64encode(b).decode("ascii")
    s = b.decode("utf-8", "surrogateescape")
    if s.isprintable() and "\\" not in s:
        return s
    out = []
    for ch in s:
        o = ord(ch)
        if ch == "\\":
            out.append("\\\\")
        elif 0xDC80 <= o <= 0xDCFF:  # a byte that is not UTF-8
            out.append(f"\\x{o - 0xDC00:02x}")
        elif not ch.isprintable():
            out.append(f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}" if o < 0x10000 else f"\\U{o:08x}")
        else:
            out.append(ch)
    return "".join(out)


def jsonable(obj: Any, fmt: str) -> Any:
    """``obj`` with every bytes shown in ``fmt``, dataclasses as dicts,
    tuples as lists: ready for json.dumps."""
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return show(bytes(obj), fmt)
    if isinstance(obj, dict):
        return {str(k) if not isinstance(k, bytes) else show(k, fmt): jsonable(v, fmt) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [jsonable(v, fmt) for v in obj]
    if callable(getattr(obj, "as_dict", None)):
        return jsonable(obj.as_dict(), fmt)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return jsonable(dataclasses.asdict(obj), fmt)
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if hasattr(obj, "_asdict"):
        return jsonable(obj._asdict(), fmt)
    if hasattr(obj, "__dict__"):
        return jsonable({k: v for k, v in vars(obj).items() if not k.startswith("_")}, fmt)
    return str(obj)


def _print_json(obj: Any, fmt: str = "text", *, lines: bool = False) -> None:
    print(json.dumps(jsonable(obj, fmt), separators=(",", ":") if lines else None, indent=None if lines else 2))


# ------------------------------------------------------------------ progress
class Progress:
    """Progress on stderr while it is a terminal: tqdm when installed,
    else a plain line rewritten in place (at most 10 times a second).
    Piped or redirected, it prints nothing."""

    def __init__(self, desc: str, total: float | None = None, unit: str = "it", *, enabled: bool | None = None):
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.desc = desc
        self.total = total
        self.unit = unit
        self.n = 0.0
        self._last = 0.0
        self._bar: Any = None
        if self.enabled:
            try:
                from tqdm import tqdm  # optional: the bench extra installs it

                # A terminal that reports a size of 0 (a fresh pty) would get no bar at all from tqdm's own
                # detection; shutil falls back to 80x24.
                cols, rows = shutil.get_terminal_size()
                self._bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, leave=False,
                                 unit_scale=unit == "B", ncols=cols, nrows=rows)
            except ImportError:
                pass

    def set(self, n: float, desc: str | None = None) -> None:
        if not self.enabled:
            return
        if desc is not None:
            self.desc = desc
        if self._bar is not None:
            if desc is not None:
                self._bar.set_description_str(desc)
            self._bar.update(n - self.n)
            self.n = n
            return
        self.n = n
        now = time.monotonic()
        if now - self._last < 0.1:
            return
        self._last = now
        if self.total:
            shown = f"{self.desc}: {min(100.0, 100.0 * n / self.total):3.0f}%"
        else:
            shown = f"{self.desc}: {n:,.0f} {self.unit}"
        sys.stderr.write("\r" + shown.ljust(60)[:79])
        sys.stderr.flush()

    def close(self) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.close()
        else:
            sys.stderr.write("\r" + " " * 79 + "\r")
            sys.stderr.flush()


# ---------------------------------------------------------------- databases
def _option_value(text: str) -> Any:
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return text


def open_db(args: argparse.Namespace, *, create: bool = False) -> lsm.DB:
    """Open the database named by ``args.db`` with ``--wal-dir`` and ``-o``
    options; refuse to create one unless ``create``."""
    kwargs: dict[str, Any] = {}
    for item in getattr(args, "option", None) or ():
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise UsageError(f"-o: expected NAME=VALUE, got {item!r}")
        kwargs[name.strip()] = _option_value(value.strip())
    kwargs.setdefault("create_if_missing", create)
    if getattr(args, "wal_dir", None):
        kwargs["wal_dir"] = args.wal_dir
    hint = " (--create makes one)" if hasattr(args, "create") else ""
    if not create and not os.path.isdir(args.db):
        raise Failure(f"{args.db}: no database here (no such directory){hint}")
    try:
        return lsm.open(args.db, **kwargs)
    except lsm.InvalidDatabaseError as e:
        raise Failure(f"{e}{hint if 'create_if_missing' in str(e) else ''}") from None
    except TypeError as e:  # an -o option of the wrong type
        raise Failure(str(e)) from None


def _need(obj: Any, name: str, what: str) -> Callable[..., Any]:
    fn = getattr(obj, name, None)
    if fn is None:
        raise Failure(f"{what} is not available in this build (this lsm {lsm.__version__} has no {name}())")
    return fn  # type: ignore[no-any-return]


# ----------------------------------------------------------------- commands
def cmd_get(args: argparse.Namespace) -> int:
    key = parse_bytes(args.key, args.format, "KEY")
    with open_db(args) as db:
        value = db.get(key)
    if args.json:
        _print_json({"key": key, "found": value is not None, "value": value}, args.format)
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
        _print_json({"seq": seq})
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    key = parse_bytes(args.key, args.format, "KEY")
    with open_db(args) as db:
        seq = db.delete(key, sync=args.sync)
    if args.json:
        _print_json({"seq": seq})
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
        f"block cache         {st['block_cache_hits']:,} hits, {st['block_cache_misses']:,} misses",
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
        _print_json(st)
    else:
        print(_stats_text(st))
    return 0


def cmd_flush(args: argparse.Namespace) -> int:
    with open_db(args) as db:
        db.flush()
        st = db.stats()
    if args.json:
        _print_json({"sst_files": st["sst_files"], "level0_files": st["levels"][0]["files"],
                     "durable_seq": st["durable_seq"]})
    return 0


def cmd_compact(args: argparse.Namespace) -> int:
    fmt = args.format
    start = None if args.start is None else parse_bytes(args.start, fmt, "--start")
    stop = None if args.stop is None else parse_bytes(args.stop, fmt, "--stop")
    db = open_db(args)
    worker: threading.Thread | None = None
    try:
        before = db.stats()
        t0 = time.perf_counter()
        errors: list[BaseException] = []

        def run() -> None:
            try:
                db.compact_range(start, stop)
            except BaseException as e:  # noqa: BLE001 - re-raised below
                errors.append(e)

        # A daemon: interrupted (^C), the process exits at once, as after a crash (the database is
        # crash-safe: the next open removes the half-written tables).
        worker = threading.Thread(target=run, name="lsm-cli-compact", daemon=True)
        worker.start()
        # Progress: bytes compaction has read, against the bytes in the range's levels (an estimate: a
        # file may be read once per level it passes through, so the bar stops short of 100% at times).
        bar = Progress("compacting", total=max(1, before["sst_bytes"] + before["memtable_bytes"]), unit="B")
        bar.set(0)
        try:
            while worker.is_alive():
                worker.join(0.2)
                bar.set(min(db.stats()["compaction_bytes_read"] - before["compaction_bytes_read"], bar.total or 0))
        finally:
            bar.close()
        if errors:
            raise errors[0]
        after = db.stats()
    finally:
        if worker is None or not worker.is_alive():  # never close under a running compaction
            db.close()
    result = {"seconds": time.perf_counter() - t0, "files_before": before["sst_files"],
              "bytes_before": before["sst_bytes"], "files_after": after["sst_files"],
              "bytes_after": after["sst_bytes"],
              "bytes_read": after["compaction_bytes_read"] - before["compaction_bytes_read"],
              "bytes_written": after["compaction_bytes_written"] - before["compaction_bytes_written"]}
    if args.json:
        _print_json(result)
    else:
        print(f"compacted in {result['seconds']:.2f} s: {result['files_before']} files,"
              f" {human_bytes(result['bytes_before'])} -> {result['files_after']} files,"
              f" {human_bytes(result['bytes_after'])} (read {human_bytes(result['bytes_read'])},"
              f" wrote {human_bytes(result['bytes_written'])})")
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


def _show_report(report: Any, fmt: str, as_json: bool) -> None:
    if as_json:
        _print_json(report, fmt)
        return
    if report is None:
        return
    if type(report).__str__ is not object.__str__ and not isinstance(report, (dict, list, tuple)):
        print(report)  # the report's own summary
        return
    data = jsonable(report, fmt)
    if isinstance(data, dict):
        for k, v in data.items():
            print(f"{k}: {json.dumps(v) if isinstance(v, (dict, list)) else v}")
    else:
        print(data)


def cmd_verify(args: argparse.Namespace) -> int:
    _need(lsm.DB, "verify", "lsm verify")
    with open_db(args) as db:
        report = db.verify()
    _show_report(report, args.format, args.json)
    why = _failed(report)
    if why:
        raise Failure(f"verification failed: {why}")
    return 0


def cmd_checkpoint(args: argparse.Namespace) -> int:
    _need(lsm.DB, "checkpoint", "lsm checkpoint")
    with open_db(args) as db:
        result = db.checkpoint(args.dest)
    _show_report(result, "text", args.json)
    return 0


def parse_time(text: str) -> datetime:
    """An ISO 8601 time (``2026-11-21T12:00:00Z``, ``...+02:00``; without a
    zone: local time) as an aware datetime."""
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise UsageError(f"--to-time: not an ISO 8601 time: {text!r} (e.g. 2026-11-21T12:00:00Z)") from None
    return t if t.tzinfo is not None else t.astimezone()


def cmd_restore(args: argparse.Namespace) -> int:
    restore = _need(lsm, "restore", "lsm restore")
    kwargs: dict[str, Any] = {}
    if args.to_seq is not None:
        kwargs["to_seq"] = args.to_seq
    else:
        t = parse_time(args.to_time)
        kwargs["to_time"] = t
        try:  # pass what the API declares: a datetime, or seconds since the epoch
            ann = str(inspect.signature(restore).parameters["to_time"].annotation)
            if "datetime" not in ann and ("float" in ann or "int" in ann):
                kwargs["to_time"] = t.timestamp()
        except (KeyError, TypeError, ValueError):
            pass
    if args.wal_dir:
        kwargs["wal_dirs"] = args.wal_dir
    result = restore(args.src, args.dest, **kwargs)
    _show_report(result, "text", args.json)
    return 0


def _lines(path: str) -> Iterator[bytes]:
    """The lines of ``path`` (``-``: stdin), read in 1 MiB chunks through
    the filesystem layer (an ingest file may be larger than memory)."""
    if path == "-":
        yield from sys.stdin.buffer
        return
    f = DEFAULT_FS.open_read(path)
    try:
        off, rest = 0, b""
        while True:
            chunk = f.pread(off, 1 << 20)
            if not chunk:
                break
            off += len(chunk)
            parts = (rest + chunk).split(b"\n")
            rest = parts.pop()
            for line in parts:
                yield line + b"\n"
        if rest:
            yield rest
    finally:
        f.close()


def read_items(path: str, kind: str, fmt: str, counter: list[int]) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) pairs of a CSV (two columns; a first row ``key,value``
    is a header) or JSON-lines file (``{"key": ..., "value": ...}`` or
    ``[key, value]`` per line), keys and values in ``fmt``. ``counter[0]``
    counts rows read. Raises ValueError naming the line of a bad row."""
    if kind == "csv":
        reader = csv.reader(io.TextIOWrapper(io.BufferedReader(_Chunks(_lines(path))), encoding="utf-8", newline=""))
        for i, row in enumerate(reader):
            if i == 0 and [c.strip().lower() for c in row] == ["key", "value"]:
                continue
            if not row:
                continue
            if len(row) != 2:
                raise ValueError(f"{path}: line {reader.line_num}: expected 2 columns (key,value), got {len(row)}")
            counter[0] += 1
            yield _item(row[0], row[1], fmt, path, reader.line_num)
        return
    for lineno, line in enumerate(_lines(path), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as e:
            raise ValueError(f"{path}: line {lineno}: not JSON: {e}") from None
        if isinstance(obj, dict) and "key" in obj and "value" in obj:
            k, v = obj["key"], obj["value"]
        elif isinstance(obj, list) and len(obj) == 2:
            k, v = obj
        else:
            raise ValueError(f'{path}: line {lineno}: expected {{"key": ..., "value": ...}} or [key, value]')
        if not isinstance(k, str) or not isinstance(v, str):
            raise ValueError(f"{path}: line {lineno}: key and value must be JSON strings")  # noqa: TRY004 - bad input
        counter[0] += 1
        yield _item(k, v, fmt, path, lineno)


def _item(k: str, v: str, fmt: str, path: str, line: int) -> tuple[bytes, bytes]:
    try:
        return parse_bytes(k, fmt, "key"), parse_bytes(v, fmt, "value")
    except UsageError as e:
        raise ValueError(f"{path}: line {line}: {e}") from None


class _Chunks(io.RawIOBase):
    """A readable binary stream over an iterator of byte strings."""

    def __init__(self, it: Iterator[bytes]):
        self._it = it
        self._buf = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not self._buf:
            try:
                self._buf = next(self._it)
            except StopIteration:
                return 0
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


def cmd_ingest(args: argparse.Namespace) -> int:
    _need(lsm.DB, "ingest", "lsm ingest")
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
        _print_json({"rows": counter[0], "seconds": seconds, "result": jsonable(result, "text")})
    else:
        print(f"ingested {args.file} ({counter[0]:,} rows) in {seconds:.2f} s")
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
            _print_json(seg, fmt, lines=True)
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
        _print_json(d, fmt)
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
        _print_json(d, fmt)
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


def cmd_doctor(args: argparse.Namespace) -> int:
    if args.seconds <= 0 or args.threads < 1:
        raise UsageError("--seconds must be > 0 and --threads >= 1")
    if not os.path.isdir(args.dir):
        raise Failure(f"{args.dir}: not a directory")
    bar = Progress("doctor", total=len(_doctor.PHASES))
    done = [0]

    def step(phase: str) -> None:
        bar.set(done[0], f"doctor: {phase.replace('_', ' ')}")
        done[0] += 1

    try:
        m = _doctor.measure(DEFAULT_FS, args.dir, seconds=args.seconds, threads=args.threads, progress=step)
    finally:
        bar.close()
    levels = _doctor.advice(m, args.sync_interval)
    warn = _doctor.warnings(m)
    if args.json:
        _print_json(dict(m, levels=levels, warnings=warn))
        return 0
    fsys = m["filesystem"]
    where = f" ({fsys['type']} on {fsys['source']}, mounted at {fsys['mount_point']})" if fsys else ""
    print(f"lsm doctor: {m['directory']}{where}")
    for name, label in (("write", "append 128 B"), ("fdatasync", "fdatasync"), ("fsync", "fsync"),
                        ("dir_fsync", "directory fsync")):
        p = m[name]
        print(f"  {label:<16} p50 {p['p50'] * 1e3:8.3f} ms   p99 {p['p99'] * 1e3:8.3f} ms"
              f"   max {p['max'] * 1e3:8.3f} ms   ({p['samples']} samples)")
    print("\nWhat each sync level costs here:")
    for level, text in levels.items():
        print(f"  {level:<8}{text}")
    for w in warn:
        print(f"\nwarning: {w}")
    return 0


# ------------------------------------------------------------------- parser
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


def _one_line(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        where = f"{e.filename}: " if e.filename else ""
        return f"{where}{e.strerror}"
    text = str(e) or type(e).__name__
    return " ".join(text.split())


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); return the
    exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except UsageError as e:
        args._parser.error(str(e))  # exits 2
    except Failure as e:
        print(f"lsm: error: {_one_line(e)}", file=sys.stderr)
    except (lsm.Error, OSError, ValueError) as e:
        if isinstance(e, BrokenPipeError):  # the reader went away (lsm scan DB | head)
            sys.stdout = None  # type: ignore[assignment]  # nothing left to flush at exit
            return 0
        print(f"lsm: error: {_one_line(e)}", file=sys.stderr)
    except KeyboardInterrupt:
        print("lsm: interrupted", file=sys.stderr)
        return 130
    return 1


if __name__ == "__main__":
    sys.exit(main())
