"""The rows of an ``lsm ingest`` file: CSV or JSON lines, read in chunks
through the filesystem layer (a file may be larger than memory), keys and
values decoded in the command's ``--format``."""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Iterator
from typing import Any

from lsm.base.fs import DEFAULT_FS
from lsm.cli.common import UsageError, parse_bytes


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
