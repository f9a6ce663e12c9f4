"""Ordering rules checked on the operation trace of real workloads (issue 5,
family 2). No crash is needed: every mutating operation of a workload on a
:class:`~lsm.base.crashfs.CrashFS` is recorded through its ``trace_hook``
(with the bytes of each write and the destination of each rename), and a
shadow of the filesystem replayed from that trace knows, at each moment,
what is *settled*: a file whose content was synced after its last write and
whose name is durable (a sync of its directory after its create or rename,
and the same for each directory above it that the trace created).

"Relied on" is encoded as these checks, each made at the operation that
relies (``Rules`` below names them in violations):

* ``table-before-manifest``: a manifest write that adds table N happens
  while N.sst is settled (synced after its last write, and a sync of the
  data directory after its create).
* ``manifest-before-current``: CURRENT changes only by a rename onto it
  (never written in place); at that rename the source (the temp file) is
  synced, holds ``MANIFEST-M\\n``, and MANIFEST-M is settled.
* ``current-dir-sync``: after the rename onto CURRENT, the data directory
  is synced before any manifest is written or synced again and before any
  file is removed or renamed; and before the database is closed.
* ``wal-retire-covered``: a WAL segment holding records is unlinked (or
  renamed into the archive) only when the *durable* manifest (the synced
  content of the manifest that the durably named CURRENT names) has a
  flushed sequence number at or above the segment's last record.
* ``table-remove-unreferenced`` / ``manifest-remove-unreferenced``: a
  table is unlinked only when neither the durable manifest nor the latest
  written one names it; a manifest only when neither CURRENT names it.
* ``full-ack-durable``: when a FULL or EXTRA commit returns, every commit
  up to it is in the durable state: flushed per the durable manifest, or in
  the synced content of WAL segments whose names are durable.
* ``wal-sealed-synced``: a new WAL segment is created only when every older
  segment's content is synced.
* ``new-dir-named``: nothing is created in (or renamed into) a directory
  that the trace created before that directory's own name is durable.
* ``no-delete-after-manifest-failure``: after a failed operation at the
  ``manifest`` call site, nothing is unlinked or renamed until the database
  is reopened.

Each workload reports how often each rule was checked, and the test asserts
the rules it is meant to exercise were checked (no vacuous pass). Breaking
one rule in the engine (a copy of the tree; see the report) makes these
tests fail. Counts go to ``LSM_RELIABILITY_LOG`` (JSON lines) when set.
"""

from __future__ import annotations

import errno
import os
import posixpath
import random
import re
from collections import Counter
from dataclasses import dataclass, field

import pytest

import lsm
from lsm.base import filenames
from lsm.base.coding import U32U32
from lsm.base.crashfs import CrashFS
from lsm.base.errors import CorruptionError
from lsm.base.fs import current_site
from lsm.manifest import version_set as vsmod
from lsm.manifest.edit import VersionEdit
from lsm.wal.reader import scan_segment_bytes
from tests.reliability_log import record
from tests.test_power_cut import OPTS as POWER_CUT_OPTS

S = lsm.Sync
DB = "/db"
SEED = int(os.environ.get("LSM_TRACE_SEED", random.randrange(1 << 30)))

OPTS = POWER_CUT_OPTS  # the power-cut tests' tiny options



# ------------------------------------------------------------------ recording
@dataclass
class Op:
    index: int
    kind: str
    path: str
    site: str
    info: object


@dataclass
class Mark:
    """A workload event between operations: "open", "opened", "close",
    "ack" (args: seq, level)."""

    what: str
    args: tuple = ()


class Recorder:
    """Collects a CrashFS's operations (through ``trace_hook``) and the
    workload's marks, in order."""

    def __init__(self, fs: CrashFS):
        self.fs = fs
        self.events: list[Op | Mark] = []
        self.cleared: set[int] = set()  # failures of rules since removed from fs.faults
        fs.trace_hook = self._hook

    def _hook(self, index, kind, path, site, info):
        if isinstance(info, (bytes, bytearray, memoryview)):
            info = bytes(info)
        self.events.append(Op(index, kind, path, site, info))

    def mark(self, what: str, *args) -> None:
        self.events.append(Mark(what, args))

    def failed(self) -> set[int]:
        return self.cleared | {i for f in self.fs.faults for i in f.fired_at}

    def clear_faults(self) -> None:
        self.cleared = self.failed()
        self.fs.faults.clear()


