"""A power-cut layer for a real directory that survives a SIGKILL of the
process using it (the crash layer of tools/crash_kill.py ``--mode power``).

:class:`lsm.base.crashfs.CrashFS` keeps what was synced in memory, in the
process that writes; a writer that is SIGKILLed takes that knowledge with
it. Here the two halves live in different processes:

* :class:`SyncTrackingFS` (the writer) is the real filesystem plus a
  journal: for every create, rename, unlink, link, truncate, file sync and
  directory sync it emits one line (``emit``: a pipe to the driver, written
  with one write(2) each, so a line either arrived whole or never happened).
  Before an unlink, or a rename that replaces a file, it hard-links the old
  file into ``shadow`` (named by inode number), so a power cut can bring it
  back; before a truncate or a create over an existing file it copies the
  old content there. A file opened with ``open_overwrite_mapped`` (the
  WAL's live preallocated segment) is written through a shared map, as
  lsm's plain layer does it: the stores are in the page cache like
  write(2)s, and the journal is open_overwrite's.
* :class:`DurableModel` (the driver) replays the journal into what the disk
  holds durably: per directory the entries as of the last directory sync
  plus the ordered unsynced changes since, per inode the synced length (or,
  for a file rewritten below it, the saved old content). After the kill,
  :meth:`DurableModel.cut` rolls the directory back to a state the disk
  could be in after a power cut at that moment, with the rules of CrashFS:
  each unsynced directory change applied or reverted independently, in
  order (a rename inside one directory is one atomic change); each file's
  unsynced tail dropped, kept, torn, torn and followed by zeros or
  garbage, or holed (``lsm.base.crashfs.HOLE_BLOCK`` blocks kept, zeroed or
  garbage independently); a rewritten file either its old durable content
  or its new one, except a file written in place over synced zeros (the
  preallocated WAL segment, ``open_overwrite``): its writes are an unsynced
  tail over durable zeros, kept, dropped, torn or holed like any other; and
  a file truncated below its synced length (an O_TRUNC create over it, a
  truncate): its old content, or the truncation with what was written
  after it as an unsynced tail.
  The result is written as a fresh directory in place of the old one, and
  everything in it is then durable.

Ordering. Lines are numbered in the order they are emitted (under one lock).
A create, a file sync and a directory sync are journalled after they
returned, so when a directory sync starts after line ``k`` was emitted,
every create journalled up to ``k`` was in the directory before the sync
began and is durable after it: the sync's line carries ``k``. A change
whose line comes later is treated as unsynced (pessimistic only for changes
that raced with the sync, on which the engine cannot rely anyway). A file
sync likewise records the size the file had before the sync began. A kill
between a sync and its line loses the line: pessimistic too. A create is
preceded by an *intent* line, so a file created but not journalled is
recognised and treated as an unsynced create. A rename, unlink, link,
truncate or rewrite is journalled *before* it runs, after its shadow copy
is made, line and operation together under the journal's lock (so no
directory sync's mark falls between them): a kill between line and
operation leaves a change that is journalled but not done, which the cut
applies or reverts like any unsynced change (applied, it is the state of a
kill just after the operation). Any file the journal does not explain (an
inode no line introduced) fails the cut: I/O that bypassed the filesystem
layer.

Only the directories given to the model are modelled (the database
directory); new directories are not (``makedirs`` of a missing directory
raises: the harness would otherwise be optimistic about it). File I/O by a
background worker *process* bypasses this layer, so the writer must use
``background="thread"`` or ``"inline"``.

Thread-safety: :class:`SyncTrackingFS` may be used by many threads (its
journal is ordered by ``_mu``); :class:`DurableModel` by one.
"""

from __future__ import annotations

import errno
import os
import random
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from lsm.base.crashfs import _holes
from lsm.base.fs import FileLock, FileSystem, WritableFile

SEP = "\t"
"""Field separator of journal lines (paths may hold spaces)."""


