"""
Where a buffered part's bytes wait while it fills and until S3 confirmed
its PUT: in memory (L{MemoryPart}, the default) or in a file of its own
under C{--s3-spool-dir} (L{SpooledPart}), for parts too large to hold in
memory for every active upload.

A spooled part's file never has a name: it is created with C{O_TMPFILE}
(or, where that is missing, created with C{O_EXCL}, mode 0600, and unlinked
at once, which C{tempfile.TemporaryFile} does).  Closing it, or the process
dying in any way, gives its space back, so nothing is left to sweep after a
crash, and no other process or user can open it.

Either kind gives the HTTP client a fresh body producer per try, so a part
PUT that failed is retried from the same bytes.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import os
import tempfile
from typing import Any, Iterator

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IConsumer
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

_READ = 64 * 1024


@implementer(IBodyProducer)
class _PacedProducer:
    """
    A request body written as the connection takes it: the HTTP client
    registers the producer on its transport, which pauses and resumes it as
    its buffer fills and drains; C{_pump} writes until paused or done.
    """

    length: int
    _paused = False
    _consumer: Any = None
    _done: Deferred | None = None

    def startProducing(self, consumer: IConsumer) -> Deferred:
        self._consumer = consumer
        self._done = done = Deferred()
        self._pump()
        return done

    def _pump(self) -> None:
        raise NotImplementedError

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._pump()

    def stopProducing(self) -> None:
        self._done = None


class PiecesProducer(_PacedProducer):
    """
    A request body made of byte strings already in memory (a buffered part),
    written one at a time as the connection takes them, so the transport
    never holds a second copy of the whole part.
    """

    def __init__(self, pieces: list[bytes]) -> None:
        self._pieces = pieces
        self.length = sum(len(p) for p in pieces)
        self._index = 0

    def _pump(self) -> None:
        while not self._paused and self._done is not None and self._index < len(self._pieces):
            piece = self._pieces[self._index]
            self._index += 1
            self._consumer.write(piece)
        if self._done is not None and self._index >= len(self._pieces):
            done, self._done = self._done, None
            self._release()
            done.callback(None)

    def _release(self) -> None:
        # An idle pooled connection keeps its last request, and so this
        # producer, alive: without this it would keep a whole part too.
        self._pieces = []
        self._index = 0

    def stopProducing(self) -> None:
        super().stopProducing()
        self._release()


class FileRangeProducer(_PacedProducer):
    """
    C{length} bytes of an open file from offset 0, read a socket buffer at
    a time as the connection takes them (C{pread}: tries of the same part
    may overlap a close of the previous connection without sharing a file
    position).
    """

    def __init__(self, fd: int, length: int) -> None:
        self._fd = fd
        self.length = length
        self._position = 0

    def _pump(self) -> None:
        while not self._paused and self._done is not None and self._position < self.length:
            try:
                data = os.pread(self._fd, min(_READ, self.length - self._position), self._position)
                if not data:
                    raise OSError("the spool file is shorter than its part")
            except OSError as e:
                done, self._done = self._done, None
                done.errback(e)
                return
            self._position += len(data)
            self._consumer.write(data)
        if self._done is not None and self._position >= self.length:
            done, self._done = self._done, None
            done.callback(None)


class MemoryPart:
    """A part's bytes as the byte strings they arrived in (never joined)."""

    def __init__(self, pieces: list[bytes] | None = None) -> None:
        self._pieces: list[bytes] = list(pieces or ())
        self.length = sum(len(p) for p in self._pieces)

    def append(self, data: bytes) -> None:
        self._pieces.append(data)
        self.length += len(data)

    def md5_base64(self) -> str:
        digest = hashlib.md5(usedforsecurity=False)
        for piece in self._pieces:
            digest.update(piece)
        return base64.b64encode(digest.digest()).decode("ascii")

    def producer(self) -> IBodyProducer:
        return PiecesProducer(self._pieces)

    def chunks(self) -> Iterator[bytes]:
        return iter(list(self._pieces))

    def close(self) -> None:
        self._pieces = []


class SpooledPart:
    """
    A part's bytes in a nameless file under C{directory}, its MD5 computed
    as they are written.  The file is created at the first byte.

    @raise OSError: from L{append}, when the file cannot be created or
        written (a full disk): the writer stops the body.
    """

    def __init__(self, directory: str) -> None:
        self._directory = directory
        self._file: Any = None
        self._md5 = hashlib.md5(usedforsecurity=False)
        self.length = 0

    def append(self, data: bytes) -> None:
        if self._file is None:
            self._file = tempfile.TemporaryFile(dir=self._directory, prefix="txtus-s3-part-", buffering=0)
        view = memoryview(data)
        while view:
            written = os.pwrite(self._file.fileno(), view, self.length)
            self.length += written
            self._md5.update(view[:written])
            view = view[written:]

    def md5_base64(self) -> str:
        return base64.b64encode(self._md5.digest()).decode("ascii")

    def producer(self) -> IBodyProducer:
        if self._file is None:
            return PiecesProducer([])
        return FileRangeProducer(self._file.fileno(), self.length)

    def chunks(self) -> Iterator[bytes]:
        position = 0
        while position < self.length:
            data = os.pread(self._file.fileno(), min(_READ, self.length - position), position)
            if not data:
                raise OSError("the spool file is shorter than its part")
            position += len(data)
            yield data

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def check_spool_dir(directory: str) -> None:
    """
    @raise OSError: C{directory} cannot hold spooled parts (missing, not a
        directory, not writable), with the reason.
    """
    if not os.path.isdir(directory):
        raise OSError(errno.ENOTDIR, "not a directory" if os.path.exists(directory) else "no such directory")
    with tempfile.TemporaryFile(dir=directory, prefix="txtus-s3-part-", buffering=0) as probe:
        probe.write(b"x")