# ------------------------------------------------------------------ the shadow
class Node:
    __slots__ = ("data", "dirty", "is_dir", "pos", "scan", "synced")

    def __init__(self, is_dir: bool = False, data: bytes = b""):
        self.is_dir = is_dir
        # None: writes append. A preallocated WAL segment (the spare renamed into
        # place) is written in place from offset 0 (WalWriter, fs.open_overwrite).
        self.pos: int | None = None
        self.data = bytearray(data)
        self.synced = bytes(data)  # content as of the last sync
        self.dirty = False  # written (or truncated) since the last sync
        self.scan: tuple[bytes, list[tuple[int, int]]] | None = None  # (content, WAL record ranges in it)


@dataclass
class View:
    """What a manifest says (the durable one or the latest written one)."""

    manifest: str | None
    live: set[int] = field(default_factory=set)
    flushed: int = 0


class Violation(AssertionError):
    pass


class Checker:
    """Replays a trace into a shadow filesystem and checks the rules (see
    the module docstring) at the operations that rely on something."""

    def __init__(self, dbdir: str, wal_dir: str, seed_fs: CrashFS | None = None):
        self.dbdir = dbdir
        self.wal_dir = wal_dir
        self.files: dict[str, Node] = {"/": Node(True)}  # the current namespace
        self.durable: dict[str, Node] = {"/": self.files["/"]}  # as of the last sync of each directory
        self.checks: Counter[str] = Counter()
        self.violations: list[str] = []
        self.pending_current: int | None = None  # index of a rename onto CURRENT not yet followed by a dir sync
        self.manifest_failed: int | None = None
        self.failure_seen = False
        self.ops = 0
        self._recent: list[Op | Mark] = []
        if seed_fs is not None:
            self._seed(seed_fs, "/")

    def _seed(self, fs: CrashFS, d: str) -> None:
        """Everything already on ``fs`` is settled (a fresh power-cut image)."""
        for name in fs.listdir(d):
            p = posixpath.join(d, name)
            node = Node(True) if fs.is_dir(p) else Node(False, fs.read_file(p))
            self.files[p] = self.durable[p] = node
            if node.is_dir:
                self._seed(fs, p)

    # ---- predicates
    def named(self, path: str) -> bool:
        """``path``'s entry, and every directory's above it, is durable."""
        while path != "/":
            node = self.files.get(path)
            if node is None or self.durable.get(path) is not node:
                return False
            path = posixpath.dirname(path)
        return True

    def settled(self, path: str) -> bool:
        node = self.files.get(path)
        return node is not None and not node.dirty and self.named(path)

    def view(self, durable: bool) -> View:
        ns = self.durable if durable else self.files
        cur = ns.get(posixpath.join(self.dbdir, filenames.CURRENT))
        if cur is None:
            return View(None)
        text = cur.synced if durable else bytes(cur.data)
        name = text[:-1].decode("ascii", "replace") if text.endswith(b"\n") else ""
        m = ns.get(posixpath.join(self.dbdir, name)) if filenames.parse_manifest(name) is not None else None
        if m is None:
            return View(name or None)
        data = m.synced if durable else bytes(m.data)
        try:
            version, _nfn, _last, flushed, _torn = vsmod._replay(data, name, 20)
        except (CorruptionError, ValueError):
            return View(name)
        return View(name, version.all_numbers(), flushed)

    @staticmethod
    def wal_ranges(node: Node, data: bytes, path: str) -> list[tuple[int, int]]:
        """(first, last) sequence numbers of each intact record in ``data``
        (the content of WAL segment ``node``)."""
        if node.scan is None or node.scan[0] != data:
            node.scan = (data, [(r.seq, r.last_seq) for r in scan_segment_bytes(data, path).records])
        return node.scan[1]

    def durable_seq(self) -> int:
        """Every commit up to the returned seq survives a power cut now."""
        upto = self.view(True).flushed
        ranges = []
        if self.named(self.wal_dir):
            for p, node in self.durable.items():
                if self._is_segment(p):
                    ranges += self.wal_ranges(node, node.synced, p)
        for lo, hi in sorted(ranges):
            if lo > upto + 1:
                break
            upto = max(upto, hi)
        return upto

    def violate(self, rule: str, op: Op | Mark, msg: str) -> None:
        where = f"op {op.index} {op.kind} {op.path}" if isinstance(op, Op) else f"mark {op.what}{op.args}"
        recent = "\n    ".join(_fmt(e) for e in self._recent[-12:])
        self.violations.append(f"[{rule}] at {where}: {msg}\n  trace before it:\n    {recent}")

    # ---- the replay
    def feed(self, ev: Op | Mark, failed: set[int]) -> None:
        if isinstance(ev, Mark):
            self._mark(ev)
        else:
            self.ops += 1
            self._op(ev, ev.index in failed)
        self._recent.append(ev)
        del self._recent[:-40]

    def _mark(self, m: Mark) -> None:
        if m.what == "open":
            self.manifest_failed = None
        elif m.what == "close":
            if self.pending_current is not None and not self.failure_seen:
                self.violate("current-dir-sync", m, f"CURRENT renamed at op {self.pending_current} "
                             "but the data directory was never synced before close")
        elif m.what == "ack":
            seq, level = m.args
            if level >= S.FULL:
                self.checks["full-ack-durable"] += 1
                d = self.durable_seq()
                if d < seq:
                    self.violate("full-ack-durable", m, f"{S(level).name} commit {seq} returned but only "
                                 f"commits up to {d} would survive a power cut")

    def _op(self, op: Op, failed: bool) -> None:
        kind, path = op.kind, op.path
        if failed:
            self.failure_seen = True
        # -- rules checked before the operation takes effect (an attempted
        # operation relies on its preconditions even if it then fails)
        if self.manifest_failed is not None:
            self.checks["no-delete-after-manifest-failure"] += 1  # operations examined after the failure
            if kind in ("remove", "rename"):
                self.violate("no-delete-after-manifest-failure", op,
                             f"{kind} after the manifest operation that failed at op {self.manifest_failed}")
        if self.pending_current is not None and (
                kind in ("remove", "rename") or (_is_manifest(path) and kind in ("write", "sync"))):
            self.violate("current-dir-sync", op, f"CURRENT was renamed at op {self.pending_current} and "
                         "the data directory not synced since")
        if kind in ("create", "write", "truncate") and path == posixpath.join(self.dbdir, filenames.CURRENT):
            self.violate("manifest-before-current", op, "CURRENT written in place (not write-temp + rename)")
        if kind == "write" and _is_manifest(path):
            self._check_manifest_write(op)
        if kind == "rename":
            self._check_rename(op)
        if kind == "remove":
            self._check_remove(op)
        new_segment = (path if kind == "create" else op.info if kind == "rename" and
                       posixpath.basename(path) == filenames.WAL_SPARE else None)  # created, or the spare renamed
        if new_segment is not None and self._is_segment(new_segment):
            for p, node in self.files.items():
                if p != new_segment and p != path and self._is_segment(p) and not node.is_dir:
                    self.checks["wal-sealed-synced"] += 1
                    if node.dirty:
                        self.violate("wal-sealed-synced", op, f"older segment {p} has unsynced content")
        if kind in ("create", "rename"):
            target = op.info if kind == "rename" else path
            parent = posixpath.dirname(target)
            if parent in self.files and self.files[parent].is_dir:
                self.checks["new-dir-named"] += 1
                if not self.named(parent):
                    self.violate("new-dir-named", op, f"directory {parent} is not durably named yet")
        if failed:
            if op.site == "manifest" and self.manifest_failed is None:
                self.manifest_failed = op.index
            return
        self._apply(op)

    def _apply(self, op: Op) -> None:
        kind, path, files = op.kind, op.path, self.files
        if kind == "create":
            node = files.get(path)
            if node is None:
                files[path] = Node()
            else:
                node.data = bytearray()
                node.dirty = True
                node.pos = None
        elif kind == "write":
            node = files.get(path)
            if node is None:
                self.violate("checker", op, "write to a path the shadow does not know")
                return
            if node.pos is None:
                node.data += op.info
            else:
                node.data[node.pos : node.pos + len(op.info)] = op.info
                node.pos += len(op.info)
            node.dirty = True
        elif kind == "sync":
            node = files.get(path)
            if node is not None:
                node.synced = bytes(node.data)
                node.dirty = False
        elif kind == "sync_dir":
            for p in set(files) | set(self.durable):
                if p != "/" and posixpath.dirname(p) == path:
                    if p in files:
                        self.durable[p] = files[p]
                    else:
                        self.durable.pop(p, None)
            if path == self.dbdir and self.pending_current is not None:
                self.checks["current-dir-sync"] += 1  # a CURRENT switch made durable before being relied on
                self.pending_current = None
        elif kind == "rename":
            node = files.pop(path, None)
            if node is not None:
                files[op.info] = node
                if posixpath.basename(path) == filenames.WAL_SPARE:
                    node.pos = 0
                if op.info == posixpath.join(self.dbdir, filenames.CURRENT):
                    self.pending_current = op.index
        elif kind == "remove":
            files.pop(path, None)
        elif kind == "link":
            if op.info in files:
                files[path] = files[op.info]
        elif kind == "truncate":
            node = files.get(path)
            if node is not None:
                size = op.info
                # A sealed preallocated WAL segment cut to its records: only zeros go, which
                # read as the end of data either way, so its synced content stays settled.
                zeros_cut = (self._is_segment(path) and not node.dirty and size <= len(node.data)
                             and not any(node.data[size:]))
                if size < len(node.data):
                    del node.data[size:]
                else:
                    node.data += bytes(size - len(node.data))
                if zeros_cut:
                    node.synced = bytes(node.data)
                else:
                    node.dirty = True
        elif kind == "mkdir":
            p = path
            missing = []
            while p not in files:
                missing.append(p)
                p = posixpath.dirname(p)
            for p in missing:
                files[p] = Node(True)
        else:
            self.violate("checker", op, f"operation kind {kind} is not modelled by the checker")

    # ---- the rules that look at content
    def _check_manifest_write(self, op: Op) -> None:
        for edit in _edits_in(op.info):
            for _level, f in edit.added:
                self.checks["table-before-manifest"] += 1
                t = posixpath.join(self.dbdir, filenames.sst_name(f.number))
                node = self.files.get(t)
                if node is None:
                    self.violate("table-before-manifest", op, f"manifest names {t}, which does not exist")
                elif node.dirty:
                    self.violate("table-before-manifest", op, f"manifest names {t} before it was synced")
                elif not self.named(t):
                    self.violate("table-before-manifest", op,
                                 f"manifest names {t} before a sync of {self.dbdir} made its name durable")

    def _check_rename(self, op: Op) -> None:
        src, dst = op.path, op.info
        if dst == posixpath.join(self.dbdir, filenames.CURRENT):
            self.checks["manifest-before-current"] += 1
            node = self.files.get(src)
            if node is None:
                self.violate("manifest-before-current", op, f"renaming a missing {src} onto CURRENT")
                return
            if node.dirty or node.synced != bytes(node.data):
                self.violate("manifest-before-current", op, f"{src} renamed onto CURRENT before it was synced")
            text = bytes(node.data)
            name = text[:-1].decode("ascii", "replace") if text.endswith(b"\n") else ""
            if filenames.parse_manifest(name) is None:
                self.violate("manifest-before-current", op, f"{src} holds {text!r}, not a manifest name")
                return
            m = posixpath.join(self.dbdir, name)
            if not self.settled(m):
                self.violate("manifest-before-current", op,
                             f"CURRENT switched to {name} before it was synced and its name made durable")
        if self._is_segment(src):
            self._check_retire(op, src, dst)

    def _check_remove(self, op: Op) -> None:
        path = op.path
        name = posixpath.basename(path)
        if self._is_segment(path):
            self._check_retire(op, path, None)
        elif posixpath.dirname(path) == self.dbdir and filenames.parse_sst(name) is not None:
            self.checks["table-remove-unreferenced"] += 1
            n = filenames.parse_sst(name)
            for durable in (True, False):
                v = self.view(durable)
                if n in v.live:
                    self.violate("table-remove-unreferenced", op,
                                 f"table {n} is still named by the {'durable' if durable else 'latest'} "
                                 f"manifest {v.manifest}")
        elif posixpath.dirname(path) == self.dbdir and filenames.parse_manifest(name) is not None:
            self.checks["manifest-remove-unreferenced"] += 1
            for durable in (True, False):
                v = self.view(durable)
                if v.manifest == name:
                    self.violate("manifest-remove-unreferenced", op,
                                 f"{name} is the manifest the {'durable' if durable else 'current'} CURRENT names")

    def _check_retire(self, op: Op, path: str, dst: str | None) -> None:
        if dst is not None and dst.endswith(".dropped"):
            return  # point_in_time recovery sets a damaged segment aside, by design
        node = self.files.get(path)
        if node is None or node.is_dir:
            return
        ranges = self.wal_ranges(node, bytes(node.data), path)
        if not ranges:
            return  # holds no commit
        self.checks["wal-retire-covered"] += 1
        last = ranges[-1][1]
        v = self.view(True)
        if v.flushed < last:
            what = "archived" if dst else "unlinked"
            self.violate("wal-retire-covered", op, f"segment with commits up to {last} {what} while the durable "
                         f"manifest ({v.manifest}) has flushed only up to {v.flushed}")

    def _is_segment(self, path: str) -> bool:
        return posixpath.dirname(path) == self.wal_dir and filenames.parse_wal(posixpath.basename(path)) is not None

    def finish(self) -> None:
        if self.pending_current is not None and not self.failure_seen:
            self.violate("current-dir-sync", Mark("end"), f"CURRENT renamed at op {self.pending_current} and "
                         "the data directory never synced afterwards")