class SyncTrackingFS(FileSystem):
    """The real filesystem, journalling what becomes durable (module
    docstring). ``emit(line)`` receives each line with its newline."""

    def __init__(self, emit: Callable[[str], None], shadow: str):
        self._emit_line = emit
        self.shadow = os.path.abspath(shadow)
        self._mu = threading.Lock()
        self._n = 0  # guarded by _mu: lines emitted

    def _emit(self, *fields: object) -> None:
        line = "f" + SEP.join(str(x) for x in fields) + "\n"
        with self._mu:
            self._n += 1
            self._emit_line(line)

    def _journalled(self, op: Callable[[], object], *fields: object) -> None:
        """Emit the line, then run ``op``, both under ``_mu``: a directory
        sync's mark never counts a line whose operation has not run yet."""
        line = "f" + SEP.join(str(x) for x in fields) + "\n"
        with self._mu:
            self._n += 1
            self._emit_line(line)
            op()

    def _mark(self) -> int:
        with self._mu:
            return self._n

    def _keep(self, path: str) -> int:
        """Hard-link ``path`` into the shadow directory; its inode number."""
        ino = os.stat(path).st_ino
        try:
            os.link(path, os.path.join(self.shadow, str(ino)))
        except FileExistsError:
            pass  # already kept: the same inode (a kept link pins its number)
        return ino

    def _save(self, path: str) -> tuple[int, str]:
        """Copy ``path``'s content into the shadow directory (it is about to
        be rewritten in place); (inode number, copy's name)."""
        ino = os.stat(path).st_ino
        name = f"{ino}.{self._mark()}.{threading.get_ident()}.orig"
        shutil.copyfile(path, os.path.join(self.shadow, name))
        return ino, name

    # ---- files -----------------------------------------------------------
    def create(self, path: str) -> WritableFile:
        path = os.path.abspath(path)
        if os.path.exists(path):  # O_TRUNC: the same inode, rewritten
            ino, saved = self._save(path)
            out: list[WritableFile] = []
            self._journalled(lambda: out.append(super(SyncTrackingFS, self).create(path)), "W", ino, saved, 0)
            return out[0]
        self._emit("c", path)
        f = super().create(path)
        self._emit("C", os.fstat(f.fd).st_ino, path)
        return f

    def open_overwrite(self, path: str) -> WritableFile:
        # Written in place from offset 0: journalled as a rewrite (old or new
        # content until the next sync); after that sync the synced length is
        # the bytes written, and the rest of the file is the unsynced tail.
        # The line's last field "o" tells the model that the file is written
        # in place, not truncated: over synced zeros, the zeros stay durable.
        path = os.path.abspath(path)
        ino, saved = self._save(path)
        out: list[WritableFile] = []
        self._journalled(lambda: out.append(super(SyncTrackingFS, self).open_overwrite(path)), "W", ino, saved, 0,
                         "o")
        return out[0]

    def open_overwrite_mapped(self, path: str) -> WritableFile:
        # As open_overwrite (the same journal line), but written through a
        # shared map of the file as lsm's plain layer does it
        # (FileSystem.open_overwrite_mapped, option wal_mmap_writes): stores
        # reach the page cache as write(2)s do (a kill keeps them, a cut
        # treats them as the unsynced tail), so power mode runs the mapped
        # path that production runs. (The plain method falls back to
        # write(2) for any layer with its own hooks, this one included.)
        path = os.path.abspath(path)
        ino, saved = self._save(path)
        out: list[WritableFile] = []
        self._journalled(lambda: out.append(self._map_overwrite(path)), "W", ino, saved, 0, "o")
        return out[0]

    def truncate(self, path: str, size: int) -> None:
        path = os.path.abspath(path)
        ino, saved = self._save(path)
        self._journalled(lambda: super(SyncTrackingFS, self).truncate(path, size), "W", ino, saved, size)

    def _sync(self, f: WritableFile, data_only: bool) -> None:
        size = f.size
        k = self._mark()
        ino = os.fstat(f.fd).st_ino
        super()._sync(f, data_only)
        self._emit("S", ino, size, k)

    def _preallocate(self, f: WritableFile, length: int) -> None:
        return  # not modelled; allowed to do nothing ("best effort")

    # ---- namespace -------------------------------------------------------
    def sync_dir(self, path: str) -> None:
        k = self._mark()
        super().sync_dir(path)
        self._emit("D", k, os.path.abspath(path))

    def rename(self, src: str, dst: str) -> None:
        src, dst = os.path.abspath(src), os.path.abspath(dst)
        if os.path.exists(dst):
            self._keep(dst)
        ino = os.stat(src).st_ino
        self._journalled(lambda: super(SyncTrackingFS, self).rename(src, dst), "N", ino, src, dst)

    def remove(self, path: str) -> None:
        path = os.path.abspath(path)
        ino = self._keep(path)
        self._journalled(lambda: super(SyncTrackingFS, self).remove(path), "U", ino, path)

    def link(self, src: str, dst: str) -> None:
        dst = os.path.abspath(dst)
        self._journalled(lambda: super(SyncTrackingFS, self).link(src, dst), "L", os.stat(src).st_ino, dst)

    def makedirs(self, path: str) -> None:
        if not os.path.isdir(path):
            raise OSError(errno.ENOTSUP, "SyncTrackingFS does not model new directories", path)

    def lock(self, directory: str) -> FileLock:
        path = os.path.abspath(os.path.join(directory, "LOCK"))
        new = not os.path.exists(path)
        if new:
            self._emit("c", path)
        lk = super().lock(directory)
        if new:
            self._emit("C", os.stat(path).st_ino, path)
        return lk


