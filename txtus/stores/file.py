"""
L{FileStore}: uploads as files in one directory, in tusd's layout: the bytes
in C{<dir>/<id>} and an L{UploadInfo} in C{<dir>/<id>.info} with tusd's
field names, so txtus and tusd can serve each other's directories.

The offset is never written down: it is the size of the data file, as in
tusd.  A crash, a full disk or a cut connection therefore cannot make the
recorded offset disagree with the bytes stored.  Writes are plain blocking
C{os.write} calls of at most one socket read each (bounded local-disk
writes); C{.info} files are replaced atomically (temporary file, then
rename).
"""

from __future__ import annotations

import errno
import os
import secrets
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IPullProducer
from twisted.internet.task import cooperate
from twisted.logger import Logger
from zope.interface import implementer

from txtus import errors
from txtus.protocol.headers import is_valid_upload_id
from txtus.info import UploadInfo
from txtus.interfaces import (
    IChunkWriter,
    IConcater,
    IDataStore,
    ILengthDeferrer,
    IReader,
    ITerminater,
    IUpload,
    IUploadLister,
)

log = Logger()

FSYNC_POLICIES = ("never", "finish", "chunk")
_INFO_CACHE_SIZE = 4096


def _storage_error(error: OSError) -> errors.TusError:
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return errors.StorageFull()
    return errors.InternalServerError(f"storage error: {os.strerror(error.errno or 0)}")


