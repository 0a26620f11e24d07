"""
L{FileLocker}: per-upload locks shared by several txtus processes serving
one upload directory, with tusd v2's lock-release requests.

Inside one process, requests for the same upload queue in a
L{txtus.lockers.memory.MemoryLocker}, so a HEAD interrupts a stalled PATCH
at once (L{txtus.lockers.crossprocess}).  Across processes, the lock is an
C{fcntl.flock} on C{<dir>/<id>.lock}: the kernel drops it when its process dies, so a crash never leaves a stale lock
(tusd's PID files need stale-lock detection; this does not).  A process
that finds the flock taken drops a stop request, an empty file
C{<dir>/.txtus-stop/<id>}, and retries every C{acquirer_poll_interval}.  A
process holding locks looks for stop requests every C{holder_poll_interval}
with one C{os.listdir} of that folder, whatever the number of locks it
holds.  Every file operation is non-blocking (C{LOCK_NB}); waiting is done
with timers, never by blocking the reactor.

Files are named after the upload ID when it is a plain one
(C{[A-Za-z0-9_-]}, as the file store's); any other ID the store accepts
(the S3 store's C{<objectid>+<multipartid>}, up to a kilobyte long) is
named by its SHA-256 instead (C{~<hex>.lock}), so the directory can hold
the locks of processes sharing one bucket.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
from typing import Any, Callable

from twisted.internet.defer import Deferred, fail
from twisted.internet.task import LoopingCall
from txtus.logs import Logger

from txtus import errors
from txtus.lockers.crossprocess import CrossProcessLocker, HeldLock
from txtus.protocol.headers import is_valid_upload_id

log = Logger()

STOP_DIRECTORY = ".txtus-stop"
LOCK_SUFFIX = ".lock"

# How often to retry at once when the lock file we locked was removed by
# its previous holder meanwhile (a new one has to be locked instead).
_REPLACED_RETRIES = 5
_PLAIN_NAME_LIMIT = 200


def lock_name(upload_id: str) -> str:
    """
    The file name standing for C{upload_id}: the ID itself when it is a
    short plain one (what older versions used, so they interoperate), else
    C{~} and its SHA-256 (C{~} never starts a plain ID).
    """
    if len(upload_id) <= _PLAIN_NAME_LIMIT and is_valid_upload_id(upload_id):
        return upload_id
    return "~" + hashlib.sha256(upload_id.encode("utf-8", "surrogatepass")).hexdigest()


class FileLocker(CrossProcessLocker):
    """
    @param directory: the shared upload directory (created if missing).
    @param acquire_timeout: seconds a request waits for a lock, in-process
        queueing and cross-process polling together, before failing with
        C{LockTimeout} (tusd: 20).
    @param holder_poll_interval: seconds between two looks for stop
        requests while this process holds locks.
    @param acquirer_poll_interval: seconds between two attempts at a lock
        another process holds.
    """

    def __init__(self, directory: str, acquire_timeout: float = 20.0, holder_poll_interval: float = 0.25,
                 acquirer_poll_interval: float = 0.1, reactor: Any = None) -> None:
        if holder_poll_interval <= 0:
            raise ValueError("poll intervals must be positive")
        super().__init__(acquire_timeout, acquirer_poll_interval, reactor)
        self.path = os.path.abspath(directory)
        self.stop_path = os.path.join(self.path, STOP_DIRECTORY)
        os.makedirs(self.stop_path, exist_ok=True)
        self.holder_poll_interval = holder_poll_interval
        self._poller: LoopingCall | None = None

    def lock_file(self, upload_id: str) -> str:
        return os.path.join(self.path, lock_name(upload_id) + LOCK_SUFFIX)

    def stop_file(self, upload_id: str) -> str:
        return os.path.join(self.stop_path, lock_name(upload_id))

    def lock(self, upload_id: str, release_requested: Callable[[], None]) -> Deferred:
        if not isinstance(upload_id, str) or not upload_id:
            # The server passes only IDs its store accepted.
            return fail(errors.UploadNotFound())
        return super().lock(upload_id, release_requested)

    # CrossProcessLocker ----------------------------------------------------

    def _new_lock(self, upload_id: str, memory_lock: Any, release_requested: Callable[[], None]) -> HeldLock:
        return _FileLock(self, upload_id, memory_lock, release_requested)

    def _try_take(self, lock: "_FileLock") -> bool:
        try:
            fd = self._try_flock(lock.upload_id)
        except OSError as e:
            log.error("cannot lock {path}: {error}", path=self.lock_file(lock.upload_id), error=e.strerror)
            raise errors.InternalServerError(f"lock error: {os.strerror(e.errno or errno.EIO)}")
        if fd is None:
            self._request_stop(lock.upload_id)
            return False
        lock.fd = fd
        return True

    def _try_flock(self, upload_id: str) -> int | None:
        """
        Take C{upload_id}'s file lock without blocking.

        @return: the locked file's descriptor, or L{None} if another open
            file (another process, or another locker) holds it.
        """
        path = self.lock_file(upload_id)
        for _ in range(_REPLACED_RETRIES):
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o664)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return None
            except BaseException:
                os.close(fd)
                raise
            # The previous holder unlinks the file before letting go, so
            # we may have locked a file nobody else will ever open again;
            # only the file still at the path counts.
            try:
                current = os.stat(path)
            except FileNotFoundError:
                current = None
            mine = os.fstat(fd)
            if current is not None and (current.st_ino, current.st_dev) == (mine.st_ino, mine.st_dev):
                return fd
            os.close(fd)
        return None

    def _request_stop(self, upload_id: str) -> None:
        """Ask whichever process holds C{upload_id} to let go."""
        path = self.stop_file(upload_id)
        for _ in range(2):
            try:
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o664))
                return
            except FileNotFoundError:
                os.makedirs(self.stop_path, exist_ok=True)
            except OSError as e:
                log.warn("upload {upload_id}: cannot write stop request {path}: {error}", upload_id=upload_id,
                         path=path, error=e.strerror)
                return

    def _hold(self, lock: HeldLock) -> None:
        # A stop request written before we held the lock was meant for the
        # previous holder; anyone still waiting writes a fresh one.
        _unlink(self.stop_file(lock.upload_id))
        super()._hold(lock)
        if self._poller is None:
            self._poller = LoopingCall(self._poll)
            self._poller.clock = self._clock
            self._poller.start(self.holder_poll_interval, now=False).addErrback(
                lambda f: log.failure("stop-request polling failed", f))

    def _let_go(self, lock: "_FileLock") -> None:
        super()._let_go(lock)
        if not self._held and self._poller is not None:
            poller, self._poller = self._poller, None
            if poller.running:
                poller.stop()
        # Unlink while still holding the flock: a process that opened the
        # old file meanwhile notices (see _try_flock) and retries.
        _unlink(self.stop_file(lock.upload_id))
        _unlink(self.lock_file(lock.upload_id))
        os.close(lock.fd)

    def _poll(self) -> None:
        try:
            requested = os.listdir(self.stop_path)
        except FileNotFoundError:
            return
        except OSError as e:
            log.warn("cannot read stop requests in {path}: {error}", path=self.stop_path, error=e.strerror)
            return
        if not requested:
            return
        held = {lock_name(upload_id): lock for upload_id, lock in self._held.items()}
        for name in requested:
            lock = held.get(name)
            if lock is not None:
                lock.request_release()


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as e:
        log.warn("cannot remove {path}: {error}", path=path, error=e.strerror)


class _FileLock(HeldLock):
    """A held flock (C{fd}), and the in-process lock beneath it."""

    fd = -1


__all__ = ["FileLocker", "lock_name"]
