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

Layout: ``lsm.cli.common`` (argument bytes, output, failures, opening a
database) and ``lsm.cli.progress`` are shared; the commands live by group
in ``lsm.cli.data`` (get, put, delete, scan, ingest; ingest files are read
by ``lsm.cli.rows``), ``lsm.cli.inspection`` (stats, verify, dump-*) and
``lsm.cli.maintenance`` (flush, compact, checkpoint, restore, doctor);
``lsm.cli.parser`` wires them into one argparse parser; this module runs
it (``main``, also ``python -m lsm.cli``).

Why argparse and not click: the command ships inside the library's own
package, and argparse gives everything needed here (subcommands, --help,
exit status 2 on usage errors) without adding a dependency to every
program that only wants the storage engine.
"""

from __future__ import annotations

import sys

import lsm
from lsm.cli.common import (
    FORMATS,
    Failure,
    UsageError,
    jsonable,
    need,
    open_db,
    parse_bytes,
    print_json,
    show,
)
from lsm.cli.data import cmd_delete, cmd_get, cmd_ingest, cmd_put, cmd_scan
from lsm.cli.inspection import cmd_dump_manifest, cmd_dump_sst, cmd_dump_wal, cmd_stats, cmd_verify
from lsm.cli.maintenance import cmd_checkpoint, cmd_compact, cmd_doctor, cmd_flush, cmd_restore, parse_time
from lsm.cli.parser import build_parser
from lsm.cli.progress import Progress
from lsm.cli.rows import read_items

__all__ = [
    "FORMATS", "Failure", "Progress", "UsageError", "build_parser", "cmd_checkpoint", "cmd_compact",
    "cmd_delete", "cmd_doctor", "cmd_dump_manifest", "cmd_dump_sst", "cmd_dump_wal", "cmd_flush", "cmd_get",
    "cmd_ingest", "cmd_put", "cmd_restore", "cmd_scan", "cmd_stats", "cmd_verify", "jsonable", "main", "need",
    "open_db", "parse_bytes", "parse_time", "print_json", "read_items", "show",
]


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
