"""
L{MemoryStore}: a complete store that keeps uploads in memory.

It is the reference implementation of every storage interface (the store
conformance suite runs against it and the file store alike) and a
convenient store for tests and demos.  Plain chunks join the upload as
they are written; staged chunks (checksums) are buffered apart until
C{commit}, which makes roll-back trivial.  It honours backpressure: above C{high_water} bytes pending it pauses the
producer until a commit, so even a test store never lets a body grow
without bound.  Nothing survives a restart, and every upload lives in
memory: not for production.
"""

from __future__ import annotations

import dataclasses
import secrets
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

from txtus import errors
from txtus.protocol.headers import is_valid_upload_id
from txtus.info import UploadInfo
from txtus.interfaces import (
    IChunkStager,
    IChunkWriter,
    IConcater,
    IDataStore,
    IExpiryRenewer,
    ILengthDeferrer,
    IReader,
    ITerminater,
    IUpload,
    IStagedChunkWriter,
    IUploadLister,
)


@implementer(IDataStore, ITerminater, IConcater, ILengthDeferrer, IReader, IUploadLister, IChunkStager, IExpiryRenewer)
class MemoryStore:
    """
    @param high_water: bytes a chunk writer accepts before pausing the body.
    @param auto_drain: resume a paused body on the next reactor turn (as a
        fast backend would); tests that model a stuck backend turn it off
        and call L{MemoryChunkWriter.drain} themselves.
    """

    def __init__(self, high_water: int = 1 << 20, auto_drain: bool = True, reactor: Any = None) -> None:
        if reactor is None:
            from twisted.internet import reactor as global_reactor
            reactor = global_reactor
        self.reactor = reactor
        self.auto_drain = auto_drain
        self.last_writer: MemoryChunkWriter | None = None
        self.high_water = high_water
        self.infos: dict[str, UploadInfo] = {}
        self.data: dict[str, bytearray] = {}

    def use_in(self, composer: Any) -> None:
        composer.use_core(self)
        composer.use_terminater(self)
        composer.use_concater(self)
        composer.use_length_deferrer(self)
        composer.use_reader(self)
        composer.use_lister(self)
        composer.use_stager(self)
        composer.use_expiry_renewer(self)

    def new_upload(self, info: UploadInfo) -> Deferred:
        info = dataclasses.replace(info, offset=0, storage={"Type": "memorystore"},
                                   metadata=dict(info.metadata), partial_uploads=list(info.partial_uploads))
        if not info.id:
            info.id = secrets.token_hex(16)
        elif not is_valid_upload_id(info.id) or info.id in self.infos:
            return fail(errors.InternalServerError("invalid or duplicate upload ID"))
        self.infos[info.id] = info
        self.data[info.id] = bytearray()
        return succeed(MemoryUpload(self, info.id))

    def get_upload(self, upload_id: str) -> Deferred:
        if upload_id not in self.infos:
            return fail(errors.UploadNotFound())
        return succeed(MemoryUpload(self, upload_id))

    def terminate(self, upload: "MemoryUpload") -> Deferred:
        self.infos.pop(upload.id, None)
        self.data.pop(upload.id, None)
        return succeed(None)

    def declare_length(self, upload: "MemoryUpload", length: int) -> Deferred:
        self.infos[upload.id].size = length
        return succeed(None)

    def open_staged_chunk(self, upload: "MemoryUpload", offset: int) -> Deferred:
        return upload.open_chunk(offset, staged=True)

    def renew_expiry(self, upload: "MemoryUpload", expires: float) -> Deferred:
        info = self.infos.get(upload.id)
        if info is None:
            return fail(errors.UploadNotFound())
        info.expires = expires
        return succeed(None)

    def concat_uploads(self, final: "MemoryUpload", partials: list["MemoryUpload"]) -> Deferred:
        target = self.data[final.id]
        del target[:]  # start over after an attempt cut short
        for partial in partials:
            target += self.data[partial.id]
        return succeed(None)

    def send_content(self, upload: "MemoryUpload", consumer: Any, start: int, length: int) -> Deferred:
        data = self.data.get(upload.id)
        if data is None:
            return fail(errors.UploadNotFound())
        view = bytes(data[start:start + length])
        consumer.registerProducer(_NoopProducer(), True)
        for position in range(0, len(view), 65536):
            consumer.write(view[position:position + 65536])
        consumer.unregisterProducer()
        return succeed(None)

    def list_upload_ids(self) -> Deferred:
        return succeed(sorted(self.infos))


