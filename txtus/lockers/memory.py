"""
L{MemoryLocker}: per-upload locks for the requests of one process, with
tusd v2's lock-release requests.

A request that finds an upload locked asks the holder to let go (the holder
is typically a PATCH whose client vanished without a FIN), then waits in
line, up to C{acquire_timeout} seconds, without ever blocking the reactor.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable

from twisted.internet.defer import Deferred, succeed
from txtus.logs import Logger
from zope.interface import implementer

from txtus import errors
from txtus.interfaces import ILock, ILocker

log = Logger()


class _Slot:
    """The holder of one upload's lock and the requests waiting for it."""

    __slots__ = ("upload_id", "release_requested", "asked", "waiters")

    def __init__(self, upload_id: str, release_requested: Callable[[], None]) -> None:
        self.upload_id = upload_id
        self.release_requested = release_requested
        self.asked = False
        self.waiters: deque[tuple[Deferred, Callable[[], None], Any]] = deque()

    def ask_release(self) -> None:
        if not self.asked:
            self.asked = True
            try:
                self.release_requested()
            except Exception:
                # A broken holder must not leave the asking request queued
                # with nobody to hand it the lock.
                log.failure("upload {upload_id}: lock-release callback failed", upload_id=self.upload_id)


@implementer(ILocker)
class MemoryLocker:
    """
    @param acquire_timeout: seconds to wait for a held lock before failing
        with C{LockTimeout} (tusd: 20).
    """

    def __init__(self, acquire_timeout: float = 20.0, reactor: Any = None) -> None:
        if reactor is None:
            from twisted.internet import reactor as global_reactor
            reactor = global_reactor
        self.acquire_timeout = acquire_timeout
        self._clock = reactor
        self._slots: dict[str, _Slot] = {}

    def use_in(self, composer: Any) -> None:
        composer.use_locker(self)

    def is_locked(self, upload_id: str) -> bool:
        return upload_id in self._slots

    def lock(self, upload_id: str, release_requested: Callable[[], None]) -> Deferred:
        slot = self._slots.get(upload_id)
        if slot is None:
            self._slots[upload_id] = _Slot(upload_id, release_requested)
            return succeed(_MemoryLock(self, upload_id))

        def cancel(d: Deferred) -> None:
            self._forget(slot, d)

        waiter: Deferred = Deferred(cancel)
        timer = self._clock.callLater(self.acquire_timeout, self._timed_out, slot, waiter)
        slot.waiters.append((waiter, release_requested, timer))
        slot.ask_release()
        return waiter

    def _forget(self, slot: _Slot, waiter: Deferred) -> None:
        for entry in list(slot.waiters):
            if entry[0] is waiter:
                slot.waiters.remove(entry)
                if entry[2].active():
                    entry[2].cancel()

    def _timed_out(self, slot: _Slot, waiter: Deferred) -> None:
        self._forget(slot, waiter)
        waiter.errback(errors.LockTimeout())

    def _release(self, upload_id: str) -> None:
        slot = self._slots.get(upload_id)
        if slot is None:
            return
        if not slot.waiters:
            del self._slots[upload_id]
            return
        waiter, release_requested, timer = slot.waiters.popleft()
        if timer.active():
            timer.cancel()
        slot.release_requested = release_requested
        slot.asked = False
        waiter.callback(_MemoryLock(self, upload_id))
        if slot.waiters:
            slot.ask_release()


@implementer(ILock)
class _MemoryLock:
    def __init__(self, locker: MemoryLocker, upload_id: str) -> None:
        self._locker: MemoryLocker | None = locker
        self._upload_id = upload_id

    def unlock(self) -> Deferred:
        locker, self._locker = self._locker, None
        if locker is not None:
            locker._release(self._upload_id)
        return succeed(None)


__all__ = ["MemoryLocker"]
