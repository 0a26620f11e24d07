"""
Lock-release requests end to end, over real loopback HTTP, for every
locker: a PATCH whose client stalled mid-body holds the upload's lock; a
DELETE or second PATCH for the same upload must not wait for TCP to
notice.  Once its client has been silent for C{lock_release_after} (0.5 s)
the stalled PATCH is interrupted (keeping the bytes it stored), and the
new request is served within about a second.  A PATCH whose bytes still
flow is never cut: a racing PATCH waits for it (then 409), and a HEAD
answers beside it from what is stored.

The "two-servers" case runs two sites with their own L{FileLocker} on one
upload directory, the way two txtus processes share one: the stop request
then travels through the file system.  The "two-redis" case gives each
site its own L{RedisLocker} on a real redis-server: the request travels
by Redis pub/sub, as between processes on different machines.
"""

from __future__ import annotations

import os
import time

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import deferLater

from tushttp import OCTET, TUS, connect, create, head, header, patch, request_bytes, stored, upload_id, wait_for
from txtus.lockers.file import FileLocker
from txtus.lockers.memory import MemoryLocker
from txtus.lockers.redis import RedisLocker
from txtus.tap import Options, build_config
from twisted.python.usage import UsageError

DATA = bytes(range(256)) * 3 + os.urandom(232)  # 1000 bytes
SENT = 100
# Seconds the request after a stalled PATCH may take: about a second (the
# 0.5 s of silence before release, lock polling across processes), with
# a margin for a loaded machine.
PROMPT = 1.5


def _start(request, kind, server_factory, upload_dir, **config):
    if kind == "memory":
        server = pytest_twisted.blockon(server_factory(locker=MemoryLocker(reactor=reactor), **config))
        return server, server
    if kind == "file":
        server = pytest_twisted.blockon(server_factory(locker=FileLocker(str(upload_dir), reactor=reactor), **config))
        return server, server
    if kind == "two-redis":
        redis_url, prefix = request.getfixturevalue("redis_server").url, request.getfixturevalue("redis_prefix")
        lockers = [RedisLocker(redis_url, key_prefix=prefix, acquirer_poll_interval=0.05, reactor=reactor)
                   for _ in range(2)]
        for locker in lockers:
            locker.startService()
            request.addfinalizer(lambda locker=locker: pytest_twisted.blockon(locker.stopService()))
            pytest_twisted.blockon(locker.ready().addTimeout(10, reactor))
        return tuple(pytest_twisted.blockon(server_factory(locker=locker, **config)) for locker in lockers)
    first, second = (
        pytest_twisted.blockon(server_factory(locker=FileLocker(
            str(upload_dir), holder_poll_interval=0.2, acquirer_poll_interval=0.1, reactor=reactor), **config))
        for _ in range(2))
    return first, second


@pytest.fixture(params=["memory", "file", "two-servers", "two-redis"])
def servers(request, server_factory, upload_dir):
    """(server the stalled PATCH goes to, server the interrupting request goes to)."""
    return _start(request, request.param, server_factory, upload_dir)


@pytest.fixture(params=["memory", "file", "two-servers", "two-redis"])
def patient_servers(request, server_factory, upload_dir):
    """
    Like L{servers}, but a holder must be silent for 3 s before it is
    interrupted, so a client of these tests that keeps sending is active
    however loaded the machine is.
    """
    return _start(request, request.param, server_factory, upload_dir, lock_release_after=3.0)


def _path(url: str) -> str:
    return "/" + url.split("/", 3)[3]


def _on(server, url: str) -> str:
    """The same upload's URL on C{server}."""
    return server.url + upload_id(url)


async def _stall_patch(server, location: str):
    """
    Start a PATCH announcing all of DATA, send only its first SENT bytes,
    keep the connection open, and wait until the server stored them.
    """
    connection = await connect(server)
    connection.write(request_bytes("PATCH", _path(location), {
        **TUS, "Upload-Offset": "0", "Content-Type": OCTET, "Content-Length": str(len(DATA))}) + DATA[:SENT])
    data_path = server.store.data_path(upload_id(location))

    async def arrived() -> bool:
        return os.path.getsize(data_path) == SENT

    await wait_for(arrived)
    return connection


async def _interrupted(connection) -> None:
    """
    What the stalled PATCH's client gets: a 400 ERR_UPLOAD_INTERRUPTED,
    then the connection closes (the rest of its body will never be read).
    """
    response = await connection.response()
    assert response.status == 400, response
    assert response.text.startswith("ERR_UPLOAD_INTERRUPTED: "), response.text
    assert response.header("connection") == "close"
    await connection.wait_closed()


@pytest.mark.parametrize("head_first", [False, True])
@pytest_twisted.ensureDeferred
async def test_second_patch_interrupts_stalled_patch(servers, head_first):
    """
    A resuming client's PATCH interrupts the stalled one promptly, once it
    is silent.  Its HEAD first gets the stored offset promptly too (beside
    the stalled PATCH, or after interrupting it).
    """
    holder_server, other_server = servers
    location = await create(holder_server, len(DATA))
    connection = await _stall_patch(holder_server, location)
    try:
        if head_first:
            started = time.monotonic()
            response = await head(_on(other_server, location))
            elapsed = time.monotonic() - started
            assert (response.code, header(response, "upload-offset")) == (200, str(SENT))
            assert elapsed < PROMPT, elapsed
        started = time.monotonic()
        response = await patch(_on(other_server, location), SENT, DATA[SENT:])
        elapsed = time.monotonic() - started
        assert response.code == 204, response.text_body
        assert header(response, "upload-offset") == str(len(DATA))
        assert elapsed < PROMPT, elapsed
        await _interrupted(connection)
    finally:
        if not connection.is_closed:
            connection.close()
    assert stored(holder_server, location) == DATA
    response = await head(_on(holder_server, location))
    assert header(response, "upload-offset") == str(len(DATA))