def _is_manifest(path: str) -> bool:
    return filenames.parse_manifest(posixpath.basename(path)) is not None


def _edits_in(data: bytes) -> list[VersionEdit]:
    """The version edits in one manifest write (a new manifest's first write
    carries the header and the snapshot record)."""
    off = vsmod.HEADER_SIZE if data.startswith(vsmod.MAGIC) else 0
    out = []
    while off + vsmod.RECORD_HEADER_SIZE <= len(data):
        _crc, length = U32U32.unpack_from(data, off)
        payload = data[off + vsmod.RECORD_HEADER_SIZE: off + vsmod.RECORD_HEADER_SIZE + length]
        out.append(VersionEdit.decode(payload))
        off += vsmod.RECORD_HEADER_SIZE + length
    return out


def _fmt(e: Op | Mark) -> str:
    if isinstance(e, Mark):
        return f"-- {e.what} {e.args}"
    info = f" ({len(e.info)} bytes)" if isinstance(e.info, bytes) else (f" -> {e.info}" if e.info is not None else "")
    return f"{e.index:5d} {e.kind:9s} {e.path}{info} [{e.site}]"


# ------------------------------------------------------------------ sessions
class Session:
    """A workload's view of one database on a traced CrashFS: open, close,
    commits with acknowledgement marks, power cuts (which start a new
    filesystem, and so a new shadow seeded from it)."""

    def __init__(self, name: str, opts: dict, *, wal_dir: str | None = None, manifest_max_size: int | None = None,
                 fs: CrashFS | None = None):
        self.name = name
        self.opts = dict(OPTS, **opts)
        self.wal_dir = wal_dir
        self.manifest_max_size = manifest_max_size
        self.segments: list[tuple[Recorder, Checker]] = []
        self.db = None
        self._start(fs if fs is not None else CrashFS(), seed=False)

    def _start(self, fs: CrashFS, seed: bool) -> None:
        self.fs = fs
        self.rec = Recorder(fs)
        self.checker = Checker(DB, self.wal_dir or DB, fs if seed else None)
        self.segments.append((self.rec, self.checker))

    def open(self) -> lsm.DB:
        self.rec.mark("open")
        kw = dict(self.opts)
        if self.wal_dir:
            kw["wal_dir"] = self.wal_dir
        self.db = lsm.open(DB, fs=self.fs, **kw)
        if self.manifest_max_size is not None:
            self.db._vs.manifest_max_size = self.manifest_max_size
        self.rec.mark("opened")
        return self.db

    def close(self) -> None:
        self.db.close()
        self.rec.mark("close")

    def put(self, key: bytes, value: bytes, level=None) -> int:
        level = self.db.sync if level is None else S.coerce(level)
        seq = self.db.put(key, value, sync=level)
        self.rec.mark("ack", seq, level)
        return seq

    def delete(self, key: bytes, level=None) -> int:
        level = self.db.sync if level is None else S.coerce(level)
        seq = self.db.delete(key, sync=level)
        self.rec.mark("ack", seq, level)
        return seq

    def write(self, batch: lsm.WriteBatch, level=None) -> int:
        level = self.db.sync if level is None else S.coerce(level)
        seq = self.db.write(batch, sync=level)
        self.rec.mark("ack", seq, level)
        return seq

    def power_cut(self, mode: str, rng: random.Random) -> None:
        """Lose power now: the database object dies, the disk keeps what a
        cut in ``mode`` keeps, and a new trace starts on that image."""
        image = self.fs.power_cut(rng, mode=mode)
        self.db._simulate_crash()
        self.rec.mark("close-crash")
        self._start(image, seed=True)

    def check(self, expect: dict[str, int] | None = None, *, log: bool = True) -> Counter:
        """Replay every trace; raise on a violation; return the checks made
        per rule. ``expect``: rule -> minimum number of checks."""
        total: Counter[str] = Counter()
        violations = []
        ops = 0
        for rec, ch in self.segments:
            failed = rec.failed()
            for ev in rec.events:
                ch.feed(ev, failed)
            ch.finish()
            total.update(ch.checks)
            violations += ch.violations
            ops += ch.ops
        print(f"trace order {self.name}: {ops} operations, {sum(total.values())} rule checks "
              f"{dict(sorted(total.items()))}, {len(violations)} violations")
        if log:  # (the checker's own sensitivity tests expect violations: not logged)
            record("trace_order", workload=self.name, operations=ops, runs=1, rule_checks=dict(total),
                   checks=sum(total.values()), violations=len(violations))
        if violations:
            by_rule = Counter(v[1:v.index("]")] for v in violations)
            raise Violation(f"{self.name}: {len(violations)} ordering violations {dict(by_rule)}; the first:\n"
                            + violations[0])
        for rule, n in (expect or {}).items():
            assert total[rule] >= n, f"{self.name}: rule {rule} checked {total[rule]} times, expected >= {n}"
        return total


