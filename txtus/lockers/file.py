"""
L{FileLocker}: per-upload locks shared by several txtus processes serving
one upload directory, with tusd v2's lock-release requests.

Inside one process, requests for the same upload queue in a
L{txtus.lockers.memory.MemoryLocker}, so a HEAD interrupts a stalled PATCH at once.
Across processes, the lock is an C{fcntl.flock} on C{<dir>/<id>.lock}: the
kernel drops it when its process dies, so a crash never leaves a stale lock
(tusd's PID files need stale-lock detection; this does not).  A process
that finds the flock taken drops a stop request, an empty file
C{<dir>/.txtus-stop/<id>}, and retries every C{acquirer_poll_interval}.  A
process holding locks looks for stop requests every C{holder_poll_interval}
with one C{os.listdir} of that folder, whatever the number of locks it
holds.  Every file operation is non-blocking (C{LOCK_NB}); waiting is done
with timers, never by blocking the reactor.
"""

from __future__ import annotations

import errno
import fcntl
import os
from typing import Any, Callable

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from txtus import errors
from txtus.protocol.headers import is_valid_upload_id
from txtus.interfaces import ILock, ILocker
from txtus.lockers.memory import MemoryLocker

log = Logger()

STOP_DIRECTORY = ".txtus-stop"
LOCK_SUFFIX = ".lock"

# How often to retry at once when the lock file we locked was removed by
# its previous holder meanwhile (a new one has to be locked instead).
_REPLACED_RETRIES = 5


@implementer(ILocker)
class FileLocker:
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
        if reactor is None:
            from twisted.internet import reactor as global_reactor
            reactor = global_reactor
        if holder_poll_interval <= 0 or acquirer_poll_interval <= 0:
            raise ValueError("poll intervals must be positive")
        self.path = os.path.abspath(directory)
        self.stop_path = os.path.join(self.path, STOP_DIRECTORY)
        os.makedirs(self.stop_path, exist_ok=True)
        self.acquire_timeout = acquire_timeout
        self.holder_poll_interval = holder_poll_interval
        self.acquirer_poll_interval = acquirer_poll_interval
        self._clock = reactor
        self._memory = MemoryLocker(acquire_timeout=acquire_timeout, reactor=reactor)
        self._held: dict[str, _FileLock] = {}
        self._poller: LoopingCall | None = None

    def use_in(self, composer: Any) -> None:
        composer.use_locker(self)

    def is_locked(self, upload_id: str) -> bool:
        """Whether this process holds C{upload_id}'s lock."""
        return upload_id in self._held

    def lock_file(self, upload_id: str) -> str:
        return os.path.join(self.path, upload_id + LOCK_SUFFIX)

    def stop_file(self, upload_id: str) -> str:
        return os.path.join(self.stop_path, upload_id)

    def lock(self, upload_id: str, release_requested: Callable[[], None]) -> Deferred:
        if not is_valid_upload_id(upload_id):
            # IDs name files here; the server never passes an invalid one.
            return fail(errors.UploadNotFound())
        return _Acquisition(self, upload_id, release_requested).result

    # Used by _Acquisition and _FileLock ----------------------------------

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
                log.warn("cannot write stop request {path}: {error}", path=path, error=e.strerror)
                return

    def _hold(self, lock: "_FileLock") -> None:
        # A stop request written before we held the lock was meant for the
        # previous holder; anyone still waiting writes a fresh one.
        _unlink(self.stop_file(lock.upload_id))
        self._held[lock.upload_id] = lock
        if self._poller is None:
            self._poller = LoopingCall(self._poll)
            self._poller.clock = self._clock
            self._poller.start(self.holder_poll_interval, now=False).addErrback(
                lambda f: log.failure("stop-request polling failed", f))

    def _let_go(self, lock: "_FileLock", fd: int) -> None:
        if self._held.get(lock.upload_id) is lock:
            del self._held[lock.upload_id]
        if not self._held and self._poller is not None:
            poller, self._poller = self._poller, None
            if poller.running:
                poller.stop()
        # Unlink while still holding the flock: a process that opened the
        # old file meanwhile notices (see _try_flock) and retries.
        _unlink(self.stop_file(lock.upload_id))
        _unlink(self.lock_file(lock.upload_id))
        os.close(fd)

    def _poll(self) -> None:
        try:
            requested = os.listdir(self.stop_path)
        except FileNotFoundError:
            return
        except OSError as e:
            log.warn("cannot read stop requests in {path}: {error}", path=self.stop_path, error=e.strerror)
            return
        for upload_id in requested:
            lock = self._held.get(upload_id)
            if lock is not None:
                lock.request_release()


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as e:
        log.warn("cannot remove {path}: {error}", path=path, error=e.strerror)


