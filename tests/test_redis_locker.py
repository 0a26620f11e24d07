"""
L{txtus.lockers.redis.RedisLocker} against a real redis-server
(C{tests/redisserver.py}): the locker contract every locker passes, two
lockers (two processes) asking each other to let go, leases that free the
uploads of a process killed with SIGKILL, token-checked release, and what
happens when Redis goes away and comes back.
"""

from __future__ import annotations

import os
import sys

import pytest
import pytest_twisted
from twisted.internet import protocol, reactor
from twisted.internet.defer import Deferred
from twisted.logger import formatEvent, globalLogPublisher

from txtus import errors
from txtus.lockers.redis import RedisLocker, parse_redis_url, probe

import redisserver
from lockkit import Holder, LockerContract, got, pause, soon


@pytest.fixture
def make_locker(redis_server, redis_prefix):
    """Started lockers on the session's Redis, one key prefix per test; stopped after."""
    started = []

    def make(url=None, **kwargs):
        kwargs.setdefault("acquirer_poll_interval", 0.05)
        locker = RedisLocker(url or redis_server.url, key_prefix=redis_prefix, reactor=reactor, **kwargs)
        locker.startService()
        started.append(locker)
        return locker

    yield make
    for locker in started:
        pytest_twisted.blockon(locker.stopService())


async def ready(locker):
    """C{locker} once connected and subscribed."""
    await locker.ready().addTimeout(10, reactor)
    return locker


class TestContract(LockerContract):
    """Two lockers with their own connections: two processes."""

    @pytest.fixture
    def pair(self, make_locker):
        async def pair(**kwargs):
            return await ready(make_locker(**kwargs)), await ready(make_locker(**kwargs))
        return pair


@pytest_twisted.ensureDeferred
async def test_two_processes_ask_each_other(make_locker):
    one, other = await ready(make_locker()), await ready(make_locker())
    one_holder, other_holder = Holder(), Holder()
    a = await got(one.lock("a", one_holder))
    b = await got(other.lock("b", other_holder))
    wants_a = other.lock("a", Holder())
    wants_b = one.lock("b", Holder())
    await soon(lambda: one_holder.asked and other_holder.asked, "both holders to be asked")
    await got(a.unlock())
    await got(b.unlock())
    await got((await got(wants_a)).unlock())
    await got((await got(wants_b)).unlock())
    assert (one_holder.asked, other_holder.asked) == (1, 1)
    assert not one.is_locked("a") and not other.is_locked("a")


@pytest_twisted.ensureDeferred
async def test_lease_is_renewed_while_held(make_locker, redis_server, redis_prefix):
    one, other = await ready(make_locker(lease=0.6)), await ready(make_locker(lease=0.6, acquire_timeout=10))
    lock = await got(one.lock("a", Holder()))  # ignores release requests
    waiting = other.lock("a", Holder())
    await pause(2.0)  # three leases
    assert not waiting.called
    assert redis_server.command("EXISTS", redis_prefix + "lock:a") == b":1\r\n"
    await got(lock.unlock())
    await got((await got(waiting)).unlock())
    assert redis_server.command("EXISTS", redis_prefix + "lock:a") == b":0\r\n"


@pytest_twisted.ensureDeferred
async def test_lost_lease_stops_the_holder_and_its_release_spares_the_new_holder(
        make_locker, redis_server, redis_prefix):
    """
    If a holder's lease ran out (here: the key vanishes, as it would after
    a long stall) and someone else took the lock, the old holder is told to
    stop, and its unlock cannot delete the new holder's lock.
    """
    one, other = await ready(make_locker(lease=0.6)), await ready(make_locker(lease=5))
    stale_holder = Holder()
    stale = await got(one.lock("a", stale_holder))
    redis_server.command("DEL", redis_prefix + "lock:a")
    fresh = await got(other.lock("a", Holder()))
    await soon(lambda: stale_holder.asked, "the stale holder to be told to stop")
    await got(stale.unlock())
    owner = redis_server.command("GET", redis_prefix + "lock:a")
    assert other.process_id.encode() in owner, owner
    waiting = one.lock("a", Holder())
    await pause(0.3)
    assert not waiting.called
    await got(fresh.unlock())
    await got((await got(waiting)).unlock())


# A real holder process, killed with SIGKILL ---------------------------------

_HOLDER = """
import sys
from twisted.internet import reactor
from txtus.lockers.redis import RedisLocker

url, prefix = sys.argv[1:3]
locker = RedisLocker(url, key_prefix=prefix, lease=1.0)
locker.startService()

def asked():
    print("asked", flush=True)   # and keeps holding: a stubborn holder

def locked(lock):
    print("locked", flush=True)

locker.ready().addCallback(lambda _: locker.lock("a", asked)).addCallback(locked)
reactor.run()
"""


