"""
The expiration extension: Upload-Expires on creation and PATCH, 410 for an
expired unfinished upload, and the cleaner that removes it (under its lock,
surviving restarts because expiry lives in the .info file).
"""

from __future__ import annotations

import os

import pytest
import pytest_twisted
import treq
from twisted.internet.task import Clock

from txtus import StoreComposer, TusConfig, FileStore, MemoryLocker
from txtus.expiration import ExpirationCleaner
from txtus.protocol.headers import http_date
from txtus.info import UploadInfo
from txtus.metrics import PrometheusMetrics
from txtus.tap import Options

TUS = {"Tus-Resumable": "1.0.0"}
OCTETS = "application/offset+octet-stream"


def started_clock(now: float = 1_700_000_000.0) -> Clock:
    clock = Clock()
    clock.advance(now)
    return clock


@pytest_twisted.ensureDeferred
async def test_upload_expires_headers_and_410(server_factory):
    clock = started_clock()
    server = await server_factory(expire_after=3600, clock=clock)
    response = await treq.request("OPTIONS", server.url)
    assert "expiration" in response.headers.getRawHeaders("tus-extension")[0].split(",")

    response = await treq.post(server.url, headers={**TUS, "Upload-Length": "10"})
    expected = http_date(clock.seconds() + 3600).decode()
    assert response.headers.getRawHeaders("upload-expires") == [expected]
    location = response.headers.getRawHeaders("location")[0]

    response = await treq.patch(location, b"hello", headers={**TUS, "Upload-Offset": "0", "Content-Type": OCTETS})
    assert response.code == 204
    assert response.headers.getRawHeaders("upload-expires") == [expected]
    response = await treq.head(location, headers=TUS)
    assert response.headers.getRawHeaders("upload-expires") == [expected]

    clock.advance(3600)
    response = await treq.head(location, headers=TUS)
    assert response.code == 410
    response = await treq.patch(location, b"world", headers={**TUS, "Upload-Offset": "5", "Content-Type": OCTETS})
    assert response.code == 410
    assert (await response.text()).startswith("ERR_UPLOAD_EXPIRED")


@pytest_twisted.ensureDeferred
async def test_finished_uploads_do_not_expire(server_factory):
    clock = started_clock()
    server = await server_factory(expire_after=60, clock=clock)
    response = await treq.post(server.url, b"hello", headers={
        **TUS, "Upload-Length": "5", "Content-Type": OCTETS})
    assert response.code == 201
    assert response.headers.getRawHeaders("upload-expires") is None
    location = response.headers.getRawHeaders("location")[0]
    clock.advance(120)
    response = await treq.head(location, headers=TUS)
    assert response.code == 200
    assert response.headers.getRawHeaders("upload-expires") is None


@pytest_twisted.ensureDeferred
async def test_no_expiration_without_the_option(server):
    response = await treq.request("OPTIONS", server.url)
    assert "expiration" not in response.headers.getRawHeaders("tus-extension")[0].split(",")
    response = await treq.post(server.url, headers={**TUS, "Upload-Length": "10"})
    assert response.headers.getRawHeaders("upload-expires") is None


def make_config(path, clock, locker=None) -> TusConfig:
    composer = StoreComposer()
    FileStore(str(path)).use_in(composer)
    if locker is not None:
        locker.use_in(composer)
    return TusConfig(composer=composer, expire_after=100, cleanup_interval=10, reactor=clock, clock=clock)


@pytest_twisted.ensureDeferred
async def test_cleaner_removes_only_expired_unfinished_uploads(tmp_path):
    clock = started_clock()
    config = make_config(tmp_path, clock)
    store = config.composer.core
    old = await store.new_upload(UploadInfo(size=10, expires=clock.seconds() + 100))
    done = await store.new_upload(UploadInfo(size=0, expires=clock.seconds() + 100))
    fresh = await store.new_upload(UploadInfo(size=10, expires=clock.seconds() + 500))
    forever = await store.new_upload(UploadInfo(size=10))
    cleaner = ExpirationCleaner(config)
    assert await cleaner.sweep() == []
    clock.advance(200)
    assert await cleaner.sweep() == [old.id]
    remaining = sorted(await store.list_upload_ids())
    assert remaining == sorted([done.id, fresh.id, forever.id])
    assert not os.path.exists(store.data_path(old.id))


@pytest_twisted.ensureDeferred
async def test_cleaner_waits_for_the_lock_and_asks_holder_to_release(tmp_path):
    clock = started_clock()
    locker = MemoryLocker(reactor=clock)
    config = make_config(tmp_path, clock, locker)
    store = config.composer.core
    upload = await store.new_upload(UploadInfo(size=10, expires=clock.seconds() + 100))
    released = []
    lock = await locker.lock(upload.id, lambda: released.append(True))
    clock.advance(200)
    sweep = ExpirationCleaner(config).sweep()
    assert released == [True]
    assert not sweep.called
    assert os.path.exists(store.data_path(upload.id))
    await lock.unlock()
    assert await sweep == [upload.id]
    assert not os.path.exists(store.data_path(upload.id))


