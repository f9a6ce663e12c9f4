"""The mutations of valid encodings: bit flips, interesting bytes and
integers written over length fields, inserted, deleted, duplicated and
zeroed runs, truncation, splices of two seeds; then, half the time, the
target's checksum fix."""

from __future__ import annotations

import random
from collections.abc import Callable

from fuzz.core import Target

_INTS = [
    0,
    1,
    2,
    7,
    8,
    0x7F,
    0x80,
    0xFF,
    0x100,
    0x7FFF,
    0xFFFF,
    0x7FFFFFFF,
    0x80000000,
    0xFFFFFFFF,
    1 << 28,
    (1 << 28) + 1,
    1 << 32,
    1 << 56,
    (1 << 63),
    (1 << 64) - 1,
]


def mutate(
    data: bytes, pick: Callable[[int], int], seeds: list[bytes], fix: Callable[[bytes], bytes] | None
) -> bytes:
    """1-8 mutations of ``data``; ``pick(n)`` chooses in ``0..n-1`` (a
    random.Random or a Hypothesis draw). Then, half the time, ``fix``."""
    b = bytearray(data)
    for _ in range(1 + pick(1 + pick(8))):  # mostly one or two: deep inputs stay nearly valid
        op = pick(11)
        n = len(b)
        where = pick(4)  # headers, trailers and footers sit at the ends: favour them
        pos = pick(min(n, 40) + 1) if where == 1 else n - pick(min(n, 40) + 1) if where == 2 else pick(n + 1)
        if op == 0 and n:
            b[min(pos, n - 1)] ^= 1 << pick(8)
        elif op == 1 and n:
            b[min(pos, n - 1)] = (0, 1, 0x7F, 0x80, 0xFF, pick(256))[pick(6)]
        elif op == 2 and n:
            width = (1, 2, 4, 8)[pick(4)]
            value = _INTS[pick(len(_INTS))] % (1 << 8 * width)
            if pick(4) == 0:
                value = (value + pick(5) - 2) % (1 << 8 * width)
            p = min(pos, max(0, n - width))
            b[p : p + width] = value.to_bytes(width, "little")
        elif op == 3:
            b[pos:pos] = bytes(pick(256) for _ in range(1 + pick(16)))
        elif op == 4 and n:
            del b[pos : pos + 1 + pick(16)]
        elif op == 5:
            del b[pos:]
        elif op == 6 and n:
            a = pick(n)
            chunk = b[a : a + 1 + pick(32)]
            b[pos:pos] = chunk
        elif op == 7 and seeds:
            other = seeds[pick(len(seeds))]
            b = b[:pos] + bytearray(other[pick(len(other) + 1) :])
        elif op == 8 and n:
            b[pos : pos + 1 + pick(32)] = bytes(len(b[pos : pos + 1 + pick(32)]))
        elif op == 9 and n:
            b[min(pos, n - 1)] = (b[min(pos, n - 1)] + pick(3) - 1) % 256
        elif op == 10:  # a long run of one byte (one already there, or any)
            byte = b[pick(n)] if n and pick(2) else pick(256)
            b[pos:pos] = bytes([byte]) * (16, 300, 5000)[pick(3)]
    out = bytes(b)
    if fix is not None and pick(2):
        out = fix(out)
    return out


def generate(t: Target, rng: random.Random) -> bytes:
    """One input for ``t``: usually a mutated seed, sometimes random bytes."""
    seeds = t.seed_list()
    if rng.random() < 0.05:
        return rng.randbytes(rng.randint(0, 300))
    return mutate(seeds[rng.randrange(len(seeds))], rng.randrange, seeds, t.fix)