# ------------------------------------------------------------------ workloads
def _value(rng: random.Random, i: int) -> bytes:
    return b"v%d-" % i + b"x" * rng.randrange(60)


def _puts(s: Session, rng: random.Random, n: int, levels=(S.FULL,), keys: int = 60) -> None:
    for i in range(n):
        k = b"k%03d" % rng.randrange(keys)
        r = rng.random()
        level = rng.choice(levels)
        if r < 0.8:
            s.put(k, _value(rng, i), level)
        elif r < 0.9:
            s.delete(k, level)
        else:
            b = lsm.WriteBatch()
            for j in range(rng.randrange(1, 5)):
                b.put(b"k%03d" % rng.randrange(keys), _value(rng, j))
            s.write(b, level)


def test_checker_sees_what_the_hook_carries():
    """The recorder gets rename destinations, write bytes and failures."""
    fs = CrashFS()
    rec = Recorder(fs)
    fs.makedirs("/d")
    fs.write_file("/d/a", b"hello", sync=True)
    fs.rename("/d/a", "/d/b")
    rule = fs.fail("remove", 1, errno.ENOSPC)
    with pytest.raises(OSError):
        fs.remove("/d/b")
    kinds = [(e.kind, e.info) for e in rec.events]
    assert kinds == [("mkdir", None), ("create", None), ("write", b"hello"), ("sync", None),
                     ("rename", "/d/b"), ("remove", None)]
    assert rule.fired_at == [rec.events[-1].index] and rec.failed() == {rec.events[-1].index}


