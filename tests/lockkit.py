"""
Helpers shared by the locker tests, and L{LockerContract}: the tests every
C{ILocker} (memory, file, Redis) passes.
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import CancelledError
from twisted.internet.task import deferLater
from zope.interface.verify import verifyObject

from txtus import errors
from txtus.composer import StoreComposer
from txtus.interfaces import ILock, ILocker


class Holder:
    """Records how often its lock-release callback was called."""

    def __init__(self) -> None:
        self.asked = 0

    def __call__(self) -> None:
        self.asked += 1


def held(d: Any) -> Any:
    """The lock a fired Deferred holds (fails the test if it has not fired)."""
    results = []

    def keep(result: Any) -> Any:
        results.append(result)
        return result

    d.addCallback(keep)
    assert results, "lock was not acquired"
    return results[0]


def failure_of(d: Any) -> Any:
    """The failure of a failed Deferred (fails the test if it has not failed)."""
    failures: list = []
    d.addErrback(failures.append)
    assert failures, "Deferred has not failed"
    return failures[0]


# The ILocker contract, for every locker ------------------------------------

WAIT = 5.0  # seconds any one lock event may take (bounds every await)


async def pause(seconds: float) -> None:
    await deferLater(reactor, seconds, lambda: None)


async def soon(predicate: Any, what: str, timeout: float = WAIT) -> None:
    """Wait on the real reactor until C{predicate()} is true, bounded."""
    for _ in range(int(timeout / 0.01)):
        if predicate():
            return
        await pause(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def got(d: Any) -> Any:
    """What C{d} fires with, bounded in time."""
    return await d.addTimeout(WAIT, reactor)


async def lockers(pair: Any, **kwargs: Any) -> tuple[Any, Any]:
    """C{pair(**kwargs)}, awaited if it is a coroutine."""
    result = pair(**kwargs)
    if inspect.isawaitable(result):
        result = await result
    return result


class LockerContract:
    """
    What every C{ILocker} promises (txtus/interfaces.py), on the real
    reactor.  A test module subclasses it and provides the C{pair} fixture:
    a callable taking locker keyword arguments (C{acquire_timeout}) and
    returning (or a coroutine returning) two lockers that stand for two processes sharing the uploads
    (for a one-process locker, the same locker twice).
    """

    @pytest_twisted.ensureDeferred
    async def test_provides_the_interfaces(self, pair):
        one, _ = await lockers(pair)
        assert verifyObject(ILocker, one)
        composer = StoreComposer()
        one.use_in(composer)
        assert composer.locker is one
        lock = await got(one.lock("a", Holder()))
        assert verifyObject(ILock, lock)
        await got(lock.unlock())

    @pytest_twisted.ensureDeferred
    async def test_unlock_twice_and_lock_again(self, pair):
        one, other = await lockers(pair)
        holder = Holder()
        lock = await got(one.lock("a", holder))
        assert await got(lock.unlock()) is None
        assert await got(lock.unlock()) is None
        again = await got(other.lock("a", Holder()))
        await got(again.unlock())
        assert holder.asked == 0  # nobody wanted it while held

    @pytest_twisted.ensureDeferred
    async def test_different_uploads_do_not_contend(self, pair):
        one, other = await lockers(pair)
        first, second = Holder(), Holder()
        a = await got(one.lock("a", first))
        b = await got(other.lock("b", second))
        assert first.asked == second.asked == 0
        await got(a.unlock())
        await got(b.unlock())

    @pytest_twisted.ensureDeferred
    async def test_waiter_asks_once_and_gets_the_lock_on_unlock(self, pair):
        one, other = await lockers(pair)
        holder = Holder()
        lock = await got(one.lock("a", holder))
        second_holder = Holder()
        second = other.lock("a", second_holder)
        third = other.lock("a", Holder())
        await soon(lambda: holder.asked, "the holder to be asked to let go")
        assert not second.called and not third.called
        assert holder.asked == 1
        await got(lock.unlock())
        new = await got(second)
        # The third request still waits: the new holder is asked in turn.
        await soon(lambda: second_holder.asked, "the new holder to be asked")
        assert holder.asked == 1
        assert not third.called
        await got(new.unlock())
        await got((await got(third)).unlock())

    @pytest_twisted.ensureDeferred
    async def test_exclusive_until_unlocked(self, pair):
        one, other = await lockers(pair, acquire_timeout=10)
        lock = await got(one.lock("a", Holder()))  # ignores release requests
        waiting = other.lock("a", Holder())
        await pause(0.5)
        assert not waiting.called
        await got(lock.unlock())
        await got((await got(waiting)).unlock())

    @pytest_twisted.ensureDeferred
    async def test_lock_timeout(self, pair):
        one, other = await lockers(pair, acquire_timeout=0.5)
        holder = Holder()
        lock = await got(one.lock("a", holder))  # ignores release requests
        failures: list = []
        await got(other.lock("a", Holder()).addErrback(failures.append))
        error = failures[0].value
        assert isinstance(error, errors.LockTimeout)
        assert (error.status, error.code) == (500, "ERR_LOCK_TIMEOUT")
        assert holder.asked == 1
        await got(lock.unlock())
        # The request that timed out holds nothing.
        await got((await got(other.lock("a", Holder()))).unlock())

    @pytest_twisted.ensureDeferred
    async def test_cancel_waiting(self, pair):
        one, other = await lockers(pair)
        lock = await got(one.lock("a", Holder()))
        waiting = other.lock("a", Holder())
        failures: list = []
        waiting.addErrback(failures.append)
        waiting.cancel()
        assert failures and failures[0].check(CancelledError)
        await got(lock.unlock())
        # The cancelled request never holds it.
        again = await got(one.lock("a", Holder()))
        await got(again.unlock())
        await got((await got(other.lock("a", Holder()))).unlock())

    @pytest_twisted.ensureDeferred
    async def test_holder_letting_go_when_asked(self, pair):
        """A stalled PATCH: it unlocks as soon as it is asked."""
        one, other = await lockers(pair)
        box: dict = {}

        def release() -> None:
            box["lock"].unlock()

        box["lock"] = await got(one.lock("a", release))
        new_holder = Holder()
        new = await got(other.lock("a", new_holder))
        await got(new.unlock())
        assert new_holder.asked == 0