class _Child(protocol.ProcessProtocol):
    def __init__(self) -> None:
        self.output = ""
        self.ended: Deferred = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.output += data.decode()

    def errReceived(self, data: bytes) -> None:
        self.output += data.decode()

    def processEnded(self, reason) -> None:
        self.ended.callback(None)


@pytest_twisted.ensureDeferred
async def test_process_killed_while_holding_frees_its_lock_within_the_lease(make_locker, redis_server,
                                                                             redis_prefix):
    child = _Child()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")])))
    reactor.spawnProcess(child, sys.executable, [sys.executable, "-c", _HOLDER, redis_server.url, redis_prefix],
                         env=env)
    try:
        await soon(lambda: "locked" in child.output, "the child to hold the lock", timeout=20)
        locker = await ready(make_locker(acquire_timeout=15))
        waiting = locker.lock("a", Holder())
        await soon(lambda: "asked" in child.output, "the child to be asked to let go")
        await pause(1.5)  # more than its lease: it renews, so it still holds
        assert not waiting.called
        child.transport.signalProcess("KILL")
        await got(child.ended)
        lock = await got(waiting)  # within a lease of its death
        await got(lock.unlock())
    finally:
        if not child.ended.called:
            child.transport.signalProcess("KILL")
            await got(child.ended)


# Redis going away --------------------------------------------------------

@pytest.fixture
def own_redis(tmp_path):
    """A redis-server of this test's own, to stop and start again."""
    server = redisserver.start(tmp_path)
    yield server
    redisserver.stop(server)


@pytest_twisted.ensureDeferred
async def test_redis_down_gives_503_then_reconnects(make_locker, own_redis, tmp_path):
    locker = await ready(make_locker(own_redis.url, command_timeout=0.5))
    await got((await got(locker.lock("a", Holder()))).unlock())
    redisserver.stop(own_redis)
    failures: list = []
    await got(locker.lock("a", Holder()).addErrback(failures.append))
    error = failures[0].value
    assert isinstance(error, errors.LockerUnavailable)
    assert (error.status, error.code) == (503, "ERR_LOCKER_UNAVAILABLE")
    assert not locker.is_locked("a")
    # Same port, fresh server: the locker reconnects by itself.
    restarted = redisserver.start(tmp_path, port=own_redis.port)
    try:
        await got(locker.ready().addTimeout(20, reactor))
        holder = Holder()
        lock = await got(locker.lock("a", holder))
        # The release channel is subscribed again too.
        other = await ready(make_locker(own_redis.url))
        waiting = other.lock("a", Holder())
        await soon(lambda: holder.asked, "the holder to be asked after the reconnection")
        await got(lock.unlock())
        await got((await got(waiting)).unlock())
    finally:
        redisserver.stop(restarted)


@pytest_twisted.ensureDeferred
async def test_silent_redis_gives_503_not_a_hang(make_locker, own_redis):
    locker = await ready(make_locker(own_redis.url, command_timeout=0.5))
    said: list[str] = []

    def observe(event: dict) -> None:
        if event.get("log_namespace") == "txtus.lockers.redis":
            said.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    try:
        own_redis.pause()
        try:
            failures: list = []
            for upload_id in ("a", "b"):
                await got(locker.lock(upload_id, Holder()).addErrback(failures.append))
            assert [f.check(errors.LockerUnavailable) for f in failures] == [errors.LockerUnavailable] * 2
        finally:
            own_redis.resume()
        await got(locker.ready().addTimeout(20, reactor))
        await got((await got(locker.lock("a", Holder()))).unlock())
    finally:
        globalLogPublisher.removeObserver(observe)
    # One warning for the outage, not one per request, and one line when it ends.
    assert len([line for line in said if "is unavailable" in line]) == 1, said
    assert len([line for line in said if "answers again" in line]) == 1, said


@pytest_twisted.ensureDeferred
async def test_nothing_listening_gives_503(make_locker):
    locker = make_locker(f"redis://127.0.0.1:{redisserver.free_port()}/0", command_timeout=0.3)
    failures: list = []
    await got(locker.lock("a", Holder()).addErrback(failures.append))
    assert failures[0].check(errors.LockerUnavailable)


# URLs and the start-up probe ---------------------------------------------

