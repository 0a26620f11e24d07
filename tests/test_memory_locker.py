"""
L{txtus.lockers.memory.MemoryLocker}, driven by a L{Clock}: locks, lock-release
requests, hand-over order, timeouts and cancellation.
"""

from __future__ import annotations

import pytest
from twisted.internet import reactor
from twisted.internet.defer import CancelledError
from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from txtus import errors
from txtus.composer import StoreComposer
from txtus.interfaces import ILock, ILocker
from txtus.lockers.memory import MemoryLocker

from lockkit import Holder, LockerContract, held


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def locker(clock):
    return MemoryLocker(acquire_timeout=20, reactor=clock)


def test_provides_ilocker(locker):
    assert verifyObject(ILocker, locker)
    composer = StoreComposer()
    locker.use_in(composer)
    assert composer.locker is locker


def test_uncontended_lock_is_immediate(locker, clock):
    holder = Holder()
    lock = held(locker.lock("a", holder))
    assert verifyObject(ILock, lock)
    assert locker.is_locked("a")
    assert not locker.is_locked("b")
    assert holder.asked == 0
    assert clock.getDelayedCalls() == []
    held(lock.unlock())
    assert not locker.is_locked("a")


def test_different_uploads_do_not_contend(locker):
    first, second = Holder(), Holder()
    held(locker.lock("a", first))
    held(locker.lock("b", second))
    assert first.asked == second.asked == 0


def test_contention_asks_holder_exactly_once(locker):
    holder = Holder()
    lock = held(locker.lock("a", holder))
    waiters = [locker.lock("a", Holder()) for _ in range(3)]
    assert holder.asked == 1
    assert not any(w.called for w in waiters)
    lock.unlock()
    assert waiters[0].called


def test_fifo_hand_over(locker):
    lock = held(locker.lock("a", Holder()))
    order = []
    waiters = [locker.lock("a", Holder()) for _ in range(3)]
    for number, waiter in enumerate(waiters):
        waiter.addCallback(lambda lock, n=number: order.append(n) or lock)
    lock.unlock()
    assert order == [0]
    held(waiters[0]).unlock()
    assert order == [0, 1]
    held(waiters[1]).unlock()
    assert order == [0, 1, 2]
    held(waiters[2]).unlock()
    assert not locker.is_locked("a")


def test_new_holder_asked_to_release_while_others_wait(locker):
    lock = held(locker.lock("a", Holder()))
    second, third = Holder(), Holder()
    waiting_second = locker.lock("a", second)
    locker.lock("a", third)
    lock.unlock()
    held(waiting_second)
    # The third request still waits, so the new holder is asked at once.
    assert second.asked == 1
    assert third.asked == 0


def test_last_waiter_getting_the_lock_is_not_asked(locker):
    lock = held(locker.lock("a", Holder()))
    second = Holder()
    waiting = locker.lock("a", second)
    lock.unlock()
    held(waiting)
    assert second.asked == 0


def test_acquire_timeout(locker, clock):
    holder = Holder()
    held(locker.lock("a", holder))
    waiting = locker.lock("a", Holder())
    clock.advance(19.9)
    assert not waiting.called
    clock.advance(0.1)
    failures = []
    waiting.addErrback(failures.append)
    assert len(failures) == 1
    error = failures[0].value
    assert isinstance(error, errors.LockTimeout)
    assert error.status == 500
    assert error.code == "ERR_LOCK_TIMEOUT"
    assert clock.getDelayedCalls() == []
    assert holder.asked == 1


def test_timed_out_waiter_is_skipped_at_hand_over(locker, clock):
    lock = held(locker.lock("a", Holder()))
    early = locker.lock("a", Holder())
    early.addErrback(lambda f: None)
    clock.advance(10)
    late = locker.lock("a", Holder())
    clock.advance(10)  # early times out, late has 10 s left
    assert early.called and not late.called
    lock.unlock()
    held(late)
    assert clock.getDelayedCalls() == []


def test_cancel_waiting_removes_it(locker, clock):
    lock = held(locker.lock("a", Holder()))
    cancelled = locker.lock("a", Holder())
    after = locker.lock("a", Holder())
    failures = []
    cancelled.addErrback(failures.append)
    cancelled.cancel()
    assert failures and failures[0].check(CancelledError)
    assert len(clock.getDelayedCalls()) == 1  # only the remaining waiter's timer
    lock.unlock()
    held(after).unlock()
    assert not locker.is_locked("a")
    assert clock.getDelayedCalls() == []


def test_cancel_only_waiter_then_unlock_frees(locker, clock):
    lock = held(locker.lock("a", Holder()))
    waiting = locker.lock("a", Holder())
    waiting.addErrback(lambda f: None)
    waiting.cancel()
    lock.unlock()
    assert not locker.is_locked("a")
    assert clock.getDelayedCalls() == []


def test_unlock_twice_is_harmless(locker):
    lock = held(locker.lock("a", Holder()))
    second_holder = Holder()
    waiting = locker.lock("a", second_holder)
    third = locker.lock("a", Holder())
    held(lock.unlock())
    second = held(waiting)
    # A second unlock of the old lock must not release the new holder's.
    assert held(lock.unlock()) is None
    assert not third.called
    assert locker.is_locked("a")
    second.unlock()
    held(third).unlock()
    held(third).unlock()
    assert not locker.is_locked("a")


def test_holder_unlocking_synchronously_when_asked(locker):
    """
    A holder whose release callback unlocks at once (as a stalled PATCH's
    does) hands the lock to the request that asked, before C{lock} returns.
    """
    box = {}

    def release() -> None:
        box["lock"].unlock()

    box["lock"] = held(locker.lock("a", release))
    waiting = locker.lock("a", Holder())
    assert waiting.called
    held(waiting).unlock()
    assert not locker.is_locked("a")


def test_synchronous_chain_of_holders(locker):
    """
    Waiters that unlock as soon as they get the lock (HEADs) pass it on in
    order without the locker losing track of the queue.
    """
    first = held(locker.lock("a", Holder()))
    got = []

    def quick(number):
        d = locker.lock("a", Holder())
        d.addCallback(lambda lock: (got.append(number), lock.unlock()))
        return d

    quick(1)
    slow_holder = Holder()
    slow = locker.lock("a", slow_holder)
    quick(3)
    first.unlock()
    assert got == [1]
    # 1 unlocked at once, so the slow request holds it with 3 waiting.
    assert slow_holder.asked == 1
    held(slow).unlock()
    assert got == [1, 3]
    assert not locker.is_locked("a")


def test_raising_release_callback_does_not_leak_the_lock(locker, clock):
    def broken() -> None:
        raise RuntimeError("holder bug")

    lock = held(locker.lock("a", broken))
    waiting = locker.lock("a", Holder())
    assert not waiting.called
    lock.unlock()
    held(waiting).unlock()
    assert not locker.is_locked("a")
    assert clock.getDelayedCalls() == []


class TestContract(LockerContract):
    @pytest.fixture
    def pair(self):
        def pair(**kwargs):
            locker = MemoryLocker(reactor=reactor, **kwargs)
            return locker, locker
        return pair
