"""
What the lockers for several processes share: requests of one process for
one upload queue in a L{MemoryLocker} (so a HEAD interrupts a stalled PATCH
of the same process at once), and only the head of that queue contends for
the cross-process lock, retrying every C{acquirer_poll_interval} until one
deadline covering both waits.

A subclass says how to take and give back the cross-process lock
(L{CrossProcessLocker._try_take}, L{CrossProcessLocker._let_go}); taking
it, when it is held elsewhere, also asks the other process to let go.  The
L{HeldLock} it hands out calls the holder's C{release_requested} at most
once, and only while held.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.defer import CancelledError, Deferred, maybeDeferred, succeed
from txtus.logs import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from txtus import errors
from txtus.interfaces import ILock, ILocker
from txtus.lockers.memory import MemoryLocker

log = Logger()


@implementer(ILocker)
class CrossProcessLocker:
    """
    @param acquire_timeout: seconds a request waits for a lock, in-process
        queueing and cross-process retries together, before failing with
        C{LockTimeout} (tusd: 20).
    @param acquirer_poll_interval: seconds between two attempts at a lock
        another process holds.
    """

    def __init__(self, acquire_timeout: float, acquirer_poll_interval: float, reactor: Any = None) -> None:
        if reactor is None:
            from twisted.internet import reactor as global_reactor
            reactor = global_reactor
        if acquirer_poll_interval <= 0:
            raise ValueError("poll intervals must be positive")
        self.acquire_timeout = acquire_timeout
        self.acquirer_poll_interval = acquirer_poll_interval
        self._clock = reactor
        self._memory = MemoryLocker(acquire_timeout=acquire_timeout, reactor=reactor)
        self._held: dict[str, HeldLock] = {}

    def use_in(self, composer: Any) -> None:
        composer.use_locker(self)

    def is_locked(self, upload_id: str) -> bool:
        """Whether this process holds C{upload_id}'s lock."""
        return upload_id in self._held

    def lock(self, upload_id: str, release_requested: Callable[[], None]) -> Deferred:
        return _Acquisition(self, upload_id, release_requested).result

    # For subclasses -------------------------------------------------------

    def _new_lock(self, upload_id: str, memory_lock: Any, release_requested: Callable[[], None]) -> "HeldLock":
        return HeldLock(self, upload_id, memory_lock, release_requested)

    def _try_take(self, lock: "HeldLock") -> Any:
        """
        Take C{lock}'s cross-process lock if nobody holds it, else ask its
        holder to let go.

        @return: L{True} if taken, L{False} if held elsewhere (or a Deferred
            firing with that); raising or failing with a L{errors.TusError}
            gives the request up with that error.
        """
        raise NotImplementedError

    def _hold(self, lock: "HeldLock") -> None:
        """C{lock} is now held (cross-process and in-process)."""
        self._held[lock.upload_id] = lock

    def _let_go(self, lock: "HeldLock") -> Any:
        """
        Give back C{lock}'s cross-process lock (its in-process lock goes
        after).  May return a Deferred; its failure is logged, not raised.
        """
        if self._held.get(lock.upload_id) is lock:
            del self._held[lock.upload_id]


class _Acquisition:
    """
    One request's way to a lock: first the in-process queue, then the
    cross-process lock, retried until the deadline.  C{result} is what
    C{lock} returns.
    """

    def __init__(self, locker: CrossProcessLocker, upload_id: str, release_requested: Callable[[], None]) -> None:
        self.locker = locker
        self.upload_id = upload_id
        self.release_requested = release_requested
        self.deadline = locker._clock.seconds() + locker.acquire_timeout
        self.result: Deferred = Deferred(self._cancel)
        self.memory_lock: Any = None
        self.lock: HeldLock | None = None
        self.release_wanted = False
        self.retry: Any = None
        self.trying = False
        waiting = locker._memory.lock(upload_id, self._memory_release_requested)
        self.memory_waiting: Deferred | None = waiting
        waiting.addCallbacks(self._got_memory_lock, self._memory_failed)

    def _memory_release_requested(self) -> None:
        # Another request of this process wants the upload.  Until we hold
        # the cross-process lock there is nothing to release: remember,
        # ask once held.
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
        candidate = self.locker._new_lock(self.upload_id, self.memory_lock, self.release_requested)
        self.trying = True
        maybeDeferred(self.locker._try_take, candidate).addCallbacks(
            self._tried, self._failed, callbackArgs=(candidate,)).addErrback(
            lambda f: log.failure("upload {upload_id}: lock acquisition failed", f, upload_id=self.upload_id))

    def _tried(self, taken: bool, candidate: "HeldLock") -> None:
        self.trying = False
        if self.result.called:
            # Cancelled while the attempt was on its way.
            if taken:
                candidate.unlock()
            else:
                self._let_memory_go()
            return
        if taken:
            self.lock = candidate
            self.locker._hold(candidate)
            self.result.callback(candidate)
            if self.release_wanted:
                candidate.request_release()
            return
        now = self.locker._clock.seconds()
        if now >= self.deadline:
            self._give_up(errors.LockTimeout())
            return
        delay = min(self.locker.acquirer_poll_interval, self.deadline - now)
        self.retry = self.locker._clock.callLater(delay, self._attempt)

    def _failed(self, failure: Failure) -> None:
        self.trying = False
        if self.result.called:
            self._let_memory_go()
            return
        if not failure.check(errors.TusError):
            log.failure("cannot take the lock of upload {upload_id}", failure, upload_id=self.upload_id)
            failure = Failure(errors.InternalServerError("lock error"))
        self._give_up(failure)

    def _let_memory_go(self) -> None:
        memory_lock, self.memory_lock = self.memory_lock, None
        if memory_lock is not None:
            memory_lock.unlock()

    def _give_up(self, error: Any) -> None:
        self._let_memory_go()
        self.result.errback(error)

    def _cancel(self, result: Deferred) -> None:
        if self.memory_waiting is not None:
            self.memory_waiting.cancel()
        elif self.retry is not None:
            retry, self.retry = self.retry, None
            retry.cancel()
            self._let_memory_go()
        # An attempt on its way lets go when it comes back (_tried).
        # Deferred.cancel fails the result with CancelledError.


@implementer(ILock)
class HeldLock:
    """A held cross-process lock, and the in-process lock beneath it."""

    def __init__(self, locker: CrossProcessLocker, upload_id: str, memory_lock: Any,
                 release_requested: Callable[[], None]) -> None:
        self.upload_id = upload_id
        self._locker: CrossProcessLocker | None = locker
        self._memory_lock = memory_lock
        self._release_requested = release_requested
        self._asked = False

    @property
    def held(self) -> bool:
        return self._locker is not None

    def request_release(self) -> None:
        """Ask the holder to let go: once, and only while held."""
        if self._asked or self._locker is None:
            return
        self._asked = True
        try:
            self._release_requested()
        except Exception:
            log.failure("upload {upload_id}: lock-release callback failed", upload_id=self.upload_id)

    def unlock(self) -> Deferred:
        locker, self._locker = self._locker, None
        if locker is None:
            return succeed(None)
        # The cross-process lock goes first: handing over the in-process
        # lock makes the next request of this process try it at once.
        d = maybeDeferred(locker._let_go, self)
        d.addErrback(lambda f: None if f.check(CancelledError) else log.failure(
            "cannot release the lock of upload {upload_id}", f, upload_id=self.upload_id))
        d.addCallback(lambda _: self._memory_lock.unlock())
        d.addCallback(lambda _: None)
        return d


__all__ = ["CrossProcessLocker", "HeldLock"]