@implementer(IDataStore, ITerminater, IConcater, ILengthDeferrer, IReader, IUploadLister)
class FileStore:
    """
    @param fsync: when to force bytes to stable storage: C{"finish"}
        (default: when an upload completes, and every C{.info} write),
        C{"chunk"} (also after every PATCH) or C{"never"}.
    """

    def __init__(self, path: str, fsync: str = "finish", dir_mode: int = 0o775, file_mode: int = 0o664) -> None:
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync must be one of {', '.join(FSYNC_POLICIES)}")
        self.path = os.path.abspath(path)
        self.fsync = fsync
        self.file_mode = file_mode
        self._info_cache: dict[str, tuple[tuple[int, int, int], UploadInfo]] = {}
        os.makedirs(self.path, mode=dir_mode, exist_ok=True)
        if not os.access(self.path, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, "upload directory is not writable", self.path)

    def use_in(self, composer: Any) -> None:
        composer.use_core(self)
        composer.use_terminater(self)
        composer.use_concater(self)
        composer.use_length_deferrer(self)
        composer.use_reader(self)
        composer.use_lister(self)

    # Paths -------------------------------------------------------------

    def data_path(self, upload_id: str) -> str:
        return os.path.join(self.path, upload_id)

    def info_path(self, upload_id: str) -> str:
        return os.path.join(self.path, upload_id + ".info")

    def write_info(self, info: UploadInfo) -> None:
        """Replace C{info}'s C{.info} file atomically."""
        final = self.info_path(info.id)
        temporary = f"{final}.{secrets.token_hex(4)}.tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, self.file_mode)
        try:
            os.write(fd, info.to_json())
            if self.fsync != "never":
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            os.unlink(temporary)
            raise
        os.close(fd)
        os.replace(temporary, final)
        self._info_cache.pop(info.id, None)

    def read_info(self, upload_id: str) -> UploadInfo:
        """
        The upload's info, from a cache validated by one C{stat}: reading
        and decoding the JSON on every request cost about a tenth of the
        time of a small upload.  The key (inode, mtime, size) changes with
        every atomic replace, including another process's, so the cache is
        safe with several processes on one directory.
        """
        path = self.info_path(upload_id)
        try:
            status = os.stat(path)
            key = (status.st_ino, status.st_mtime_ns, status.st_size)
            cached = self._info_cache.get(upload_id)
            if cached is not None and cached[0] == key:
                return cached[1].copy()
            with open(path, "rb") as f:
                raw = f.read(1 << 20)
        except FileNotFoundError:
            raise errors.UploadNotFound() from None
        try:
            info = UploadInfo.from_json(raw)
        except ValueError as e:
            # Only this upload is affected; it answers this until repaired.
            log.warn("upload {upload_id}: corrupt info file {path}: {reason}",
                     upload_id=upload_id, path=path, reason=str(e)[:200])
            raise errors.UploadInfoCorrupt() from None
        info.id = upload_id
        if len(self._info_cache) >= _INFO_CACHE_SIZE:
            del self._info_cache[next(iter(self._info_cache))]
        self._info_cache[upload_id] = (key, info)
        return info.copy()

    # IDataStore --------------------------------------------------------

    def new_upload(self, info: UploadInfo) -> Deferred:
        info = info.copy()
        if not info.id:
            info.id = secrets.token_hex(16)
        elif not is_valid_upload_id(info.id):
            return fail(errors.InternalServerError("invalid upload ID"))
        info.offset = 0
        info.storage = {"Type": "filestore", "Path": self.data_path(info.id), "InfoPath": self.info_path(info.id)}
        try:
            fd = os.open(self.data_path(info.id), os.O_WRONLY | os.O_CREAT | os.O_EXCL, self.file_mode)
            os.close(fd)
        except OSError as e:
            return fail(_storage_error(e))
        try:
            self.write_info(info)
        except OSError as e:
            # No .info, no upload (a full disk): do not leave its empty data
            # file behind, nameless to every listing.
            try:
                os.unlink(self.data_path(info.id))
            except OSError:
                pass
            return fail(_storage_error(e))
        return succeed(FileUpload(self, info))

    def get_upload(self, upload_id: str) -> Deferred:
        if not is_valid_upload_id(upload_id):
            return fail(errors.UploadNotFound())
        try:
            return succeed(FileUpload(self, self.read_info(upload_id)))
        except errors.TusError as e:
            return fail(e)

    # Extensions --------------------------------------------------------

    def terminate(self, upload: "FileUpload") -> Deferred:
        self._info_cache.pop(upload.id, None)
        for path in (self.data_path(upload.id), self.info_path(upload.id)):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError as e:
                return fail(_storage_error(e))
        return succeed(None)

    def declare_length(self, upload: "FileUpload", length: int) -> Deferred:
        info = self.read_info(upload.id)
        info.size = length
        upload.info.size = length
        try:
            self.write_info(info)
        except OSError as e:
            return fail(_storage_error(e))
        return succeed(None)

    def concat_uploads(self, final: "FileUpload", partials: list["FileUpload"]) -> Deferred:
        """
        Append the partials' files to the final upload's file with
        C{copy_file_range} (in-kernel, no copy through Python), a slice at a
        time so a large concatenation does not stall the reactor.
        """
        def copy():
            # Not O_APPEND: copy_file_range refuses appending targets.
            with open(self.data_path(final.id), "r+b") as target:
                # From the start: an earlier attempt cut short (a crash, a
                # full disk) may have left a prefix behind.
                target.truncate(0)
                position = 0
                for partial in partials:
                    with open(self.data_path(partial.id), "rb") as source:
                        size = os.fstat(source.fileno()).st_size
                        copied = 0
                        while copied < size:
                            step = _copy_range(source.fileno(), target.fileno(), copied, position, size - copied)
                            copied += step
                            position += step
                            yield None
                if self.fsync != "never":
                    os.fsync(target.fileno())

        def failed(failure: Any) -> Any:
            if failure.check(OSError):
                raise _storage_error(failure.value)
            return failure

        return cooperate(copy()).whenDone().addCallbacks(lambda _: None, failed)

    def send_content(self, upload: "FileUpload", consumer: Any, start: int, length: int) -> Deferred:
        try:
            f = open(self.data_path(upload.id), "rb")
        except FileNotFoundError:
            return fail(errors.UploadNotFound())
        producer = _FileRangeProducer(f, consumer, start, length)
        consumer.registerProducer(producer, False)
        return producer.done

    def list_upload_ids(self) -> Deferred:
        return succeed(sorted(name[:-5] for name in os.listdir(self.path)
                              if name.endswith(".info") and is_valid_upload_id(name[:-5])))


_COPY_SLICE = 16 * 1024 * 1024


def _copy_range(source: int, target: int, offset: int, target_offset: int, count: int) -> int:
    count = min(count, _COPY_SLICE)
    try:
        copied = os.copy_file_range(source, target, count, offset, target_offset)
    except (AttributeError, OSError) as e:
        if isinstance(e, OSError) and e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
            raise
        copied = os.pwrite(target, os.pread(source, min(count, 1 << 20), offset), target_offset)
    if copied == 0:
        raise OSError(errno.EIO, "partial upload shrank while being concatenated")
    return copied


