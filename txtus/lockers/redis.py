"""
L{RedisLocker}: per-upload locks shared by txtus processes on several
machines through one Redis server, with tusd v2's lock-release requests
carried across processes.

A lock is a lease: the key C{<prefix>lock:<id>} holds the holder's token
(C{<process>/<serial>}) and expires after C{lease} seconds unless renewed;
the holding process renews all its leases every C{lease / 3} seconds.  A
process that dies (kill -9, a lost machine) therefore frees its uploads
within C{lease} seconds, never for ever.  Acquire, renew and release are
Lua scripts, atomic on the server and token-checked: a holder whose lease
ran out cannot renew or release a lock someone else has taken since.

A request that finds the lock held elsewhere asks the holder to let go:
the acquire script publishes the holder's token on the holder process's
channel C{<prefix>release:<process>}, to which every process subscribes
(one connection each); the holder's C{release_requested} stops its stalled
PATCH, whose bytes are kept, and it unlocks.  The asking request retries
every C{acquirer_poll_interval} (each retry asks again, so a request lost
while the holder's subscription was reconnecting is repeated) until its
C{acquire_timeout}.  Inside one process, requests queue in memory first
(L{txtus.lockers.crossprocess}): only one of them talks to Redis.

Redis unreachable or silent: every command has C{command_timeout}; a
request that cannot get an answer fails with C{ERR_LOCKER_UNAVAILABLE}
(503), never hangs, and the connections are re-established in the
background.  A holder that cannot renew its lease for C{lease} seconds
stops its request (it may no longer be exclusive).

The client is txredisapi (a Twisted Redis client: scripts through
EVALSHA, pub/sub through its subscriber protocol, reconnection with
backoff); see docs/redis-locker.md.
"""

from __future__ import annotations

import itertools
import re
import socket
import ssl as stdlib_ssl
import uuid
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import parse_qsl, unquote, urlsplit

import txredisapi
from OpenSSL import SSL, crypto
from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, TimeoutError, ensureDeferred, succeed
from twisted.internet import ssl
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.internet.task import LoopingCall, deferLater
from txtus.logs import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from txtus import errors
from txtus.interfaces import ILeasedLock
from txtus.lockers.crossprocess import CrossProcessLocker, HeldLock

log = Logger()

DEFAULT_URL = "redis://127.0.0.1:6379/0"

# KEYS[1] lock key; ARGV token, lease (ms), release-channel prefix, this
# process's token prefix.  Taken: 1.  Held by another process: ask it to
# let go (the message is its token and the key), 0.  A key left by this
# process is free: its requests for one upload queue in memory, so none of
# them holds it while another one asks (it is an acquisition that timed
# out, or a release that did not get through).
_ACQUIRE = """
local holder = redis.call('GET', KEYS[1])
if not holder or string.sub(holder, 1, #ARGV[4]) == ARGV[4] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
local process = string.match(holder, '^([^/]+)/')
if process then
  redis.call('PUBLISH', ARGV[3] .. process, holder .. ' ' .. KEYS[1])
end
return 0
"""

# KEYS[1] lock key; ARGV token, lease (ms).  1 if still ours (renewed).
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

# KEYS[1] lock key; ARGV token.  1 if it was ours (deleted).
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


# Query parameters of a rediss:// URL: redis-py's names, so that one URL
# serves both.
TLS_PARAMETERS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")


@dataclass(frozen=True)
class RedisAddress:
    """Where a C{redis://} or C{rediss://} URL points, and how to trust it."""

    host: str
    port: int
    db: int
    username: str | None = None
    password: str | None = None
    tls: bool = False
    # PEM files (rediss:// only): the CA certificates to trust instead of
    # the system's, and this client's certificate and key for Redis
    # servers that require them (tls-auth-clients yes, Redis's default).
    ca_certs: str | None = None
    certfile: str | None = None
    keyfile: str | None = None

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"


