"""Keys and values of the benchmarks, deterministic given a seed.

Keys are fixed-width decimal numbers, ``b"%016d" % i`` for ``--key-size 16``:
zero padding makes byte order equal numeric order, so ``fillseq`` writes in
key order and ``fillrandom`` writes a random permutation of the same keys.
A missing key has the same width and falls between two present keys:
``b"%015d." % i`` sorts between the keys of ``10*i - 1`` and ``10*i``
(``.`` < ``0``). So neither a key-range check nor a length check can
answer it: only the filter or a block search can.

Values are db_bench's compressible random data: each value is
``compressible_ratio * value_size`` random bytes repeated to ``value_size``,
so a compressor shrinks it to about that ratio. A pool of about 1 MiB of
distinct values is cycled through, as db_bench does.
"""

from __future__ import annotations

import random
import zlib

VALUE_POOL_BYTES = 1 << 20
"""Bytes of distinct values cycled through (db_bench: 1 MiB)."""


def seed_for(seed: int, name: str) -> int:
    """A stable per-purpose seed: the same (seed, name) gives the same
    stream in every run and every engine."""
    return (seed * 1_000_003) ^ zlib.crc32(name.encode())


def key_format(key_size: int) -> bytes:
    """The %-format of a present key of ``key_size`` bytes."""
    return b"%%0%dd" % key_size


def check_key_size(key_size: int, count: int) -> None:
    """Raise ValueError if ``count`` distinct keys (and their missing
    neighbours) do not fit in ``key_size`` bytes."""
    digits = len(str(max(count - 1, 0)))
    if key_size < digits + 1:
        raise ValueError(
            f"--key-size {key_size} is too small for {count} keys: need at least {digits + 1} bytes"
        )


def keys(indices, key_size: int) -> list[bytes]:
    """The present keys of ``indices``, in that order."""
    fmt = key_format(key_size)
    return [fmt % i for i in indices]


def missing_keys(indices, key_size: int) -> list[bytes]:
    """Keys of ``key_size`` bytes that no fill writes, one per present-key
    index ``j`` in ``indices``: the key just before present key
    ``10 * (j // 10)`` (or before key 10 when j < 10), so inside the key
    range when the fill wrote more than 10 keys."""
    fmt = b"%%0%dd." % (key_size - 1)
    return [fmt % (j // 10 or 1) for j in indices]


def permutation(n: int, seed: int) -> list[int]:
    """A random permutation of ``range(n)``."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return order


def uniform(n: int, count: int, seed: int) -> list[int]:
    """``count`` indices drawn uniformly, with replacement, from ``range(n)``."""
    if n <= 0:
        return [0] * count
    return random.Random(seed).choices(range(n), k=count)


def value_pool(value_size: int, compressible_ratio: float, seed: int) -> list[bytes]:
    """Distinct values of ``value_size`` bytes, about VALUE_POOL_BYTES in
    all, each compressible to about ``compressible_ratio``."""
    if value_size <= 0:
        return [b""]
    rng = random.Random(seed)
    raw_len = max(1, int(value_size * compressible_ratio))
    count = max(1, VALUE_POOL_BYTES // value_size)
    pool = []
    for _ in range(count):
        raw = rng.randbytes(raw_len)
        pool.append((raw * (value_size // raw_len + 1))[:value_size])
    return pool
