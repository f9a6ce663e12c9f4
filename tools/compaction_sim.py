"""Simulate leveled compaction with the real picker (lsm/compaction/picker.py)
on file sizes and key ranges only, no I/O: what write amplification a set of
options gives a random-key fill when compaction keeps up (each flush is
followed by every compaction the picker wants). Used to choose the level
sizing defaults (docs/benchmarks.md, "Compaction defaults").

Model: keys are uniform in [0, 1) (a random fill), so a flushed table covers
about the whole range and a byte of a table is spread evenly over its key
range; a merge writes the sum of its inputs (no overwrites: fillrandom) cut
into ``target_file_size`` pieces of equal key span. ``compress`` is the table
bytes per memtable byte (0.6 measured for the harness's values).

    python tools/compaction_sim.py --keys 1000000 --memtable-size 4MiB ...
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lsm.compaction.picker import pick_compaction
from lsm.manifest import FileMeta, Version, VersionEdit
from lsm.options import Options

SPAN = 10**18  # keys are the integers 0..SPAN


def _key(x: int) -> bytes:
    return b"%020d" % x


def _pos(k: bytes) -> int:
    return int(k)


def simulate(opts: Options, user_bytes: int, entry_bytes: int = 116, compress: float = 0.6) -> dict:
    """Fill ``user_bytes`` of random keys; return the SSTable bytes written
    (flush, compaction) and the final shape."""
    mem_bytes = opts.memtable_size
    mem_user = mem_bytes * entry_bytes / (entry_bytes + 16)  # memtable charges 16 B per entry
    flushes = max(1, round(user_bytes / mem_user))
    v = Version.empty(opts.num_levels)
    number = 1
    seq = 0
    flushed = compacted = 0
    n_compactions = 0
    for i in range(flushes):
        size = int(mem_user * compress)
        seq += 1
        f = FileMeta(number, size, _key(0), _key(SPAN), seq, seq, 1, 0)
        number += 1
        v = v.apply(VersionEdit(added=[(0, f)]))
        flushed += size
        while True:
            c = pick_compaction(v, opts)
            if c is None:
                break
            n_compactions += 1
            if c.is_trivial_move:
                f0 = c.inputs[0]
                v = v.apply(VersionEdit(removed=[(c.level, f0.number)], added=[(c.output_level, f0)]))
                continue
            files = c.all_inputs()
            lo = min(_pos(f.smallest) for f in files)
            hi = max(_pos(f.largest) for f in files)
            total = sum(f.file_size for f in files)
            pieces = max(1, round(total / opts.target_file_size))
            added = []
            for p in range(pieces):
                a = lo + (hi - lo) * p // pieces
                b = lo + (hi - lo) * (p + 1) // pieces
                # neighbours stay disjoint in keys
                added.append((c.output_level, FileMeta(number, total // pieces, _key(a if p == 0 else a + 1),
                                                       _key(b), seq, seq, 1, 0)))
                number += 1
            compacted += total
            removed = [(c.level, f.number) for f in c.inputs] + [(c.output_level, f.number) for f in c.next_inputs]
            v = v.apply(VersionEdit(removed=removed, added=added))
    return {
        "flushes": flushes,
        "compactions": n_compactions,
        "flush_bytes": flushed,
        "compaction_bytes": compacted,
        "sst_write_amp": (flushed + compacted) / user_bytes,
        "levels": [round(v.level_bytes(lv) / 2**20, 1) for lv in range(v.num_levels)],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--entry-bytes", type=int, default=116)
    ap.add_argument("--compress", type=float, default=0.6)
    ap.add_argument("--option", action="append", default=[], metavar="NAME=VALUE", help="an lsm option (int)")
    a = ap.parse_args()
    kw = {}
    for o in a.option:
        k, _, val = o.partition("=")
        mult = {"KiB": 1024, "MiB": 2**20}
        for suf, m in mult.items():
            if val.endswith(suf):
                kw[k] = int(float(val[: -len(suf)]) * m)
                break
        else:
            kw[k] = int(val)
    opts = Options.from_kwargs(**kw)
    r = simulate(opts, a.keys * a.entry_bytes, a.entry_bytes, a.compress)
    print(kw, r)


if __name__ == "__main__":
    main()