class HarnessError(Exception):
    """The journal does not explain the directory (a bug in the harness, or
    file I/O that bypassed the filesystem layer)."""


@dataclass
class _Inode:
    durable_len: int = 0  # bytes [0, durable_len) of its content are on disk
    saved: str | None = None  # rewritten below durable_len: the old content (shadow name)
    saved_at: int = 0  # line number of the rewrite
    prealloc: bool = False  # written in place over synced zeros (a preallocated WAL segment)
    cut_at: int | None = None  # rewritten by truncation only (O_TRUNC create, truncate): its new content
    # below cut_at is the old durable content, the rest an unsynced tail; None: rewritten in place too


@dataclass
class CutFigures:
    """What one power cut did; ``notes``: one line per decision."""

    changes_applied: int = 0
    changes_reverted: int = 0
    unjournalled_creates: int = 0
    files: int = 0
    tails: dict[str, int] = field(default_factory=dict)  # outcome -> count
    notes: list[str] = field(default_factory=list)


TAIL_OUTCOMES = ("dropped", "kept", "torn", "torn+zeros", "torn+garbage", "holes")


class DurableModel:
    """What the disk holds durably under ``dirs``, from a journal (module
    docstring). Starts from the current content of ``dirs``, all durable."""

    def __init__(self, dirs: list[str], shadow: str):
        self.dirs = [os.path.abspath(d) for d in dirs]
        self.shadow = os.path.abspath(shadow)
        self.n = 0  # journal lines applied (all processes)
        self.base = 0  # line number before the current process's first line
        self.counts: dict[str, int] = {}  # journal lines by kind, since creation
        self.reset()

    # ---- journal ---------------------------------------------------------
    def reset(self) -> None:
        """Declare everything now in ``dirs`` durable; empty the shadow."""
        shutil.rmtree(self.shadow, ignore_errors=True)
        os.makedirs(self.shadow)
        self.durable: dict[str, dict[str, int]] = {}
        self.current: dict[str, dict[str, int]] = {}
        self.log: dict[str, list[tuple[int, list[tuple[str, int | None]]]]] = {}
        self.inodes: dict[int, _Inode] = {}
        self.intents: set[str] = set()
        for d in self.dirs:
            entries = {}
            for name in os.listdir(d):
                st = os.stat(os.path.join(d, name))
                entries[name] = st.st_ino
                self.inodes[st.st_ino] = _Inode(st.st_size)
            self.durable[d] = entries
            self.current[d] = dict(entries)
            self.log[d] = []

    def start_process(self) -> None:
        """The next lines come from a new SyncTrackingFS (numbered from 1)."""
        self.base = self.n

    def _where(self, path: str) -> tuple[str, str]:
        d, name = os.path.split(path)
        if d not in self.current:
            raise HarnessError(f"journal names {path}, outside the modelled directories {self.dirs}")
        return d, name

    def _change(self, d: str, *group: tuple[str, int | None]) -> None:
        for name, ino in group:
            if ino is None:
                self.current[d].pop(name, None)
            else:
                self.current[d][name] = ino
        self.log[d].append((self.n, list(group)))

    def _inode(self, ino: int, line: str) -> _Inode:
        node = self.inodes.get(ino)
        if node is None:
            raise HarnessError(f"journal line {line!r} names inode {ino}, which no create introduced")
        return node

    def apply(self, line: str) -> None:
        """Apply one journal line (as emitted, with or without newline)."""
        f = line.rstrip("\n").split(SEP)
        kind = f[0][1:]
        self.n += 1
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if kind == "c":
            self.intents.add(f[1])
        elif kind == "C":
            ino, path = int(f[1]), f[2]
            d, name = self._where(path)
            self.intents.discard(path)
            self.inodes[ino] = _Inode()
            self._change(d, (name, ino))
        elif kind == "W":
            node = self._inode(int(f[1]), line)
            if f[4:] == ["o"] and node.saved is None and self._zeros(f[2], node.durable_len):
                # open_overwrite of synced zeros (the spare segment renamed
                # into place): the zeros and the length stay durable, and
                # what is written over them is an unsynced tail from offset
                # 0, which a cut may keep, drop, tear or hole page by page
                # (not only all or nothing, as for a rewrite).
                node.prealloc, node.durable_len = True, 0
            if f[4:] == ["o"] and int(f[3]) == 0 and node.durable_len > 0:
                node.prealloc = True  # open_overwrite of a synced file: the spare's zeros stay durable
            if f[4:] != ["o"] and int(f[3]) == 0:
                node.prealloc = False  # O_TRUNC create over it: no zeros are left to stay
            trunc = f[4:] != ["o"] and not node.prealloc  # a truncation (create over it, truncate)
            if node.saved is None and int(f[3]) < node.durable_len:
                node.saved, node.saved_at = f[2], self.n
                node.cut_at = int(f[3]) if trunc else None
            elif node.saved is not None:
                node.cut_at = min(node.cut_at, int(f[3])) if trunc and node.cut_at is not None else None
        elif kind == "S":
            ino, size, k = int(f[1]), int(f[2]), self.base + int(f[3])
            node = self._inode(ino, line)
            if node.saved is not None and node.saved_at <= k:
                node.saved, node.cut_at, node.durable_len = None, None, size  # the sync covered the rewrite
            else:
                node.durable_len = max(node.durable_len, size)
        elif kind == "D":
            k, d = self.base + int(f[1]), f[2]
            if d not in self.log:
                raise HarnessError(f"journal syncs directory {d}, which is not modelled")
            log = self.log[d]
            i = 0
            while i < len(log) and log[i][0] <= k:
                for name, ino in log[i][1]:
                    if ino is None:
                        self.durable[d].pop(name, None)
                    else:
                        self.durable[d][name] = ino
                i += 1
            del log[:i]
        elif kind == "N":
            ino, src, dst = int(f[1]), f[2], f[3]
            sd, sname = self._where(src)
            dd, dname = self._where(dst)
            if sd == dd:
                self._change(sd, (dname, ino), (sname, None))
            else:
                self._change(dd, (dname, ino))
                self._change(sd, (sname, None))
        elif kind == "U":
            d, name = self._where(f[2])
            self._change(d, (name, None))
        elif kind == "L":
            d, name = self._where(f[2])
            self._change(d, (name, int(f[1])))
        else:
            raise HarnessError(f"unknown journal line {line!r}")

    def _zeros(self, saved: str, n: int) -> bool:
        """The first ``n`` bytes of the shadow copy ``saved`` are all zeros
        (and there are ``n``)."""
        with open(os.path.join(self.shadow, saved), "rb") as fh:
            head = fh.read(n)
        return len(head) == n and not head.strip(b"\0")

    # ---- the power cut ---------------------------------------------------
    def cut(self, rng: random.Random) -> CutFigures:
        """Replace each modelled directory with a state the disk could hold
        after a power cut now; then everything is durable (:meth:`reset`).
        The directories must not be in use. Files whose content survives
        whole are hard-linked into the new directory, the others written."""
        fig = CutFigures()
        sources = self._sources()
        plans: dict[str, dict[str, int]] = {}
        for d in self.dirs:
            entries = dict(self.durable[d])
            for _n, group in self.log[d]:
                applied = rng.random() < 0.5
                fig.notes.append(f"{'applied' if applied else 'reverted'} unsynced change in {d}: "
                                 + ", ".join(f"{name} -> {'gone' if ino is None else f'inode {ino}'}"
                                             for name, ino in group))
                if applied:
                    fig.changes_applied += 1
                    for name, ino in group:
                        if ino is None:
                            entries.pop(name, None)
                        else:
                            entries[name] = ino
                else:
                    fig.changes_reverted += 1
            # Files the journal did not explain: creates killed before their line.
            for name, ino in sorted(self._listing(d).items()):
                if self.current[d].get(name) == ino or ino in self.inodes:
                    continue  # journalled (a rename or unlink journalled but killed before it ran: not yet)
                path = os.path.join(d, name)
                if path not in self.intents:
                    raise HarnessError(f"{path} (inode {ino}) is not in the journal: a file created, renamed or "
                                       "linked outside the filesystem layer")
                fig.unjournalled_creates += 1
                self.inodes.setdefault(ino, _Inode())
                applied = rng.random() < 0.5
                fig.notes.append(f"{'applied' if applied else 'reverted'} unjournalled create of {path}")
                if applied:
                    entries[name] = ino
            plans[d] = entries
        made: dict[int, str] = {}  # inode -> its file in a new directory
        for d, entries in plans.items():
            new = d + ".cut"
            shutil.rmtree(new, ignore_errors=True)
            os.makedirs(new)
            for name, ino in sorted(entries.items()):
                dst = os.path.join(new, name)
                if ino in made:
                    os.link(made[ino], dst)
                    continue
                src = sources.get(ino)
                if src is None:
                    raise HarnessError(f"no copy of inode {ino} ({name}) is left (an unlink that bypassed the "
                                       "shadow link)")
                content = self._content(ino, src, rng, fig, name)
                if content is None:
                    os.link(src, dst)
                else:
                    with open(dst, "wb") as out:
                        out.write(content)
                made[ino] = dst
                fig.files += 1
            old = d + ".old"
            shutil.rmtree(old, ignore_errors=True)
            os.rename(d, old)
            os.rename(new, d)
            shutil.rmtree(old)
        self.reset()
        return fig

    def _listing(self, d: str) -> dict[str, int]:
        return {name: os.stat(os.path.join(d, name)).st_ino for name in os.listdir(d)}

    def _sources(self) -> dict[int, str]:
        """A path holding each inode that is still on disk (an entry of a
        modelled directory or a shadow link)."""
        out = {}
        for name in os.listdir(self.shadow):
            if name.isdigit():
                out[int(name)] = os.path.join(self.shadow, name)
        for d in self.dirs:
            for name, ino in self._listing(d).items():
                out[ino] = os.path.join(d, name)
        return out

    def _content(self, ino: int, src: str, rng: random.Random, fig: CutFigures, name: str) -> bytes | None:
        """What is left of inode ``ino`` (now at ``src``) after the cut;
        None: all of its current content."""
        node = self.inodes[ino]

        def note(outcome: str, detail: str = "") -> None:
            fig.tails[outcome] = fig.tails.get(outcome, 0) + 1
            fig.notes.append(f"{name} (inode {ino}): {outcome} {detail}")

        durable = node.durable_len
        if node.saved is not None:  # rewritten below its durable length since the last sync
            if rng.random() >= 0.5:
                note("rewrite-old", f"(the first {node.durable_len} bytes of the saved copy)")
                with open(os.path.join(self.shadow, node.saved), "rb") as fh:
                    return fh.read()[: node.durable_len]
            if node.cut_at is None:
                note("rewrite-new")
                return None
            # The truncation reached the disk (its length is metadata, which
            # a journalling filesystem commits before or without the data
            # written after it): what was written past cut_at since is an
            # unsynced tail, kept, dropped, torn or holed like any other.
            note("truncation-kept", f"(at {node.cut_at}; the bytes written after it are a tail)")
            durable = node.cut_at
        size = os.stat(src).st_size
        if size < durable:
            raise HarnessError(f"{src} is {size} bytes, below its synced length {durable}, and the "
                               "journal has no rewrite of it")
        if size == durable:
            return None
        outcome = rng.choice(TAIL_OUTCOMES)
        if outcome == "kept":
            note(outcome, f"(synced {durable} of {size} bytes)")
            return None
        with open(src, "rb") as fh:
            data = fh.read()
        base, tail = data[:durable], data[durable:]
        if node.prealloc:
            # Written in place over synced zeros: the zeros past the last
            # byte written are durable (never garbage), and a lost write
            # reads as those zeros (the file keeps its length).
            written = tail.rstrip(b"\0")
            zeros = bytes(len(tail) - len(written))
            if outcome == "holes":
                note(outcome, f"(preallocated; synced {durable}, {len(written)} bytes written after)")
                return _holes(base, written, rng, {}, bytes(len(written))) + zeros
            cut = 0 if outcome == "dropped" else rng.randrange(len(written) + 1)
            note(outcome, f"(preallocated; synced {durable}, {cut} of {len(written)} unsynced bytes kept)")
            rest = rng.randbytes(len(written) - cut) if outcome == "torn+garbage" else bytes(len(written) - cut)
            return base + written[:cut] + rest + zeros
        if outcome == "holes":  # HOLE_BLOCK blocks kept, zeroed or garbage independently (as CrashFS)
            note(outcome, f"(synced {durable} of {size} bytes)")
            return _holes(base, tail, rng, {})
        cut = 0 if outcome == "dropped" else rng.randrange(len(tail) + 1)
        note(outcome, f"(synced {durable} of {size} bytes, {cut} unsynced bytes kept)")
        if outcome == "dropped" or outcome == "torn":
            return base + tail[:cut]
        if outcome == "torn+zeros":
            return base + tail[:cut] + bytes(len(tail) - cut)
        return base + tail[:cut] + rng.randbytes(len(tail) - cut)