def test_checker_flags_a_table_named_before_its_directory_sync():
    """The checker itself: a hand-made trace that names a table whose
    directory entry is not durable yet is a violation; with the sync it is not."""
    for with_sync in (False, True):
        fs = CrashFS()
        rec = Recorder(fs)
        fs.makedirs(DB)
        fs.sync_dir("/")
        f = fs.create(DB + "/000005.sst")
        f.write(b"table")
        f.fsync()
        f.close()
        if with_sync:
            fs.sync_dir(DB)
        from lsm.manifest.version import FileMeta
        edit = VersionEdit(added=[(0, FileMeta(5, 5, b"a", b"b", 1, 1, 1, 0))], next_file_number=6,
                           last_seq=1, flushed_seq=1)
        fs.write_file(DB + "/MANIFEST-000001", vsmod.encode_header() + vsmod.encode_record(edit.encode()))
        ch = Checker(DB, DB)
        for ev in rec.events:
            ch.feed(ev, set())
        assert ch.checks["table-before-manifest"] == 1
        assert bool(ch.violations) != with_sync, ch.violations


# Every workload runs inline (one deterministic trace) unless it says so.
WORKLOADS = {}


def workload(expect):
    def deco(fn):
        WORKLOADS[fn.__name__.removeprefix("w_")] = (fn, expect)
        return fn
    return deco