class _Acquisition:
    """
    One request's way to a lock: first the in-process queue, then the file
    lock, polled until the deadline.  C{result} is what C{lock} returns.
    """

    def __init__(self, locker: FileLocker, upload_id: str, release_requested: Callable[[], None]) -> None:
        self.locker = locker
        self.upload_id = upload_id
        self.release_requested = release_requested
        self.deadline = locker._clock.seconds() + locker.acquire_timeout
        self.result: Deferred = Deferred(self._cancel)
        self.memory_lock: Any = None
        self.lock: _FileLock | None = None
        self.release_wanted = False
        self.retry: Any = None
        waiting = locker._memory.lock(upload_id, self._memory_release_requested)
        self.memory_waiting: Deferred | None = waiting
        waiting.addCallbacks(self._got_memory_lock, self._memory_failed)

    def _memory_release_requested(self) -> None:
        # Another request of this process wants the upload.  Until we hold
        # the file lock there is nothing to release: remember, ask later.
        if self.lock is not None:
            self.lock.request_release()
        else:
            self.release_wanted = True

    def _memory_failed(self, failure: Failure) -> None:
        self.memory_waiting = None
        if not self.result.called:
            self.result.errback(failure)

    def _got_memory_lock(self, memory_lock: Any) -> None:
        self.memory_waiting = None
        self.memory_lock = memory_lock
        self._attempt()

    def _attempt(self) -> None:
        self.retry = None
        locker = self.locker
        try:
            fd = locker._try_flock(self.upload_id)
        except OSError as e:
            log.error("cannot lock {path}: {error}", path=locker.lock_file(self.upload_id), error=e.strerror)
            self._give_up(errors.InternalServerError(f"lock error: {os.strerror(e.errno or errno.EIO)}"))
            return
        if fd is not None:
            lock = self.lock = _FileLock(locker, self.upload_id, fd, self.memory_lock, self.release_requested)
            locker._hold(lock)
            self.result.callback(lock)
            if self.release_wanted:
                lock.request_release()
            return
        locker._request_stop(self.upload_id)
        now = locker._clock.seconds()
        if now >= self.deadline:
            self._give_up(errors.LockTimeout())
            return
        delay = min(locker.acquirer_poll_interval, self.deadline - now)
        self.retry = locker._clock.callLater(delay, self._attempt)

    def _give_up(self, error: errors.TusError) -> None:
        memory_lock, self.memory_lock = self.memory_lock, None
        memory_lock.unlock()
        self.result.errback(error)

    def _cancel(self, result: Deferred) -> None:
        if self.memory_waiting is not None:
            self.memory_waiting.cancel()
        elif self.retry is not None:
            retry, self.retry = self.retry, None
            retry.cancel()
            memory_lock, self.memory_lock = self.memory_lock, None
            memory_lock.unlock()
        # Deferred.cancel fails the result with CancelledError.


@implementer(ILock)
class _FileLock:
    """A held file lock, and the in-process lock beneath it."""

    def __init__(self, locker: FileLocker, upload_id: str, fd: int, memory_lock: Any,
                 release_requested: Callable[[], None]) -> None:
        self.upload_id = upload_id
        self._locker: FileLocker | None = locker
        self._fd = fd
        self._memory_lock = memory_lock
        self._release_requested = release_requested
        self._asked = False

    def request_release(self) -> None:
        """Ask the holder to let go: once, and only while held."""
        if self._asked or self._locker is None:
            return
        self._asked = True
        try:
            self._release_requested()
        except Exception:
            log.failure("lock-release callback failed")

    def unlock(self) -> Deferred:
        locker, self._locker = self._locker, None
        if locker is not None:
            # The file lock goes first: handing over the in-process lock
            # makes the next request try the file lock at once.
            locker._let_go(self, self._fd)
            self._memory_lock.unlock()
        return succeed(None)


__all__ = ["FileLocker"]
