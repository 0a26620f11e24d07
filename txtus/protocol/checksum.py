"""
The checksum and checksum-trailer extensions: the digests txtus computes
while a chunk streams in, so a chunk is verified without being read twice.
"""

from __future__ import annotations

import hashlib
import zlib
from typing import Any, Protocol


class Hasher(Protocol):
    def update(self, data: bytes) -> None: ...
    def digest(self) -> bytes: ...


class _Crc32:
    """CRC-32 (as zlib and gzip compute it), digest as 4 big-endian bytes."""

    def __init__(self) -> None:
        self._value = 0

    def update(self, data: bytes) -> None:
        self._value = zlib.crc32(data, self._value)

    def digest(self) -> bytes:
        return self._value.to_bytes(4, "big")


ALGORITHMS: dict[str, Any] = {
    "sha1": hashlib.sha1,
    "md5": hashlib.md5,
    "sha256": hashlib.sha256,
    "sha512": hashlib.sha512,
    "crc32": _Crc32,
}
SUPPORTED = frozenset(ALGORITHMS)
# The spec requires sha1; list it first.
ADVERTISED = b"sha1,md5,sha256,sha512,crc32"


def new_hasher(algorithm: str) -> Hasher:
    return ALGORITHMS[algorithm]()


class AllHashers:
    """
    Every supported digest at once.  Used when the checksum comes as a
    trailer: its algorithm is only known once the body has ended.
    """

    def __init__(self) -> None:
        self._hashers = {name: factory() for name, factory in ALGORITHMS.items()}

    def update(self, data: bytes) -> None:
        for hasher in self._hashers.values():
            hasher.update(data)

    def digest_for(self, algorithm: str) -> bytes:
        return self._hashers[algorithm].digest()