def test_parse_redis_url():
    address = parse_redis_url("redis://:s%40cret@example.org:7000/3")
    assert (address.host, address.port, address.db, address.username, address.password) == (
        "example.org", 7000, 3, None, "s@cret")
    address = parse_redis_url("redis://127.0.0.1")
    assert (address.port, address.db, address.password) == (6379, 0, None)
    for bad in ("http://127.0.0.1", "redis://", "redis://h/x", "redis://h:99999/0", "redis://h/0?x=1", "127.0.0.1"):
        with pytest.raises(ValueError):
            parse_redis_url(bad)


def test_probe(redis_server):
    probe(redis_server.url)
    with pytest.raises(ValueError, match="cannot reach Redis at 127.0.0.1"):
        probe(f"redis://127.0.0.1:{redisserver.free_port()}/0", timeout=1)
    with pytest.raises(ValueError, match="refused SELECT"):
        probe(redis_server.url.rsplit("/", 1)[0] + "/100000")
    with pytest.raises(ValueError, match="refused AUTH"):
        probe(redis_server.url.replace("redis://", "redis://:wrong@"))


@pytest_twisted.ensureDeferred
async def test_a_lock_taken_by_an_unanswered_acquisition_is_not_stuck(make_locker, redis_server, redis_prefix):
    """
    An acquisition whose answer was lost (Redis stalled, the reply timed
    out) may still have taken the lock.  Its process takes it over at its
    next attempt, and gives it up when another process asks, instead of
    leaving it locked for a whole lease.
    """
    one, other = await ready(make_locker()), await ready(make_locker())
    orphan = f"{one.process_id}/999999"
    redis_server.command("SET", redis_prefix + "lock:a", orphan, "PX", "60000")
    redis_server.command("SET", redis_prefix + "lock:b", orphan, "PX", "60000")
    await got((await got(one.lock("a", Holder()))).unlock())
    await got((await got(other.lock("b", Holder()))).unlock())
    assert redis_server.command("EXISTS", redis_prefix + "lock:b") == b":0\r\n"


@pytest_twisted.ensureDeferred
async def test_stopping_asks_holders_to_let_go(redis_server, redis_prefix):
    """A graceful stop frees its uploads at once, not after the lease."""
    locker = RedisLocker(redis_server.url, key_prefix=redis_prefix, reactor=reactor, shutdown_timeout=0.5)
    locker.startService()
    await ready(locker)
    box: dict = {}
    polite = Holder()

    def let_go() -> None:
        polite()
        box["lock"].unlock()

    box["lock"] = await got(locker.lock("a", let_go))
    stubborn = Holder()
    await got(locker.lock("b", stubborn))
    await got(locker.stopService())
    assert (polite.asked, stubborn.asked) == (1, 1)
    assert redis_server.command("EXISTS", redis_prefix + "lock:a") == b":0\r\n"
    # The stubborn one's lease runs out by itself.
    assert redis_server.command("EXISTS", redis_prefix + "lock:b") == b":1\r\n"


@pytest_twisted.ensureDeferred
async def test_not_started_says_so(redis_server):
    locker = RedisLocker(redis_server.url, reactor=reactor)
    for d in (locker.ready(), locker.lock("a", Holder())):
        failures: list = []
        await got(d.addErrback(failures.append))
        assert failures[0].check(errors.LockerUnavailable)
        assert "not started" in failures[0].value.message


# rediss:// (TLS) -----------------------------------------------------------

