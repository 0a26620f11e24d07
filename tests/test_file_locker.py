"""
L{txtus.lockers.file.FileLocker}.  Two lockers on one directory stand for two
processes (flock locks belong to open file descriptions, so they exclude
each other even inside one process); a L{Clock} drives the polling.  The
last tests use a real second process.
"""

from __future__ import annotations

import fcntl
import os
import sys

import pytest
import pytest_twisted
from twisted.internet import protocol, reactor
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from txtus import errors
from txtus.lockers import file as filelocker
from txtus.composer import StoreComposer
from txtus.lockers.file import FileLocker
from txtus.interfaces import ILock, ILocker

from lockkit import Holder, LockerContract, failure_of, held


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def make(tmp_path, clock):
    def make(**kwargs):
        kwargs.setdefault("reactor", clock)
        return FileLocker(str(tmp_path), **kwargs)
    return make


@pytest.fixture
def one(make):
    return make()


@pytest.fixture
def other(make):
    """A second locker on the same directory: another process."""
    return make()


def test_provides_ilocker(one, tmp_path):
    assert verifyObject(ILocker, one)
    composer = StoreComposer()
    one.use_in(composer)
    assert composer.locker is one
    assert (tmp_path / ".txtus-stop").is_dir()


def test_uncontended_lock_and_cleanup(one, clock, tmp_path):
    lock = held(one.lock("a", Holder()))
    assert verifyObject(ILock, lock)
    assert (tmp_path / "a.lock").exists()
    assert one.is_locked("a")
    assert len(clock.getDelayedCalls()) == 1  # the stop-request poller
    held(lock.unlock())
    assert not (tmp_path / "a.lock").exists()
    assert not one.is_locked("a")
    assert clock.getDelayedCalls() == []
    held(lock.unlock())  # twice is harmless


def test_an_empty_id_is_refused(one, tmp_path):
    assert failure_of(one.lock("", Holder())).check(errors.UploadNotFound)
    assert os.listdir(tmp_path) == [".txtus-stop"]


S3_ID = "0f1e2d3c4b5a69788796a5b4c3d2e1f0+" + "Zm9v.YmFy~LmJheg==_-" * 40


@pytest.mark.parametrize("upload_id", [S3_ID, "../x", "a/b", "x" * 300, "ünï"])
def test_any_id_is_locked_under_a_safe_name(one, other, clock, tmp_path, upload_id):
    """S3 IDs (with '+', up to a kilobyte) and anything else the store accepts: named by digest."""
    name = filelocker.lock_name(upload_id)
    assert name.startswith("~") and len(name) == 65
    holder = Holder()
    lock = held(one.lock(upload_id, holder))
    assert sorted(os.listdir(tmp_path)) == [".txtus-stop", name + ".lock"]
    waiting = other.lock(upload_id, Holder())
    assert os.listdir(tmp_path / ".txtus-stop") == [name]
    clock.advance(0.5)
    assert holder.asked == 1  # the stop request reached the holder
    lock.unlock()
    clock.advance(0.25)
    held(waiting).unlock()
    assert sorted(os.listdir(tmp_path)) == [".txtus-stop"]


def test_plain_ids_keep_their_names(one, tmp_path):
    """What earlier versions wrote, so processes of both kinds exclude each other."""
    assert filelocker.lock_name("abc_DEF-123") == "abc_DEF-123"
    held(one.lock("abc", Holder())).unlock()


def test_in_process_contention_is_immediate(one, clock):
    holder = Holder()
    lock = held(one.lock("a", holder))
    waiting = one.lock("a", Holder())
    assert holder.asked == 1  # no polling needed
    assert not waiting.called
    lock.unlock()
    held(waiting).unlock()
    assert clock.getDelayedCalls() == []


def test_in_process_fifo(one):
    lock = held(one.lock("a", Holder()))
    order = []
    waiters = [one.lock("a", Holder()) for _ in range(3)]
    for number, waiter in enumerate(waiters):
        waiter.addCallback(lambda lock, n=number: order.append(n) or lock)
    lock.unlock()
    held(waiters[0]).unlock()
    held(waiters[1]).unlock()
    assert order == [0, 1, 2]
    held(waiters[2]).unlock()
    assert not one.is_locked("a")


def test_cross_process_stop_request(one, other, clock, tmp_path):
    holder = Holder()
    lock = held(one.lock("a", holder))
    waiting = other.lock("a", Holder())
    assert not waiting.called
    assert (tmp_path / ".txtus-stop" / "a").exists()
    assert holder.asked == 0
    clock.advance(0.5)  # the holder's poll
    assert holder.asked == 1
    clock.advance(2)
    assert holder.asked == 1  # asked once only
    assert not waiting.called
    lock.unlock()
    assert not (tmp_path / ".txtus-stop" / "a").exists()
    clock.advance(0.25)  # the acquirer's retry
    second = held(waiting)
    assert other.is_locked("a") and not one.is_locked("a")
    assert (tmp_path / "a.lock").exists()
    second.unlock()
    assert sorted(os.listdir(tmp_path)) == [".txtus-stop"]
    assert os.listdir(tmp_path / ".txtus-stop") == []
    assert clock.getDelayedCalls() == []


