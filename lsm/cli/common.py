"""Helpers every ``lsm`` command shares: how keys and values are read from
arguments and shown (``--format``, per-argument prefixes, text escaping),
JSON output, the two failure kinds and their exit statuses, and opening
the database a command names.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import dataclasses
import json
import os
from collections.abc import Callable
from typing import Any

import lsm

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


def print_json(obj: Any, fmt: str = "text", *, lines: bool = False) -> None:
    print(json.dumps(jsonable(obj, fmt), separators=(",", ":") if lines else None, indent=None if lines else 2))


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


# ------------------------------------------------------------------ reports
def need(obj: Any, name: str, what: str) -> Callable[..., Any]:
    """``obj.name`` (a library API), or Failure saying ``what`` is not available in this build."""
    fn = getattr(obj, name, None)
    if fn is None:
        raise Failure(f"{what} is not available in this build (this lsm {lsm.__version__} has no {name}())")
    return fn  # type: ignore[no-any-return]


def show_report(report: Any, fmt: str, as_json: bool) -> None:
    """Print what a library API returned: as JSON, by its own ``str``, or
    one ``name: value`` line per field."""
    if as_json:
        print_json(report, fmt)
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