@pytest_twisted.ensureDeferred
async def test_delete_interrupts_stalled_patch(servers, upload_dir):
    holder_server, other_server = servers
    location = await create(holder_server, len(DATA))
    connection = await _stall_patch(holder_server, location)
    try:
        started = time.monotonic()
        response = await treq.delete(_on(other_server, location), headers=TUS)
        await response.content()
        elapsed = time.monotonic() - started
        assert response.code == 204
        assert elapsed < PROMPT, elapsed
        await _interrupted(connection)
    finally:
        if not connection.is_closed:
            connection.close()
    response = await head(_on(holder_server, location))
    assert response.code == 404
    # No data, info, lock or stop file is left behind.
    assert [name for name in os.listdir(upload_dir) if name != ".txtus-stop"] == []
    if (upload_dir / ".txtus-stop").exists():
        assert os.listdir(upload_dir / ".txtus-stop") == []


@pytest_twisted.ensureDeferred
async def test_racing_patches_one_is_acknowledged(patient_servers):
    """
    Two clients PATCH the same offset; the second arrives while the first
    is still receiving its body.  The first is not interrupted: it is
    acknowledged, and the second, once it has the lock, gets 409 with the
    offset the first left.  Every time.
    """
    holder_server, other_server = patient_servers
    for _ in range(3):
        location = await create(holder_server, len(DATA))
        first = await _stall_patch(holder_server, location)
        second = await connect(other_server)
        try:
            rival = bytes(reversed(DATA))
            second.write(request_bytes("PATCH", _path(_on(other_server, location)), {
                **TUS, "Upload-Offset": "0", "Content-Type": OCTET, "Content-Length": str(len(rival))}) + rival)
            # Long enough for the second's lock request to reach the first,
            # across processes too; short of the servers' silence limit.
            await deferLater(reactor, 0.5, lambda: None)
            first.write(DATA[SENT:])
            won = await first.response()
            lost = await second.response()
        finally:
            for connection in (first, second):
                if not connection.is_closed:
                    connection.close()
        assert (won.status, won.header("upload-offset")) == (204, str(len(DATA))), won
        assert lost.status == 409 and lost.text.startswith("ERR_MISMATCHED_OFFSET"), lost
        assert lost.header("upload-offset") == str(len(DATA))
        assert stored(holder_server, location) == DATA


@pytest_twisted.ensureDeferred
async def test_head_does_not_cut_an_active_upload(patient_servers):
    """
    A HEAD from a second client (another browser tab) while a PATCH is
    still receiving bytes answers from what is stored so far, and the PATCH
    goes on to complete.
    """
    holder_server, other_server = patient_servers
    location = await create(holder_server, len(DATA))
    connection = await _stall_patch(holder_server, location)
    try:
        trickle = _trickle(connection, DATA[SENT:], pieces=20, interval=0.1)
        response = await head(_on(other_server, location))
        assert response.code == 200
        assert SENT <= int(header(response, "upload-offset")) <= len(DATA)
        await trickle
        reply = await connection.response()
        assert (reply.status, reply.header("upload-offset")) == (204, str(len(DATA))), reply
    finally:
        if not connection.is_closed:
            connection.close()
    assert stored(holder_server, location) == DATA


def _trickle(connection, data: bytes, pieces: int, interval: float):
    """Send C{data} in C{pieces} writes C{interval} seconds apart."""
    size = -(-len(data) // pieces)

    async def run() -> None:
        for start in range(0, len(data), size):
            await deferLater(reactor, interval, lambda: None)
            if connection.is_closed:
                return
            connection.write(data[start:start + size])

    return ensureDeferred(run())


def test_cli_lock_release_after(tmp_path):
    options = Options()
    options.parseOptions(["--path", str(tmp_path), "--lock-release-after", "2"])
    assert build_config(options, reactor).lock_release_after == 2.0
    assert build_config(_parsed(tmp_path), reactor).lock_release_after == 0.5
    with pytest.raises(UsageError):
        Options().parseOptions(["--path", str(tmp_path), "--lock-release-after", "-1"])


def _parsed(tmp_path) -> Options:
    options = Options()
    options.parseOptions(["--path", str(tmp_path)])
    return options


@pytest_twisted.ensureDeferred
async def test_lost_lease_stops_even_an_active_patch(request, server_factory, redis_server, redis_prefix):
    """
    A release request waits for the client to fall silent; a lost lease
    does not (another process may hold the upload now): the PATCH stops at
    once, bytes flowing or not.
    """
    locker = RedisLocker(redis_server.url, key_prefix=redis_prefix, lease=0.6, reactor=reactor)
    locker.startService()
    request.addfinalizer(lambda: pytest_twisted.blockon(locker.stopService()))
    await locker.ready().addTimeout(10, reactor)
    server = await server_factory(locker=locker, lock_release_after=3.0)
    location = await create(server, len(DATA))
    connection = await _stall_patch(server, location)
    try:
        trickle = _trickle(connection, DATA[SENT:], pieces=20, interval=0.1)
        redis_server.command("DEL", redis_prefix + "lock:" + upload_id(location))  # as after a long stall
        await _interrupted(connection)
        await trickle
    finally:
        if not connection.is_closed:
            connection.close()
    assert SENT <= len(stored(server, location)) < len(DATA)