@pytest_twisted.ensureDeferred
async def test_expiry_survives_a_restart(tmp_path):
    clock = started_clock()
    upload = await make_config(tmp_path, clock).composer.core.new_upload(
        UploadInfo(size=10, expires=clock.seconds() + 100))
    clock.advance(150)
    # A new store and cleaner on the same directory: a restarted server.
    assert await ExpirationCleaner(make_config(tmp_path, clock)).sweep() == [upload.id]


def test_cli_durations(tmp_path):
    options = Options()
    options.parseOptions(["--path", str(tmp_path), "--expire-after", "24h", "--cleanup-interval", "90s"])
    assert options["expire-after"] == 86400
    assert options["cleanup-interval"] == 90


class _FailsOnce:
    """An upload lister whose first listing fails, as with EMFILE."""

    def __init__(self, lister) -> None:
        self._lister = lister
        self.calls = 0

    async def list_upload_ids(self):
        self.calls += 1
        if self.calls == 1:
            raise OSError(24, "Too many open files")
        return await self._lister.list_upload_ids()


@pytest_twisted.ensureDeferred
async def test_cleaner_keeps_sweeping_after_a_failed_listing(tmp_path):
    clock = started_clock()
    config = make_config(tmp_path, clock)
    store = config.composer.core
    lister = config.composer.lister = _FailsOnce(store)
    upload = await store.new_upload(UploadInfo(size=10, expires=clock.seconds() + 5))
    cleaner = ExpirationCleaner(config)
    cleaner.startService()
    try:
        # The sweep at start fails; the timer goes on.
        clock.advance(10)
        if cleaner._sweeping is not None:
            await cleaner._sweeping
    finally:
        cleaner.stopService()
    assert lister.calls == 2
    assert not os.path.exists(store.data_path(upload.id))


@pytest.mark.parametrize("metrics", [False, True])
@pytest_twisted.ensureDeferred
async def test_expiry_slides_with_each_patch(server_factory, metrics):
    """
    Each PATCH pushes the expiry back to --expire-after from its end (also
    through the composer metrics instrument, as in twist tus).
    """
    clock = started_clock()
    extra = {"metrics": PrometheusMetrics()} if metrics else {}
    server = await server_factory(expire_after=10, clock=clock, **extra)
    response = await treq.post(server.url, headers={**TUS, "Upload-Length": "30"})
    location = response.headers.getRawHeaders("location")[0]
    for offset in (0, 10):
        clock.advance(8)
        response = await treq.patch(location, b"0123456789", headers={
            **TUS, "Upload-Offset": str(offset), "Content-Type": OCTETS})
        assert response.code == 204
        assert response.headers.getRawHeaders("upload-expires") == [http_date(clock.seconds() + 10).decode()]
    clock.advance(8)  # 24 s after creation, 8 s after the last PATCH
    response = await treq.head(location, headers=TUS)
    assert response.code == 200
    assert response.headers.getRawHeaders("upload-expires") == [http_date(clock.seconds() + 2).decode()]
    assert await ExpirationCleaner(server.config).sweep() == []
    clock.advance(2)
    response = await treq.head(location, headers=TUS)
    assert response.code == 410


@pytest_twisted.ensureDeferred
async def test_trickling_patch_outlives_its_expiry(server_factory):
    """
    A PATCH trickling 10 bytes every 0.2 s for longer than --expire-after,
    with the cleaner sweeping every 0.2 s: the upload is active, so it is
    neither interrupted nor removed, and finishes.
    """
    from tushttp import connect, request_bytes
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    # A client that keeps sending is never silent for lock_release_after,
    # however loaded the machine.
    server = await server_factory(expire_after=1.0, cleanup_interval=0.2, lock_release_after=3.0)
    cleaner = ExpirationCleaner(server.config)
    cleaner.startService()
    pieces = 12
    try:
        response = await treq.post(server.url, headers={**TUS, "Upload-Length": str(10 * pieces)})
        location = response.headers.getRawHeaders("location")[0]
        connection = await connect(server)
        try:
            connection.write(request_bytes("PATCH", "/" + location.split("/", 3)[3], {
                **TUS, "Upload-Offset": "0", "Content-Type": OCTETS, "Content-Length": str(10 * pieces)}))
            for _ in range(pieces):
                await deferLater(reactor, 0.2, lambda: None)
                if connection.is_closed:
                    break
                connection.write(b"0123456789")
            reply = await connection.response()
        finally:
            if not connection.is_closed:
                connection.close()
        assert (reply.status, reply.header("upload-offset")) == (204, str(10 * pieces)), reply
        response = await treq.head(location, headers=TUS)
        assert response.code == 200
    finally:
        await cleaner.stopService()
