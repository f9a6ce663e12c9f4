"""Fuzz target ``batch_body``: ``lsm.batch.decode_body``; also the sample
batches the WAL seeds carry."""

from __future__ import annotations

from fuzz.core import L, Target, check


def batch_body(ops: list[tuple[int, bytes, bytes]]) -> bytes:
    return b"".join(L.batch.OP_HEADER.pack(k, len(a), len(b)) + a + b for k, a, b in ops)


def sample_batches() -> list[list[tuple[int, bytes, bytes]]]:
    put, delete = L.ValueKind.PUT, L.ValueKind.DELETE
    out = [
        [(put, b"k", b"v")],
        [(delete, b"gone", b"")],
        [(put, b"a" * 20, b"x" * 90), (delete, b"b", b""), (put, b"", b"")],
        [(put, b"key%d" % i, b"value%d" % i) for i in range(5)],
    ]
    rd = getattr(L.ValueKind, "RANGE_DELETE", None)
    if rd is not None:
        out.append([(rd, b"c", b"f"), (put, b"d", b"new")])
    return out


def run_batch_body(data: bytes) -> str:
    count = int.from_bytes(data[:2], "little")
    body = data[2:]
    try:
        ops = L.batch.decode_body(body, count, "fuzz", 0)
    except L.CorruptionError as e:
        check(e.path == "fuzz", "error does not name the record")
        return "rejected"
    check(len(ops) == count, f"{len(ops)} ops for count {count}")
    check(batch_body(ops) == body, "decoded ops do not re-encode to the body")
    return "accepted"


def fix_batch(data: bytes) -> bytes:
    """Set the count to the number of ops the body frames."""
    body, pos, n = data[2:], 0, 0
    while pos + 9 <= len(body):
        _k, a, b = L.batch.OP_HEADER.unpack_from(body, pos)
        pos += 9 + a + b
        n += 1
    return (n & 0xFFFF).to_bytes(2, "little") + body


def _seed_batches() -> list[bytes]:
    return [len(ops).to_bytes(2, "little") + batch_body(ops) for ops in sample_batches()]


def targets() -> list[Target]:
    return [Target("batch_body", run_batch_body, _seed_batches, fix_batch, "lsm.batch.decode_body")]