def test_parse_rediss_url(tmp_path):
    address = parse_redis_url("rediss://u:p@example.org:6380/2?ssl_ca_certs=/etc/ca.pem"
                              "&ssl_certfile=/c.pem&ssl_keyfile=/k.pem")
    assert (address.tls, address.host, address.port, address.db, address.username, address.password) == (
        True, "example.org", 6380, 2, "u", "p")
    assert (address.ca_certs, address.certfile, address.keyfile) == ("/etc/ca.pem", "/c.pem", "/k.pem")
    address = parse_redis_url("rediss://example.org")
    assert (address.tls, address.port, address.ca_certs, address.certfile) == (True, 6379, None, None)
    assert parse_redis_url("redis://example.org").tls is False
    for bad, message in [
        ("redis://h/0?ssl_ca_certs=/ca.pem", "need rediss://"),
        ("rediss://h/0?ssl_cert_reqs=none", "unknown parameter 'ssl_cert_reqs'"),
        ("rediss://h/0?ssl_ca_certs=", "needs a file path"),
        ("rediss://h/0?ssl_ca_certs=/a&ssl_ca_certs=/b", "given twice"),
        ("rediss://h/0?ssl_keyfile=/k.pem", "ssl_keyfile without ssl_certfile"),
        ("rediss://h/0?junk", "malformed query"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_redis_url(bad)


def test_tls_files_are_checked_at_once(tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello\n")
    ca = redisserver.make_ca(tmp_path)
    _, cert_file = ca.issue(tmp_path, "127.0.0.1", name="client")
    encrypted = tmp_path / "encrypted-key.pem"
    encrypted.write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret")))
    for url, message in [
        # Not a prompt for the passphrase on the terminal.
        (f"rediss://127.0.0.1/0?ssl_certfile={cert_file}&ssl_keyfile={encrypted}", "the client key is encrypted"),
        (f"rediss://127.0.0.1/0?ssl_ca_certs={tmp_path}/missing.pem", "cannot read ssl_ca_certs .*missing.pem"),
        (f"rediss://127.0.0.1/0?ssl_ca_certs={not_pem}", "holds no PEM certificate"),
        (f"rediss://127.0.0.1/0?ssl_certfile={not_pem}", "ssl_certfile: .* do not hold a PEM certificate"),
    ]:
        with pytest.raises(ValueError, match=message):
            RedisLocker(url)
        with pytest.raises(ValueError, match=message):
            probe(url)


@pytest_twisted.ensureDeferred
async def test_tls_two_processes_ask_each_other(make_locker, redis_tls_server):
    # The server listens for TLS only (--port 0): the commands and the
    # release-request subscription both go over TLS, or this would not work.
    one, other = await ready(make_locker(redis_tls_server.url)), await ready(make_locker(redis_tls_server.url))
    holder = Holder()
    lock = await got(one.lock("a", holder))
    waiting = other.lock("a", Holder())
    await soon(lambda: holder.asked, "the holder to be asked over TLS")
    await got(lock.unlock())
    await got((await got(waiting)).unlock())
    assert holder.asked == 1


@pytest_twisted.ensureDeferred
async def test_tls_certificate_of_another_ca_is_refused(make_locker, redis_tls_server, tmp_path):
    stranger = redisserver.make_ca(tmp_path, "stranger")
    url = redis_tls_server.url.split("?")[0] + f"?ssl_ca_certs={stranger.cert_file}"
    with pytest.raises(ValueError, match="TLS with Redis at 127.0.0.1:[0-9]+ failed: CERTIFICATE_VERIFY_FAILED"):
        probe(url, timeout=2)
    # Not the system's trust store's either.
    with pytest.raises(ValueError, match="CERTIFICATE_VERIFY_FAILED"):
        probe(redis_tls_server.url.split("?")[0], timeout=2)
    said: list[str] = []

    def observe(event: dict) -> None:
        if event.get("log_namespace") == "txtus.lockers.redis":
            said.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    try:
        locker = make_locker(url, command_timeout=0.5)
        failures: list = []
        started = reactor.seconds()
        await got(locker.lock("a", Holder()).addErrback(failures.append))
        assert failures[0].check(errors.LockerUnavailable)
        assert reactor.seconds() - started < 5
        await soon(lambda: any("TLS with Redis" in line for line in said), "the TLS failure to be logged")
    finally:
        globalLogPublisher.removeObserver(observe)
    tls_lines = [line for line in said if "TLS with Redis" in line]
    assert "certificate verify failed" in tls_lines[0], tls_lines
    assert len(tls_lines) == 1, said  # once, not at every reconnection attempt


def test_tls_probe_mutual_tls(tmp_path):
    """A redis-server that requires client certificates (Redis's default)."""
    ca = redisserver.make_ca(tmp_path)
    server = redisserver.start_tls(tmp_path, ca, client_auth=True)
    try:
        url = server.url
        with pytest.raises(ValueError, match="TLS with Redis|closed the connection|cannot reach"):
            probe(url, timeout=2)
        key_file, cert_file = ca.issue(tmp_path, "127.0.0.1", name="client")
        probe(f"{url}&ssl_certfile={cert_file}&ssl_keyfile={key_file}")
    finally:
        redisserver.stop(server)


@pytest_twisted.ensureDeferred
async def test_tls_mutual_locker(make_locker, tmp_path):
    ca = redisserver.make_ca(tmp_path)
    server = redisserver.start_tls(tmp_path, ca, client_auth=True)
    try:
        key_file, cert_file = ca.issue(tmp_path, "127.0.0.1", name="client")
        url = f"{server.url}&ssl_certfile={cert_file}&ssl_keyfile={key_file}"
        one, other = await ready(make_locker(url)), await ready(make_locker(url))
        holder = Holder()
        lock = await got(one.lock("a", holder))
        waiting = other.lock("a", Holder())
        await soon(lambda: holder.asked, "the holder to be asked")
        await got(lock.unlock())
        await got((await got(waiting)).unlock())
        for locker in (one, other):
            await got(locker.stopService())
    finally:
        redisserver.stop(server)