@implementer(IUpload)
class FileUpload:
    def __init__(self, store: FileStore, info: UploadInfo) -> None:
        self.store = store
        self.info = info
        self.id = info.id

    def get_info(self) -> Deferred:
        try:
            offset = os.stat(self.store.data_path(self.id)).st_size
        except FileNotFoundError:
            return fail(errors.UploadNotFound())
        return succeed(self.info.copy(offset=offset))

    def open_chunk(self, offset: int) -> Deferred:
        path = self.store.data_path(self.id)
        try:
            size = os.stat(path).st_size
        except FileNotFoundError:
            return fail(errors.UploadNotFound())
        except OSError as e:
            return fail(_storage_error(e))
        if size != offset:
            # Only possible if something wrote behind the lock's back;
            # never append at the wrong place.
            return fail(errors.MismatchedOffset(headers={"Upload-Offset": str(size)}))
        return succeed(FileChunkWriter(path, offset, self.store.fsync == "chunk"))

    def finish(self) -> Deferred:
        if self.store.fsync != "never":
            try:
                fd = os.open(self.store.data_path(self.id), os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError as e:
                return fail(_storage_error(e))
        return succeed(None)


@implementer(IChunkWriter)
class FileChunkWriter:
    """
    Writes a chunk with blocking C{pwrite}s of one socket read each; never
    buffers, so it never needs to pause its producer, except to stop it
    when the disk refuses bytes.

    The data file is opened for each socket read rather than held open for
    the whole request: an upload trickling in then costs one descriptor
    (its socket), not two, which is what lets one process hold ten thousand
    slow uploads; an C{open}/C{close} pair is small next to a 256 KiB write.
    """

    def __init__(self, path: str, start: int, fsync: bool) -> None:
        self._path = path
        self._start = start
        self._position = start
        self._fsync = fsync
        self._error: OSError | None = None
        self._producer: Any = None
        self._closed = False

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self._producer = producer

    def unregisterProducer(self) -> None:
        self._producer = None

    def write(self, data: bytes) -> None:
        if self._error is not None or self._closed:
            return
        view = memoryview(data)
        try:
            fd = os.open(self._path, os.O_WRONLY)
            try:
                while view:
                    written = os.pwrite(fd, view, self._position)
                    self._position += written
                    view = view[written:]
            finally:
                os.close(fd)
        except OSError as e:
            self._error = e
            if self._producer is not None:
                self._producer.stopProducing()

    def commit(self) -> Deferred:
        if self._closed:
            return fail(RuntimeError("chunk already committed or rolled back"))
        self._closed = True
        try:
            if self._fsync and self._error is None and self._position > self._start:
                fd = os.open(self._path, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        except OSError as e:
            self._error = e
        try:
            offset = os.stat(self._path).st_size
        except FileNotFoundError:
            return fail(errors.UploadNotFound())
        if self._error is not None:
            return fail(_storage_error(self._error))
        return succeed(offset)

    def rollback(self) -> Deferred:
        if self._closed:
            return fail(RuntimeError("chunk already committed or rolled back"))
        self._closed = True
        try:
            os.truncate(self._path, self._start)
        except OSError as e:
            return fail(_storage_error(e))
        return succeed(self._start)


@implementer(IPullProducer)
class _FileRangeProducer:
    """Reads a byte range 64 KiB at a time, as the consumer asks for it."""

    CHUNK = 64 * 1024

    def __init__(self, f: Any, consumer: Any, start: int, length: int) -> None:
        self._file = f
        self._consumer = consumer
        self._position = start
        self._remaining = length
        self.done: Deferred = Deferred()

    def resumeProducing(self) -> None:
        if self._file is None:
            return
        try:
            data = os.pread(self._file.fileno(), min(self.CHUNK, self._remaining), self._position) if self._remaining else b""
        except OSError as e:
            self._end(_storage_error(e))
            return
        if not data:
            self._end(None if self._remaining == 0 else errors.InternalServerError("upload shrank during download"))
            return
        self._position += len(data)
        self._remaining -= len(data)
        self._consumer.write(data)

    def stopProducing(self) -> None:
        # The consumer went away (the client disconnected): not an error of
        # ours, so it is reported as the lost connection it is.
        self._end(ConnectionLost("download stopped by the consumer"))

    def _end(self, error: Exception | None) -> None:
        if self._file is None:
            return
        self._file.close()
        self._file = None
        self._consumer.unregisterProducer()
        if error is None:
            self.done.callback(None)
        else:
            self.done.errback(error)
