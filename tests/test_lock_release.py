"""
Lock-release requests end to end, over real loopback HTTP, for every
locker: a PATCH whose client stalled mid-body holds the upload's lock; a
HEAD, DELETE or second PATCH for the same upload must not wait for TCP to
notice.  The stalled PATCH is interrupted (keeping the bytes it stored),
and the new request is served within a second.

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

from tushttp import OCTET, TUS, connect, create, head, header, patch, request_bytes, stored, upload_id, wait_for
from txtus.lockers.file import FileLocker
from txtus.lockers.memory import MemoryLocker
from txtus.lockers.redis import RedisLocker

DATA = bytes(range(256)) * 3 + os.urandom(232)  # 1000 bytes
SENT = 100
PROMPT = 1.0  # seconds the interrupting request may take


@pytest.fixture(params=["memory", "file", "two-servers", "two-redis"])
def servers(request, server_factory, upload_dir):
    """(server the stalled PATCH goes to, server the interrupting request goes to)."""
    kind = request.param
    if kind == "memory":
        server = pytest_twisted.blockon(server_factory(locker=MemoryLocker(reactor=reactor)))
        return server, server
    if kind == "file":
        server = pytest_twisted.blockon(server_factory(locker=FileLocker(str(upload_dir), reactor=reactor)))
        return server, server
    if kind == "two-redis":
        redis_url, prefix = request.getfixturevalue("redis_server").url, request.getfixturevalue("redis_prefix")
        lockers = [RedisLocker(redis_url, key_prefix=prefix, acquirer_poll_interval=0.05, reactor=reactor)
                   for _ in range(2)]
        for locker in lockers:
            locker.startService()
            request.addfinalizer(lambda locker=locker: pytest_twisted.blockon(locker.stopService()))
            pytest_twisted.blockon(locker.ready().addTimeout(10, reactor))
        return tuple(pytest_twisted.blockon(server_factory(locker=locker)) for locker in lockers)
    first, second = (
        pytest_twisted.blockon(server_factory(locker=FileLocker(
            str(upload_dir), holder_poll_interval=0.2, acquirer_poll_interval=0.1, reactor=reactor)))
        for _ in range(2))
    return first, second


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


@pytest_twisted.ensureDeferred
async def test_head_interrupts_stalled_patch(servers):
    holder_server, other_server = servers
    location = await create(holder_server, len(DATA))
    connection = await _stall_patch(holder_server, location)
    try:
        started = time.monotonic()
        response = await head(_on(other_server, location))
        elapsed = time.monotonic() - started
        assert response.code == 200
        assert header(response, "upload-offset") == str(SENT)
        assert elapsed < PROMPT, elapsed
        await _interrupted(connection)
    finally:
        if not connection.is_closed:
            connection.close()
    assert stored(holder_server, location) == DATA[:SENT]
    response = await patch(_on(other_server, location), SENT, DATA[SENT:])
    assert response.code == 204, response.text_body
    assert header(response, "upload-offset") == str(len(DATA))
    assert stored(holder_server, location) == DATA


@pytest_twisted.ensureDeferred
async def test_second_patch_interrupts_stalled_patch(servers):
    holder_server, other_server = servers
    location = await create(holder_server, len(DATA))
    connection = await _stall_patch(holder_server, location)
    try:
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
async def test_patch_still_sending_is_interrupted_too(servers):
    """
    Interrupting is not only for dead clients: a client that keeps sending
    after it lost the lock has its later bytes ignored, and the upload's
    offset is what was stored when the lock changed hands.
    """
    holder_server, other_server = servers
    location = await create(holder_server, len(DATA))
    connection = await _stall_patch(holder_server, location)
    try:
        response = await head(_on(other_server, location))
        assert header(response, "upload-offset") == str(SENT)
        if not connection.is_closed:
            connection.write(DATA[SENT:2 * SENT])
        await _interrupted(connection)
    finally:
        if not connection.is_closed:
            connection.close()
    assert stored(holder_server, location) == DATA[:SENT]