def test_cross_process_exclusion_holds_until_unlock(one, other, clock):
    lock = held(one.lock("a", Holder()))
    waiting = other.lock("a", Holder())
    for _ in range(40):
        clock.advance(0.25)
        assert not waiting.called
    lock.unlock()
    clock.advance(0.25)
    held(waiting).unlock()


def test_cross_process_timeout(one, other, clock):
    holder = Holder()
    lock = held(one.lock("a", holder))  # a holder that ignores requests
    waiting = other.lock("a", Holder())
    clock.advance(19.9)
    assert not waiting.called
    clock.advance(0.1)
    error = failure_of(waiting).value
    assert isinstance(error, errors.LockTimeout)
    assert (error.status, error.code) == (500, "ERR_LOCK_TIMEOUT")
    assert holder.asked == 1
    # The request that timed out left nothing held in its own process.
    lock.unlock()
    held(other.lock("a", Holder())).unlock()


def test_timeout_counts_in_process_wait(one, clock, tmp_path):
    """The in-process queue and the file polling share one deadline."""
    # Another process holds the file lock.
    (tmp_path / "a.lock").write_bytes(b"")
    fd = os.open(tmp_path / "a.lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        first = one.lock("a", Holder())  # polls the file
        clock.advance(5)
        second = one.lock("a", Holder())  # queued in memory behind it
        clock.advance(10)
        first.cancel()
        failure_of(first)
        # second now polls, with 10 of its 20 seconds left.
        clock.advance(9.9)
        assert not second.called
        clock.advance(0.1)
        assert failure_of(second).check(errors.LockTimeout)
    finally:
        os.close(fd)
    assert clock.getDelayedCalls() == []


def test_cancel_while_polling(one, other, clock, tmp_path):
    lock = held(one.lock("a", Holder()))
    waiting = other.lock("a", Holder())
    behind = other.lock("a", Holder())  # queued in memory behind it
    waiting.cancel()
    assert failure_of(waiting).check(CancelledError)
    # Giving up hands the in-process lock to the next request of "other".
    assert not behind.called
    lock.unlock()
    clock.advance(0.25)
    held(behind).unlock()
    clock.advance(100)
    assert clock.getDelayedCalls() == []


def test_cancel_while_queued_in_process(one, clock):
    lock = held(one.lock("a", Holder()))
    waiting = one.lock("a", Holder())
    waiting.cancel()
    assert failure_of(waiting).check(CancelledError)
    lock.unlock()
    assert not one.is_locked("a")
    assert clock.getDelayedCalls() == []


def test_release_requested_while_polling_is_passed_on_once_held(one, other, clock):
    lock = held(one.lock("a", Holder()))
    polling_holder = Holder()
    polling = other.lock("a", polling_holder)
    queued = other.lock("a", Holder())
    # "queued" asked "polling" to let go, but it holds nothing yet.
    assert polling_holder.asked == 0
    lock.unlock()
    clock.advance(0.25)
    got = held(polling)
    assert polling_holder.asked == 1
    got.unlock()
    held(queued).unlock()


def test_stale_stop_request_is_ignored(one, clock, tmp_path):
    stop = tmp_path / ".txtus-stop" / "a"
    stop.write_bytes(b"")  # left by a process that crashed while waiting
    holder = Holder()
    lock = held(one.lock("a", holder))
    assert not stop.exists()
    clock.advance(5)
    assert holder.asked == 0
    lock.unlock()


def test_one_poller_for_many_locks(one, other, clock):
    holders = [Holder() for _ in range(50)]
    locks = [held(one.lock(f"u{n}", h)) for n, h in enumerate(holders)]
    assert len(clock.getDelayedCalls()) == 1
    other.lock("u7", Holder())
    clock.advance(0.5)
    assert [n for n, h in enumerate(holders) if h.asked] == [7]
    for lock in locks:
        lock.unlock()
    clock.advance(0.25)  # "other" gets u7
    assert other.is_locked("u7")
    assert not one.is_locked("u7")


def test_lock_file_replaced_after_open(one, tmp_path, monkeypatch):
    """
    If the previous holder unlinks the lock file between our open and our
    flock, the flock we got is on a dead file: lock the new one instead.
    """
    real_flock = fcntl.flock
    calls = []

    def flock_then_holder_unlinks(fd, operation):
        real_flock(fd, operation)
        calls.append(fd)
        if len(calls) == 1:
            os.unlink(tmp_path / "a.lock")

    monkeypatch.setattr(filelocker.fcntl, "flock", flock_then_holder_unlinks)
    lock = held(one.lock("a", Holder()))
    monkeypatch.undo()
    assert len(calls) == 2
    # The lock we hold is on the file now at the path: a third party
    # opening it cannot lock it.
    fd = os.open(tmp_path / "a.lock", os.O_RDWR)
    try:
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(fd)
    lock.unlock()


def test_bad_intervals():
    with pytest.raises(ValueError):
        FileLocker(".", holder_poll_interval=0, reactor=Clock())


# A real second process ----------------------------------------------------

# Holds the flock; with "polite", lets go once a stop request appears.
_HOLDER = """
import fcntl, os, sys, time
lock, stop, mode = sys.argv[1:4]
fd = os.open(lock, os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
deadline = time.monotonic() + 10
while time.monotonic() < deadline:
    if mode == "polite" and os.path.exists(stop):
        print("asked", flush=True)
        time.sleep(0.2)
        os.unlink(lock)
        print("released", flush=True)
        os.close(fd)
        break
    time.sleep(0.02)
"""

# Tries the flock without blocking and says whether it got it.
_PROBE = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
except BlockingIOError:
    print("busy", flush=True)
else:
    print("got", flush=True)
"""


class _Child(protocol.ProcessProtocol):
    def __init__(self) -> None:
        self.output = ""
        self.ended: Deferred = Deferred()
        self._waits: list[tuple[str, Deferred]] = []

    def outReceived(self, data: bytes) -> None:
        self.output += data.decode()
        for text, d in list(self._waits):
            if text in self.output:
                self._waits.remove((text, d))
                d.callback(self.output)

    def processEnded(self, reason) -> None:
        self.ended.callback(None)

    def wait_for(self, text: str) -> Deferred:
        d: Deferred = Deferred()
        if text in self.output:
            d.callback(self.output)
        else:
            self._waits.append((text, d))
        return d.addTimeout(5, reactor)


def _spawn(script: str, *args: str) -> _Child:
    child = _Child()
    reactor.spawnProcess(child, sys.executable, [sys.executable, "-c", script, *args], env=os.environ.copy())
    return child


@pytest_twisted.ensureDeferred
async def test_real_process_honours_stop_request(tmp_path):
    locker = FileLocker(str(tmp_path), holder_poll_interval=0.05, acquirer_poll_interval=0.05)
    child = _spawn(_HOLDER, str(tmp_path / "a.lock"), str(tmp_path / ".txtus-stop" / "a"), "polite")
    try:
        await child.wait_for("locked")
        waiting = locker.lock("a", Holder())
        seen_at_acquisition = []
        waiting.addCallback(lambda lock: seen_at_acquisition.append(child.output) or lock)
        await child.wait_for("asked")
        assert not waiting.called
        lock = await waiting.addTimeout(5, reactor)
        assert "released" in seen_at_acquisition[0]
        await lock.unlock()
    finally:
        if not child.ended.called:
            child.transport.signalProcess("KILL")
    await child.ended.addTimeout(5, reactor)
    assert not (tmp_path / "a.lock").exists()


@pytest_twisted.ensureDeferred
async def test_real_process_dying_frees_the_lock(tmp_path):
    locker = FileLocker(str(tmp_path), holder_poll_interval=0.05, acquirer_poll_interval=0.05,
                        acquire_timeout=5)
    child = _spawn(_HOLDER, str(tmp_path / "a.lock"), str(tmp_path / ".txtus-stop" / "a"), "stubborn")
    await child.wait_for("locked")
    waiting = locker.lock("a", Holder())
    assert not waiting.called
    child.transport.signalProcess("KILL")
    await child.ended.addTimeout(5, reactor)
    lock = await waiting.addTimeout(5, reactor)
    await lock.unlock()


@pytest_twisted.ensureDeferred
async def test_real_process_cannot_take_a_held_lock(tmp_path):
    locker = FileLocker(str(tmp_path))
    lock = await locker.lock("a", Holder())
    probe = _spawn(_PROBE, str(tmp_path / "a.lock"))
    await probe.ended.addTimeout(5, reactor)
    assert probe.output.strip() == "busy"
    await lock.unlock()
    probe = _spawn(_PROBE, str(tmp_path / "a.lock"))
    await probe.ended.addTimeout(5, reactor)
    assert probe.output.strip() == "got"


class TestContract(LockerContract):
    """Two lockers on one directory: two processes."""

    @pytest.fixture
    def pair(self, tmp_path):
        def pair(**kwargs):
            return tuple(FileLocker(str(tmp_path), holder_poll_interval=0.05, acquirer_poll_interval=0.05,
                                    reactor=reactor, **kwargs) for _ in range(2))
        return pair