@workload({"table-before-manifest": 3, "wal-retire-covered": 3, "full-ack-durable": 100})
def w_flush(rng):
    s = Session("flush", dict(background="inline"))
    s.open()
    for _ in range(4):
        _puts(s, rng, 40)
        s.db.flush()
    s.close()
    return s


@workload({"table-before-manifest": 10, "table-remove-unreferenced": 4, "wal-retire-covered": 5})
def w_compaction(rng):
    s = Session("compaction", dict(background="inline"))
    s.open()
    _puts(s, rng, 400, levels=(S.FULL, S.OFF))
    s.db.compact_range()
    _puts(s, rng, 100)
    s.db.compact_range(b"k010", b"k040")
    s.close()
    return s


@workload({"manifest-before-current": 5, "manifest-remove-unreferenced": 4, "current-dir-sync": 5})
def w_manifest_rollover(rng):
    s = Session("manifest_rollover", dict(background="inline"), manifest_max_size=400)
    s.open()
    _puts(s, rng, 600)
    s.db.compact_range()
    s.close()
    s.open()  # recovery starts a new manifest
    _puts(s, rng, 100)
    s.close()
    return s


@workload({"wal-sealed-synced": 5, "wal-retire-covered": 5, "full-ack-durable": 50})
def w_wal_rotation(rng):
    # A memtable several segments long: segments are sealed inside one memtable.
    s = Session("wal_rotation", dict(background="inline", memtable_size=20000, wal_segment_size=4096,
                                     max_total_wal_size=0))
    s.open()
    _puts(s, rng, 500, levels=(S.FULL, S.OFF, S.NORMAL, S.BARRIER))
    s.db.flush()
    _puts(s, rng, 200, levels=(S.OFF,))
    s.put(b"last", b"full", S.FULL)
    s.close()
    return s