def parse_redis_url(url: str) -> RedisAddress:
    """
    C{redis[s]://[[user]:password@]host[:port][/db]} -> L{RedisAddress};
    C{rediss://} (TLS) takes the query parameters C{ssl_ca_certs},
    C{ssl_certfile} and C{ssl_keyfile} (file paths).

    @raise ValueError: with a message fit for one line of CLI output.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise ValueError(f"not a redis:// URL: {url!r} ({e})")
    if parts.scheme not in ("redis", "rediss"):
        raise ValueError(f"not a redis:// URL: {url!r} (only redis:// and rediss:// are supported)")
    if not parts.hostname:
        raise ValueError(f"no host in {url!r}")
    if parts.fragment:
        raise ValueError(f"unexpected fragment in {url!r}")
    tls = parts.scheme == "rediss"
    params: dict[str, str] = {}
    if parts.query:
        if not tls:
            raise ValueError(f"unexpected query in {url!r} (TLS parameters need rediss://)")
        try:
            pairs = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=True)
        except ValueError:
            raise ValueError(f"malformed query in {url!r}")
        for name, value in pairs:
            if name not in TLS_PARAMETERS:
                raise ValueError(f"unknown parameter {name!r} in {url!r} (known: {', '.join(TLS_PARAMETERS)})")
            if name in params:
                raise ValueError(f"parameter {name!r} given twice in {url!r}")
            if not value:
                raise ValueError(f"parameter {name!r} of {url!r} needs a file path")
            params[name] = value
    if "ssl_keyfile" in params and "ssl_certfile" not in params:
        raise ValueError(f"ssl_keyfile without ssl_certfile in {url!r}")
    path = parts.path.strip("/")
    if path and not path.isdigit():
        raise ValueError(f"the path of {url!r} must be a database number, like /0")
    return RedisAddress(
        host=parts.hostname, port=port or 6379, db=int(path or 0),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        tls=tls, ca_certs=params.get("ssl_ca_certs"), certfile=params.get("ssl_certfile"),
        keyfile=params.get("ssl_keyfile"))


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ValueError(f"cannot read {what} {path!r}: {e.strerror or e}")


_PEM_CERTIFICATE = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)


def tls_options(address: RedisAddress) -> IOpenSSLClientConnectionCreator:
    """
    How the locker's connections check a C{rediss://} server: its
    certificate must chain to C{ca_certs} (all the certificates in that
    PEM file), else to the system's trust store, and name C{host} (a DNS
    name or an IP address); C{certfile}/C{keyfile} present this client.
    The files are read now, once: a bad one is a start-up error.

    @raise ValueError: with a message fit for one line of CLI output.
    """
    # An IOpenSSLTrustRoot (twisted.internet.ssl does not export the
    # interface); None: the system's trust store.
    trust: Any = None
    if address.ca_certs:
        pems = _PEM_CERTIFICATE.findall(_read(address.ca_certs, "ssl_ca_certs"))
        if not pems:
            raise ValueError(f"ssl_ca_certs {address.ca_certs!r} holds no PEM certificate")
        try:
            trust = ssl.trustRootFromCertificates([ssl.Certificate.loadPEM(pem) for pem in pems])
        except (crypto.Error, SSL.Error, ValueError) as e:
            raise ValueError(f"ssl_ca_certs {address.ca_certs!r}: not a usable certificate ({e})")
    client = None
    if address.certfile:
        pem = _read(address.certfile, "ssl_certfile")
        if address.keyfile:
            pem += b"\n" + _read(address.keyfile, "ssl_keyfile")
        if b"ENCRYPTED" in pem:
            # OpenSSL would ask for the passphrase on the terminal.
            raise ValueError("the client key is encrypted; give ssl_keyfile an unencrypted key")
        try:
            client = ssl.PrivateCertificate.loadPEM(pem)
        except (crypto.Error, SSL.Error, ValueError) as e:
            files = address.certfile + (f" and {address.keyfile}" if address.keyfile else "")
            raise ValueError(f"ssl_certfile: {files} do not hold a PEM certificate and its key ({e})")
    return ssl.optionsForClientTLS(address.host, trustRoot=trust, clientCertificate=client)


def _stdlib_context(address: RedisAddress) -> stdlib_ssl.SSLContext:
    """The same checks as L{tls_options}, for the blocking L{probe}."""
    try:
        context = stdlib_ssl.create_default_context(cafile=address.ca_certs)
        if address.certfile:
            context.load_cert_chain(address.certfile, address.keyfile)
    except (OSError, stdlib_ssl.SSLError) as e:
        raise ValueError(f"cannot use the TLS files of the Redis URL: {e.strerror or e}")
    return context


def probe(url: str, timeout: float = 3.0) -> None:
    """
    Check, blocking, that the Redis server at C{url} answers (and accepts
    the credentials and database number).  For start-up checks only, before
    the reactor runs: the locker itself never blocks.

    @raise ValueError: with a message fit for one line of CLI output.
    """
    address = parse_redis_url(url)
    context = None
    if address.tls:
        tls_options(address)  # what the locker will use; names a file it cannot read
        context = _stdlib_context(address)
    commands: list[tuple[str, ...]] = []
    if address.password is not None:
        commands.append(("AUTH", address.username, address.password) if address.username
                        else ("AUTH", address.password))
    commands += [("SELECT", str(address.db)), ("PING",)]
    where = address.where
    try:
        with socket.create_connection((address.host, address.port), timeout=timeout) as raw:
            sock = raw
            if context is not None:
                try:
                    sock = context.wrap_socket(raw, server_hostname=address.host)
                except stdlib_ssl.SSLError as e:
                    raise ValueError(f"TLS with Redis at {where} failed: {e.reason or e}"
                                     f"{_verify_detail(e)}")
            with sock:
                reader = sock.makefile("rb")
                for command in commands:
                    sock.sendall(_encode(command))
                    line = reader.readline()
                    if not line:
                        raise ValueError(f"Redis at {where} closed the connection"
                                         + (" (is it a TLS port? use rediss://)" if not address.tls else ""))
                    if line.startswith(b"-"):
                        message = line[1:].decode("utf-8", "replace").strip()
                        raise ValueError(f"Redis at {where} refused {command[0]}: {message}")
    except stdlib_ssl.SSLError as e:
        raise ValueError(f"TLS with Redis at {where} failed: {e.reason or e}")
    except OSError as e:
        hint = " (is it a TLS port? use rediss://)" if isinstance(e, ConnectionResetError) and not address.tls else ""
        raise ValueError(f"cannot reach Redis at {where}: {e.strerror or e}{hint}")


def _verify_detail(error: stdlib_ssl.SSLError) -> str:
    message = getattr(error, "verify_message", None)
    return f" ({message})" if message else ""


def _encode(command: tuple[str, ...]) -> bytes:
    parts = [b"*%d\r\n" % len(command)]
    for arg in command:
        data = arg.encode("utf-8")
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class RedisLocker(CrossProcessLocker, Service):
    """
    An C{ILocker} and an C{IService}: start it (C{make_service} does, or
    call C{startService}) to connect; L{ready} fires once it can lock.

    @param url: C{redis://[[user]:password@]host[:port][/db]}, or
        C{rediss://...} for TLS (see L{parse_redis_url}).
    @param acquire_timeout: seconds a request waits for a lock before
        C{LockTimeout} (tusd: 20).
    @param lease: seconds a lock outlives a holder that stopped renewing it
        (a crashed process); renewed every C{lease / 3} seconds.
    @param key_prefix: prefix of every key and channel, to share one Redis
        database between deployments.
    @param acquirer_poll_interval: seconds between two attempts at a lock
        another process holds.
    @param command_timeout: seconds to wait for Redis to answer a command
        (including while reconnecting) before failing the request with
        C{ERR_LOCKER_UNAVAILABLE}.
    @param shutdown_timeout: on C{stopService}, seconds to wait for the
        requests holding locks to stop and unlock.
    """

    def __init__(self, url: str = DEFAULT_URL, acquire_timeout: float = 20.0, lease: float = 10.0,
                 key_prefix: str = "txtus:", acquirer_poll_interval: float = 0.1,
                 command_timeout: float = 2.0, shutdown_timeout: float = 5.0, reactor: Any = None) -> None:
        if lease <= 0 or command_timeout <= 0:
            raise ValueError("lease and command timeout must be positive")
        super().__init__(acquire_timeout, acquirer_poll_interval, reactor)
        self.url = url
        self.address = parse_redis_url(url)
        self._tls = tls_options(self.address) if self.address.tls else None
        self.lease = lease
        self.key_prefix = key_prefix
        self.command_timeout = command_timeout
        self.shutdown_timeout = shutdown_timeout
        self.process_id = uuid.uuid4().hex
        self.channel = f"{key_prefix}release:{self.process_id}"
        self._serial = itertools.count(1)
        self._by_token: dict[str, _RedisLock] = {}
        self._trying: set[str] = set()
        self._outage = False
        self._tls_failing = False
        self._client: Any = None
        self._subscriber: Any = None
        self._subscribed: list[Deferred] = []
        self._is_subscribed = False
        self._renewer: LoopingCall | None = None
        self._emptied: list[Deferred] = []

    def key(self, upload_id: str) -> str:
        return f"{self.key_prefix}lock:{upload_id}"

    # IService --------------------------------------------------------------

    def startService(self) -> None:
        Service.startService(self)
        address = self.address
        self._client = txredisapi.lazyConnection(
            address.host, address.port, dbid=address.db, reconnect=True, password=address.password,
            username=address.username, connectTimeout=self.command_timeout, replyTimeout=self.command_timeout,
            ssl_context_factory=self._tls or False)
        factory = _ListenerFactory(self)
        endpoint = HostnameEndpoint(self._clock, address.host, address.port, timeout=self.command_timeout)
        # The release requests come over TLS too when the commands do.
        factory.startConnecting(wrapClientTLS(self._tls, endpoint) if self._tls is not None else endpoint)
        self._subscriber = factory

    def stopService(self) -> Deferred:
        Service.stopService(self)
        # Ask every request holding a lock to stop (keeping its bytes) and
        # give them a moment to unlock, so other processes need not wait
        # for the leases to run out.
        for lock in list(self._by_token.values()):
            lock.lost()
        d = self._wait_emptied() if self._by_token else succeed(None)
        d.addTimeout(self.shutdown_timeout, self._clock)
        d.addErrback(lambda f: log.warn("stopping with {count} upload locks still held; they expire in "
                                        "{lease} s", count=len(self._by_token), lease=self.lease))

        def disconnect(_: Any) -> Deferred:
            self._stop_renewing()
            client, self._client = self._client, None
            subscriber, self._subscriber = self._subscriber, None
            self._is_subscribed = False
            waits = []
            if client is not None:
                waits.append(client.disconnect())
            if subscriber is not None:
                waits.append(subscriber.disconnect())
            return DeferredList(waits, consumeErrors=True)

        return d.addCallback(disconnect).addCallback(lambda _: None)

    def ready(self) -> Deferred:
        """
        Fires once Redis answers a PING and the release channel is
        subscribed to (after C{startService}); it keeps trying, and never
        fires if Redis stays away, so callers add a timeout.
        """
        return ensureDeferred(self._ready())

    async def _ready(self) -> None:
        while True:
            if self._client is None:
                raise errors.LockerUnavailable("the Redis locker is not started")
            try:
                await self._client.ping().addTimeout(self.command_timeout, self._clock)
            except (TimeoutError, txredisapi.RedisError):
                await deferLater(self._clock, min(0.2, self.command_timeout), lambda: None)
                continue
            if self._is_subscribed:
                return
            subscribed: Deferred = Deferred()
            self._subscribed.append(subscribed)
            await subscribed

    # CrossProcessLocker ----------------------------------------------------

    def _new_lock(self, upload_id: str, memory_lock: Any, release_requested: Callable[[], None]) -> "_RedisLock":
        token = f"{self.process_id}/{next(self._serial)}"
        return _RedisLock(self, upload_id, memory_lock, release_requested, token)

    def _try_take(self, lock: "_RedisLock") -> Deferred:
        sent = self._clock.seconds()
        self._trying.add(lock.token)
        d = self._script(_ACQUIRE, self.key(lock.upload_id), lock.token, self._lease_ms(),
                         f"{self.key_prefix}release:", f"{self.process_id}/")

        def taken(result: Any) -> bool:
            self._trying.discard(lock.token)
            if result == 1:
                lock.expires = sent + self.lease
                return True
            return False

        def failed(failure: Failure) -> Failure:
            # It may still have taken the lock: the token stays ours to
            # free when someone asks for it (see _release_message).
            self._trying.discard(lock.token)
            return failure

        return d.addCallbacks(taken, failed)

    def _hold(self, lock: HeldLock) -> None:
        super()._hold(lock)
        assert isinstance(lock, _RedisLock)
        self._by_token[lock.token] = lock
        if self._renewer is None:
            self._renewer = LoopingCall(self._renew)
            self._renewer.clock = self._clock
            self._renewer.start(self.lease / 3, now=False).addErrback(
                lambda f: log.failure("lease renewal failed", f))

    def _let_go(self, lock: HeldLock) -> Deferred:
        assert isinstance(lock, _RedisLock)
        super()._let_go(lock)
        if self._by_token.get(lock.token) is lock:
            del self._by_token[lock.token]
        if not self._by_token:
            self._stop_renewing()
            emptied, self._emptied = self._emptied, []
            for d in emptied:
                d.callback(None)
        return self._script(_RELEASE, self.key(lock.upload_id), lock.token)

    # Leases ----------------------------------------------------------------

    def _lease_ms(self) -> int:
        return max(1, int(self.lease * 1000))

    def _stop_renewing(self) -> None:
        renewer, self._renewer = self._renewer, None
        if renewer is not None and renewer.running:
            renewer.stop()

    def _renew(self) -> Deferred:
        sent = self._clock.seconds()
        locks = list(self._by_token.values())
        renewals = [self._script(_RENEW, self.key(lock.upload_id), lock.token, self._lease_ms()) for lock in locks]
        for lock, d in zip(locks, renewals):
            d.addCallbacks(self._renewed, self._not_renewed, callbackArgs=(lock, sent), errbackArgs=(lock,))
        return DeferredList(renewals, consumeErrors=True)

    def _renewed(self, result: Any, lock: "_RedisLock", sent: float) -> None:
        if result == 1:
            lock.expires = sent + self.lease
        elif lock.held:
            log.warn("the lock of upload {upload_id} was lost (its lease ran out); stopping its request",
                     upload_id=lock.upload_id)
            lock.lost()

    def _not_renewed(self, failure: Failure, lock: "_RedisLock") -> None:
        if lock.held and self._clock.seconds() >= lock.expires:
            log.warn("cannot renew the lock of upload {upload_id} ({error}) and its lease ran out; "
                     "stopping its request", upload_id=lock.upload_id, error=failure.getErrorMessage())
            lock.lost()

    def _wait_emptied(self) -> Deferred:
        d: Deferred = Deferred()
        self._emptied.append(d)
        return d

    # Talking to Redis ------------------------------------------------------

    def _script(self, script: str, key: str, *args: Any) -> Deferred:
        """Run C{script} on C{key}; fails with L{errors.LockerUnavailable}."""
        if self._client is None:
            return _unavailable("the Redis locker is not started")
        d = self._client.eval(script, [key], list(args))
        d.addTimeout(self.command_timeout, self._clock)
        return d.addCallbacks(self._answered, self._failed)

    def _answered(self, result: Any) -> Any:
        if self._outage:
            self._outage = False
            log.info("Redis at {host}:{port} answers again", host=self.address.host, port=self.address.port)
        return result

    def _failed(self, failure: Failure) -> Failure:
        if failure.check(TimeoutError, txredisapi.RedisError):
            # Once per outage: every lock and renewal fails while it lasts.
            if not self._outage:
                self._outage = True
                log.warn("Redis at {host}:{port} is unavailable: {error}", host=self.address.host,
                         port=self.address.port, error=failure.getErrorMessage() or failure.type.__name__)
            return Failure(errors.LockerUnavailable())
        return failure

    def _release_message(self, message: str) -> None:
        token, _, key = message.partition(" ")
        lock = self._by_token.get(token)
        if lock is not None:
            lock.request_release()
        elif token.startswith(f"{self.process_id}/") and token not in self._trying:
            # Taken by an acquisition whose answer never came: nobody here
            # holds it, so let the asking process have it now rather than
            # after the lease.
            self._script(_RELEASE, key, token).addErrback(lambda f: None)

    def _tls_failed(self, why: Failure) -> None:
        # Both connections fail alike (same server, same checks); the
        # subscription's says why, once per run of failures, since the
        # commands only time out.
        if not self._tls_failing:
            self._tls_failing = True
            log.error("TLS with Redis at {where} failed: {error}", where=self.address.where,
                      error=_tls_error(why))

    def _now_subscribed(self) -> None:
        self._tls_failing = False
        self._is_subscribed = True
        waiting, self._subscribed = self._subscribed, []
        for d in waiting:
            d.callback(None)


def _tls_error(why: Failure) -> str:
    """pyOpenSSL's error list, as one line: C{certificate verify failed}, ..."""
    args = why.value.args
    if args and isinstance(args[0], list):
        reasons = [str(entry[-1]) for entry in args[0] if isinstance(entry, tuple) and entry]
        if reasons:
            return ", ".join(reasons)
    return why.getErrorMessage() or why.type.__name__


def _unavailable(message: str) -> Deferred:
    d: Deferred = Deferred()
    d.errback(errors.LockerUnavailable(message))
    return d


@implementer(ILeasedLock)
class _RedisLock(HeldLock):
    """A held lease (C{token}), and the in-process lock beneath it."""

    def __init__(self, locker: RedisLocker, upload_id: str, memory_lock: Any,
                 release_requested: Callable[[], None], token: str) -> None:
        super().__init__(locker, upload_id, memory_lock, release_requested)
        self.token = token
        # When the lease runs out unless renewed (reactor seconds, from when
        # the command that set it was sent).
        self.expires = 0.0
        self._lost: Callable[[], None] | None = None

    def when_lost(self, callback: Callable[[], None]) -> None:
        self._lost = callback

    def lost(self) -> None:
        """The lease ran out, or the locker stops: the holder must stop now."""
        callback, self._lost = self._lost, None
        if callback is None or not self.held:
            self.request_release()
            return
        try:
            callback()
        except Exception:
            log.failure("lost-lock callback failed")


class _Listener(txredisapi.SubscriberProtocol):
    """
    The release-request subscription: (re)subscribes to the locker's
    channel every time it connects, and passes each message (a holder's
    token) to the locker.
    """

    factory: "_ListenerFactory"

    def connectionMade(self) -> Any:
        result = super().connectionMade()
        locker = self.factory.locker
        self.whenConnected().addCallback(lambda _: self.subscribe(locker.channel)).addCallbacks(
            lambda _: locker._now_subscribed(),
            lambda f: log.warn("cannot subscribe to {channel}: {error}", channel=locker.channel,
                               error=f.getErrorMessage()))
        return result

    def connectionLost(self, why: Any) -> None:
        locker = self.factory.locker
        locker._is_subscribed = False
        if why.check(SSL.Error):
            locker._tls_failed(why)
        super().connectionLost(why)

    def messageReceived(self, pattern: Any, channel: Any, message: Any) -> None:
        if isinstance(message, bytes):
            message = message.decode("utf-8", "replace")
        self.factory.locker._release_message(message)


class _ListenerFactory(txredisapi.SubscriberFactory):
    protocol = _Listener

    def __init__(self, locker: RedisLocker) -> None:
        super().__init__(isLazy=True)
        self.locker = locker
        # The subscription's AUTH; it waits for messages for ever, so no
        # reply timeout.
        self.password = locker.address.password
        self.username = locker.address.username


__all__ = ["DEFAULT_URL", "RedisAddress", "RedisLocker", "parse_redis_url", "probe", "tls_options"]