@implementer(IPushProducer)
class _NoopProducer:
    def pauseProducing(self) -> None: ...
    def resumeProducing(self) -> None: ...
    def stopProducing(self) -> None: ...


@implementer(IUpload)
class MemoryUpload:
    def __init__(self, store: MemoryStore, upload_id: str) -> None:
        self.store = store
        self.id = upload_id

    def get_info(self) -> Deferred:
        info = self.store.infos.get(self.id)
        if info is None:
            return fail(errors.UploadNotFound())
        return succeed(info.copy(offset=len(self.store.data[self.id])))

    def open_chunk(self, offset: int, staged: bool = False) -> Deferred:
        data = self.store.data.get(self.id)
        if data is None:
            return fail(errors.UploadNotFound())
        if len(data) != offset:
            return fail(errors.MismatchedOffset(headers={"Upload-Offset": str(len(data))}))
        writer = (MemoryStagedChunkWriter if staged else MemoryChunkWriter)(self.store, self.id, offset)
        self.store.last_writer = writer
        return succeed(writer)

    def finish(self) -> Deferred:
        info = self.store.infos.get(self.id)
        if info is None:
            return fail(errors.UploadNotFound())
        info.finished = True
        return succeed(None)


@implementer(IChunkWriter)
class MemoryChunkWriter:
    """
    A plain chunk: bytes join the upload as they are written.  Bytes not
    yet "drained" above the store's high-water mark pause the producer
    until L{drain} is called, which models a slow backend catching up.
    """

    def __init__(self, store: MemoryStore, upload_id: str, start: int) -> None:
        self._store = store
        self._id = upload_id
        self._start = start
        self._undrained = 0
        self._producer: Any = None
        self._paused = False
        self._closed = False

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self._producer = producer

    def unregisterProducer(self) -> None:
        self._producer = None

    def write(self, data: bytes) -> None:
        if self._closed:
            return
        self._store_bytes(data)
        self._undrained += len(data)
        if self._undrained > self._store.high_water and self._producer is not None and not self._paused:
            self._paused = True
            self._producer.pauseProducing()
            if self._store.auto_drain:
                self._store.reactor.callLater(0, self.drain)

    def _store_bytes(self, data: bytes) -> None:
        upload = self._store.data.get(self._id)
        if upload is not None:
            upload += data

    def drain(self) -> None:
        """The backend caught up: resume a paused producer."""
        self._undrained = 0
        if self._paused:
            self._paused = False
            if self._producer is not None:
                self._producer.resumeProducing()

    def undrained(self) -> int:
        return self._undrained

    def _close(self) -> Deferred | None:
        """Mark the writer ended; a failure if it already was."""
        if self._closed:
            return fail(RuntimeError("chunk already committed, rolled back or aborted"))
        self._closed = True
        return None

    def commit(self) -> Deferred:
        closed = self._close()
        if closed is not None:
            return closed
        data = self._store.data.get(self._id)
        if data is None:
            return fail(errors.UploadNotFound())
        self._settle(data)
        return succeed(len(data))

    def _settle(self, data: bytearray) -> None:
        """Make the accepted bytes part of C{data}: a plain chunk's already are."""

    def abort(self) -> Deferred:
        self._closed = True  # what was written stays: a plain chunk keeps its bytes
        return succeed(None)


@implementer(IStagedChunkWriter)
class MemoryStagedChunkWriter(MemoryChunkWriter):
    """A staged chunk: kept apart until C{commit}, so roll-back is trivial."""

    def __init__(self, store: MemoryStore, upload_id: str, start: int) -> None:
        super().__init__(store, upload_id, start)
        self._chunk: list[bytes] = []

    def _store_bytes(self, data: bytes) -> None:
        self._chunk.append(data)

    def _settle(self, data: bytearray) -> None:
        for piece in self._chunk:
            data += piece
        self._chunk = []

    def rollback(self) -> Deferred:
        closed = self._close()
        if closed is not None:
            return closed
        self._chunk = []
        return succeed(self._start)

    def abort(self) -> Deferred:
        self._closed = True
        self._chunk = []
        return succeed(None)