@workload({"wal-retire-covered": 5, "new-dir-named": 10})
def w_retention_archive(rng):
    s = Session("retention_archive", dict(background="inline", wal_retention_segments=2, sync=S.EXTRA))
    s.open()
    _puts(s, rng, 300, levels=(S.EXTRA, S.FULL))
    s.db.flush()
    s.close()
    s.open()
    _puts(s, rng, 100)
    s.close()
    return s


@workload({"wal-retire-covered": 3, "table-remove-unreferenced": 1, "manifest-remove-unreferenced": 1})
def w_open_recovery(rng):
    """Open after closes, after simulated process crashes and after power
    cuts: recovery's own clean-up (replayed segments synced, obsolete ones
    retired, orphans and old manifests removed) follows the rules too."""
    s = Session("open_recovery", dict(background="inline"))
    s.open()
    for rnd in range(6):
        _puts(s, rng, 60, levels=(S.FULL, S.OFF, S.NORMAL))
        how = rnd % 3
        if how == 0:
            s.close()
        elif how == 1:
            s.db._simulate_crash()
            s.rec.mark("close-crash")
        else:
            s.power_cut("random", random.Random(rng.random()))
        s.open()
    s.close()
    return s


@workload({"wal-retire-covered": 3, "table-before-manifest": 3, "new-dir-named": 3})
def w_separate_wal_dir(rng):
    s = Session("separate_wal_dir", dict(background="inline"), wal_dir="/wal/log")
    s.open()
    _puts(s, rng, 300, levels=(S.FULL, S.EXTRA))
    s.db.compact_range()
    s.close()
    s.open()
    s.close()
    return s


