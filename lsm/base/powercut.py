"""Power-cut outcomes: what a disk may hold after power is lost, given what
was synced and what was not.

This is the deciding half of :meth:`lsm.base.crashfs.CrashFS.power_cut`
(CrashFS walks its tree and builds the image; the choices are made here):

* each unsynced directory change is applied or reverted (independently,
  in order; ``mode="random"``), so a file created or renamed without a
  directory fsync may be missing or under its old name
  (:func:`cut_entries`);
* each file keeps its synced content; its unsynced tail (bytes appended
  since the last sync) is dropped, kept, cut at a random point (a torn
  write), cut and followed by zeros or garbage of the same length, or
  holed: split into ``HOLE_BLOCK``-byte blocks (at file offsets that are
  multiples of it) each of which is independently kept, zeroed or
  garbage, the file being its full length or cut at a block boundary (a
  disk persists the unsynced blocks of the page cache in any order, so a
  later block can survive an earlier one). A file written in place
  (``open_overwrite``: a preallocated WAL segment) has the same outcomes
  over the region from the lowest offset written since its last sync,
  except that a lost byte there reads as what the disk held before (the
  synced content; zeros past it), or garbage: the unsynced writes revert
  to the old bytes, torn or holed, never "whole old or whole new". A file
  rewritten below its synced length (truncate, O_TRUNC) is either its
  synced content or its current content (:func:`cut_content`).

``mode="drop"`` keeps only what was synced; ``mode="keep"`` keeps everything
(what a killed process leaves behind: the OS outlives it); ``mode="holes"``
is ``random`` with every unsynced tail holed. Each chosen holes outcome is
counted in the caller's ``outcomes`` dict (``"holes"``: a tail with a lost
block before a kept one, that is, an intact block after damage;
``"holes_without_hole"``: a holed tail without one).

The random draws are made in a fixed order, so one ``rng`` seed always
gives the same image (seeded crash tests replay through it).

Pure functions of their arguments and ``rng``; no I/O, no shared state.
"""

from __future__ import annotations

import random
from typing import Protocol, TypeVar

HOLE_BLOCK = 512
"""Granularity of the ``holes`` power-cut outcome: the sector, the unit a
disk writes atomically. A 4 KiB page of the page cache reaches the platter
as 8 sectors that a power cut can also split, so 512-byte holes include
every 4 KiB outcome; and the tests' WAL segments (a few KiB) then hold
several blocks of unsynced tail, so holes actually occur in them."""

MODES = ("random", "drop", "keep", "holes")
"""The power-cut modes (see the module docstring)."""

_N = TypeVar("_N")


class FileState(Protocol):
    """What a power cut needs to know of a file (CrashFS's inode)."""

    data: bytearray  # what reads see
    durable: bytearray  # on the platter as of the last sync
    tail_only: bool  # data[:len(durable)] == durable, or data[:lo] == durable[:lo] with lo set
    lo: int | None  # lowest offset overwritten in place since the last sync

    def is_dirty(self) -> bool: ...


def cut_entries(
    durable: dict[str, _N], log: list[list[tuple[str, _N | None]]], rng: random.Random, mode: str
) -> dict[str, _N]:
    """A directory's entries after a power cut: the ``durable`` table (as of
    its last fsync) with each group of the unsynced change ``log`` (in
    order; ``None`` removes the name) applied whole or not at all."""
    entries = dict(durable)
    for group in log:
        if mode == "keep" or (mode in ("random", "holes") and rng.random() < 0.5):
            for name, node in group:
                if node is None:
                    entries.pop(name, None)
                else:
                    entries[name] = node
    return entries


def cut_content(node: FileState, rng: random.Random, mode: str, outcomes: dict[str, int]) -> bytes:
    """A file's content after a power cut (see the module docstring)."""
    if mode == "keep" or not node.is_dirty():
        return bytes(node.data)
    if mode == "drop":
        return bytes(node.durable)
    if not node.tail_only:
        return bytes(node.data) if rng.random() < 0.5 else bytes(node.durable)
    if node.lo is not None:  # written in place since the last sync
        return cut_overwritten(node, rng, mode, outcomes)
    base = bytes(node.durable)
    tail = bytes(node.data[len(base) :])
    outcome = 5 if mode == "holes" else rng.randrange(6)
    if outcome == 5:
        return cut_holes(base, tail, rng, outcomes)
    if outcome == 0:  # dropped
        return base
    if outcome == 1:  # kept
        return base + tail
    cut = rng.randrange(len(tail) + 1)
    if outcome == 2:  # torn
        return base + tail[:cut]
    if outcome == 3:  # torn, the rest zeros
        return base + tail[:cut] + bytes(len(tail) - cut)
    return base + tail[:cut] + rng.randbytes(len(tail) - cut)  # torn, the rest garbage


def cut_overwritten(node: FileState, rng: random.Random, mode: str, outcomes: dict[str, int]) -> bytes:
    """A power cut of a file written in place since its last sync (from
    ``node.lo`` on): dropped (the synced content), kept, torn at a random
    point (the rest reverts to the old bytes, or reads as zeros or
    garbage), or holed."""
    lo = node.lo
    assert lo is not None
    old, new = bytes(node.durable), bytes(node.data)
    outcome = 5 if mode == "holes" else rng.randrange(6)
    if outcome == 0:
        return old
    if outcome == 1:
        return new
    if outcome == 5:
        return cut_holes(new[:lo], new[lo:], rng, outcomes, old[lo:])
    cut = lo + rng.randrange(len(new) - lo + 1)
    n = len(new) - cut
    filler = old[cut : len(new)] if outcome == 2 else bytes(n) if outcome == 3 else rng.randbytes(n)
    return new[:cut] + filler.ljust(n, b"\0") + old[len(new) :]


def cut_holes(
    base: bytes, tail: bytes, rng: random.Random, outcomes: dict[str, int], old: bytes = b""
) -> bytes:
    """The ``holes`` outcome for an unsynced ``tail`` after the synced
    ``base``: each ``HOLE_BLOCK`` block of the tail (the first one may be
    partial, starting at ``len(base)``) kept, lost or garbage
    independently; the file its full length or cut at a block boundary
    (never below its synced length). A lost block reads as what the disk
    held there before: ``old`` (synced bytes at the same offsets, for a file
    written in place), zeros past it."""
    start = len(base)
    end = start + len(tail)
    floor = start + len(old)  # the synced length: a power cut never shortens a file below it
    first = max((start // HOLE_BLOCK + 1) * HOLE_BLOCK, -(-floor // HOLE_BLOCK) * HOLE_BLOCK)
    if first < end and rng.random() < 0.5:
        end = rng.randrange(first, end, HOLE_BLOCK)
    out = bytearray(base)
    pos = start
    lost = holed = False
    while pos < end:
        nxt = min((pos // HOLE_BLOCK + 1) * HOLE_BLOCK, end)
        chunk = tail[pos - start : nxt - start]
        r = rng.randrange(3)
        if r == 0:
            out += chunk
            holed = holed or lost
        else:
            out += (
                old[pos - start : nxt - start].ljust(len(chunk), b"\0")
                if r == 1
                else rng.randbytes(len(chunk))
            )
            lost = True
        pos = nxt
    if end - start < len(old):
        out += old[end - start :]
    key = "holes" if holed else "holes_without_hole"
    outcomes[key] = outcomes.get(key, 0) + 1
    return bytes(out)
