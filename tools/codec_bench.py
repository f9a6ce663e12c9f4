"""Block codecs on real data blocks (docs/format/sstable.md, M9): reads up to
2,000 data block payloads of the largest table under --db (e.g. a template
of tools/read_bench.py), compresses each with every codec, and reports the
stored / payload ratio and the CPU time (time.process_time) to decompress
one block, each block decompressed 5 times after one warm-up pass.

    python tools/codec_bench.py --db /tmp/lsm-read-bench/tmpl-1000000
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import time

import lz4.block
import zstandard

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from lsm.base.fs import FileSystem  # noqa: E402
from lsm.sstable.format import unframe_block  # noqa: E402
from lsm.sstable.reader import TableReader  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", required=True)
    ap.add_argument("--blocks", type=int, default=2000)
    a = ap.parse_args()
    path = max(glob.glob(os.path.join(a.db, "*.sst")), key=os.path.getsize)
    r = TableReader.open(FileSystem(), path, file_number=1)
    payloads = [
        unframe_block(r.file.pread(r._boffs[i], r._bsizes[i]), True)
        for i in range(min(a.blocks, len(r._boffs)))
    ]
    r.close()
    raw = sum(map(len, payloads))
    print(f"{path}: {len(payloads)} blocks, {raw / len(payloads):.0f} payload bytes each")

    def bench(name, comp, decomp):
        stored = [comp(p) for p in payloads]
        for x, p in zip(stored, payloads):
            assert decomp(x, len(p)) == p
        t = time.process_time()
        for _ in range(5):
            for x, p in zip(stored, payloads):
                decomp(x, len(p))
        us = (time.process_time() - t) / 5 / len(stored) * 1e6
        print(f"{name:12s} stored/payload {sum(map(len, stored)) / raw:.3f}  decompress {us:.2f} us/block")

    d = zstandard.ZstdDecompressor()
    bench("zstd-1", zstandard.ZstdCompressor(level=1).compress, lambda x, n: d.decompress(x))
    bench(
        "lz4",
        lambda p: lz4.block.compress(p, store_size=False),
        lambda x, n: lz4.block.decompress(x, uncompressed_size=n),
    )
    bench("none", lambda p: p, lambda x, n: bytes(x))


if __name__ == "__main__":
    main()