@workload({"table-before-manifest": 3, "wal-retire-covered": 3, "manifest-before-current": 2})
def w_background_thread(rng):
    """Flush and compaction threads interleave with the writer."""
    s = Session("background_thread", dict(background="thread"), manifest_max_size=800)
    s.open()
    _puts(s, rng, 400, levels=(S.FULL, S.OFF))
    s.db.compact_range()
    s.close()
    return s


@pytest.mark.parametrize("name", list(WORKLOADS))
def test_ordering_rules_hold_on_every_trace(name):
    seed = SEED + sum(map(ord, name))
    print(f"trace order {name}: LSM_TRACE_SEED={SEED} (case seed {seed})")
    fn, expect = WORKLOADS[name]
    s = fn(random.Random(seed))
    s.check(expect)


MANIFEST_FAULTS = [("write", 1), ("write", 3), ("sync", 1), ("sync", 4), ("sync_dir", 1), ("sync_dir", 3),
                   ("create", 1), ("create", 2), ("rename", 1)]


@pytest.mark.parametrize("kind,nth", MANIFEST_FAULTS)
@pytest.mark.parametrize("err", [errno.EIO, errno.ENOSPC])
def test_nothing_is_deleted_after_a_manifest_failure(kind, nth, err):
    """A manifest operation fails (an install's directory sync, an edit's
    write or sync, a roll-over's create, CURRENT's rename): from then on
    until reopen the trace holds no unlink and no rename, and every other
    rule still holds; reopening recovers."""
    rng = random.Random(SEED + nth)
    s = Session(f"manifest_failure_{kind}{nth}_{errno.errorcode[err]}", dict(background="inline"),
                manifest_max_size=500)
    s.open()
    rule = s.fs.fail(kind, nth, err, site="manifest")
    try:
        _puts(s, rng, 400, levels=(S.FULL, S.OFF))
        s.db.compact_range()
    except lsm.NeedsRecoveryError:
        pass
    assert rule.fired == 1, f"the workload made fewer than {nth} {kind} operations at the manifest site"
    assert s.db.health == "fenced"
    s.close()
    s.rec.clear_faults()
    s.open()
    _puts(s, rng, 30)
    s.close()
    s.check({"no-delete-after-manifest-failure": 1})


class BrokenFS(CrashFS):
    """A CrashFS that silently skips one kind of sync (the engine "forgot"
    it): the skipped operation is not traced, as if never issued."""

    def __init__(self, skip):
        super().__init__()
        self.skip = skip

    def sync_dir(self, path):
        if not self.skip("sync_dir", path, current_site()):
            super().sync_dir(path)

    def _sync(self, f, data_only):
        if not self.skip("sync", f.path, current_site()):
            super()._sync(f, data_only)


BREAKAGES = {
    "no data-dir sync at the manifest site": (
        lambda kind, path, site: kind == "sync_dir" and site == "manifest", "table-before-manifest"),
    "no WAL directory sync": (lambda kind, path, site: kind == "sync_dir" and site == "wal", "full-ack-durable"),
    "CURRENT temp not synced": (lambda kind, path, site: kind == "sync" and path.endswith(".tmp"),
                                "manifest-before-current"),
    "manifest edits not synced": (lambda kind, path, site: kind == "sync" and "MANIFEST" in path,
                                  "wal-retire-covered"),
}


@pytest.mark.parametrize("what", list(BREAKAGES))
def test_the_checker_catches_a_forgotten_sync(what):
    """Sensitivity: with one kind of sync skipped (at the filesystem, so no
    engine file is touched) the flush workload breaks the rule that guards
    it. The mutation check of the engine itself (skipping the directory sync
    in Background._install, and others) was done on a copy of the tree."""
    skip, rule = BREAKAGES[what]
    s = Session(f"broken: {what}", dict(background="inline"), manifest_max_size=600, fs=BrokenFS(skip))
    s.open()
    _puts(s, random.Random(SEED), 150)
    s.db.flush()
    s.close()
    with pytest.raises(Violation, match=re.escape(f"'{rule}':")):
        s.check(log=False)
