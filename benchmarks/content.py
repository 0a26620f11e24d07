"""
What each benchmark upload contains, as a pure function of the upload's
number: the load generator sends it and the verifier regenerates it, so no
hashing or record keeping happens while the load runs.

Bytes come from one pseudo-random pool (same seed everywhere); upload C{u}
is a sequence of 1 MiB blocks, each starting at an offset in the pool that
depends on C{u} and the block number.  A block written at the wrong offset
or into another upload's file therefore shows up as a mismatch.
"""

from __future__ import annotations

import random
from typing import Iterator

BLOCK = 1 << 20
POOL_SIZE = 8 << 20
SEED = 0x7475732D  # "tus-"

_pool: memoryview | None = None


def pool() -> memoryview:
    global _pool
    if _pool is None:
        _pool = memoryview(random.Random(SEED).randbytes(POOL_SIZE + BLOCK))
    return _pool


def _block_start(upload: int, block: int) -> int:
    return (upload * 1_000_003 + block * 1_040_483 + (upload * block) * 7_919) % POOL_SIZE


def views(upload: int, start: int, end: int) -> Iterator[memoryview]:
    """Zero-copy slices covering bytes C{[start, end)} of upload C{upload}."""
    data = pool()
    position = start
    while position < end:
        block, within = divmod(position, BLOCK)
        take = min(BLOCK - within, end - position)
        base = _block_start(upload, block) + within
        yield data[base:base + take]
        position += take


def make(upload: int, start: int, end: int) -> bytes:
    """Bytes C{[start, end)} of upload C{upload}, as one object."""
    return b"".join(views(upload, start, end))


def verify_file(path: str, upload: int, size: int) -> str | None:
    """None when the file at C{path} holds exactly upload C{upload}, else why not."""
    try:
        f = open(path, "rb")
    except OSError as e:
        return f"cannot open: {e.strerror}"
    with f:
        position = 0
        for expected in views(upload, 0, size):
            got = f.read(len(expected))
            if got != expected:
                return f"content differs in bytes {position}-{position + len(expected)}"
            position += len(expected)
        extra = f.read(1)
        if extra:
            return f"file is longer than the {size} bytes sent"
    return None
