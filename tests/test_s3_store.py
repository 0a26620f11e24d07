"""
What the S3 store adds to the conformance suite, against the real test
servers: tusd's object layout, parts streamed with backpressure, a cut chunk
kept, the offset read back by a fresh store (another process), and part
PUTs that fail (a loopback proxy in front of the real server answers 503 to
chosen requests).
"""

from __future__ import annotations

import json
import os
import resource
import signal
from urllib.parse import urlsplit

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import deferLater
from twisted.protocols import portforward
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site
from zope.interface import implementer
from twisted.internet.interfaces import IPushProducer

from tests.s3servers import make_s3_store
from txtus import errors
from txtus.info import UploadInfo
from txtus.stores.s3.client import S3Client
from txtus.interfaces import ILengthAwareChunkWriter
from txtus.stores.s3.parts import SpooledPart
from txtus.stores.s3.store import MIN_PART_SIZE, PART_MODES, S3Store

MiB = 1024 * 1024


_CYCLE = bytes(range(251)) * (64 * 1024 // 251 + 2)


def pattern(start: int, length: int) -> bytes:
    """Bytes that differ at every offset modulo 251, so misplaced bytes show."""
    whole = _CYCLE * (length // len(_CYCLE) + 2)
    return whole[start % 251:start % 251 + length]


@implementer(IPushProducer)
class Producer:
    """Stands in for the request body: counts what the writer asks of it."""

    def __init__(self):
        self.paused = False
        self.pauses = 0
        self.stopped = False
        self.resumed = Deferred()

    def pauseProducing(self):
        self.paused = True
        self.pauses += 1

    def resumeProducing(self):
        self.paused = False
        resumed, self.resumed = self.resumed, Deferred()
        resumed.callback(None)

    def stopProducing(self):
        self.stopped = True
        self.resumeProducing()


async def feed(writer, producer, data: bytes, step: int = 256 * 1024, announced: int | None = None) -> None:
    """
    Write like a socket would: one read at a time, waiting while paused.
    The request announced C{announced} bytes (default: all of C{data}).
    """
    if ILengthAwareChunkWriter.providedBy(writer):
        writer.expect_length(len(data) if announced is None else announced)
    writer.registerProducer(producer, True)
    for position in range(0, len(data), step):
        while producer.paused and not producer.stopped:
            await producer.resumed
        if producer.stopped:
            break
        writer.write(data[position:position + step])
    writer.unregisterProducer()


async def keys(store: S3Store) -> set[str]:
    return {o.key[len(store.prefix):] for o in await store.client.list_objects(store.prefix)}


@pytest.fixture(params=[*PART_MODES, "spool", "pipe-spool"])
def part_mode(request):
    """Each part mode, and both with buffered parts spooled to disk (--s3-spool-dir)."""
    return request.param


def mode_options(part_mode: str, tmp_path) -> dict:
    if not part_mode.endswith("spool"):
        return {"part_mode": part_mode}
    spool = tmp_path / "spool"
    spool.mkdir(exist_ok=True)
    return {"part_mode": "pipe" if part_mode.startswith("pipe") else "buffer", "spool_dir": str(spool)}


@pytest.fixture
def s3_store(s3_server, part_mode, tmp_path):
    store = make_s3_store(s3_server, part_size=MIN_PART_SIZE, concurrency=2, **mode_options(part_mode, tmp_path))
    yield store
    pytest_twisted.blockon(store.client.close())


@pytest_twisted.ensureDeferred
async def test_tusd_layout_parts_and_tail(s3_store, s3_server):
    size = 2 * MIN_PART_SIZE + 3 * MiB + 7
    store = s3_store
    upload = await store.new_upload(UploadInfo(size=size, metadata={"filename": "a.bin", "filetype": "image/png"}))
    object_id, multipart = upload.id.split("+", 1)
    assert len(object_id) == 32 and multipart
    document = json.loads(await store.client.get_object(f"{store.prefix}{object_id}.info"))
    assert document["ID"] == upload.id and document["Size"] == size
    assert document["Storage"] == {"Type": "s3store", "Bucket": s3_server.bucket, "Key": store.prefix + object_id}

    # 7 MiB: one 5 MiB part and a 2 MiB tail in <id>.part.
    first = 7 * MiB
    writer = await upload.open_chunk(0)
    producer = Producer()
    await feed(writer, producer, pattern(0, first))
    assert await writer.commit() == first
    assert await keys(store) == {f"{object_id}.info", f"{object_id}.part"}
    parts = await store.client.list_parts(store.prefix + object_id, multipart)
    assert [p.size for p in parts] == [MIN_PART_SIZE]

    # Another process (a fresh store) sees the same offset and resumes.
    other = make_s3_store(s3_server, prefix=store.prefix, part_size=MIN_PART_SIZE, concurrency=2)
    try:
        again = await other.get_upload(upload.id)
        assert (await again.get_info()).offset == first
        writer = await again.open_chunk(first)
        await feed(writer, Producer(), pattern(first, size - first))
        assert await writer.commit() == size
        await again.finish()
        await again.finish()  # idempotent
    finally:
        await other.client.close()
    assert await keys(store) == {f"{object_id}.info", object_id}
    final = await store.client.head_object(store.prefix + object_id)
    assert final.getRawHeaders("content-type") == ["image/png"]
    assert await store.client.get_object(store.prefix + object_id) == pattern(0, size)
    assert (await upload.get_info()).offset == size
    await store.terminate(upload)
    assert await keys(store) == set()


@pytest_twisted.ensureDeferred
async def test_a_cut_chunk_keeps_every_byte_received(s3_store):
    store = s3_store
    upload = await store.new_upload(UploadInfo(size=20 * MiB))
    writer = await upload.open_chunk(0)
    received = MIN_PART_SIZE + 123_457
    await feed(writer, Producer(), pattern(0, received))
    # The body ends early (client gone): the server commits what arrived.
    assert await writer.commit() == received
    assert (await upload.get_info()).offset == received
    writer = await upload.open_chunk(received)
    await feed(writer, Producer(), pattern(received, 20 * MiB - received))
    assert await writer.commit() == 20 * MiB
    await upload.finish()
    assert await store.client.get_object(store.key(upload.id)) == pattern(0, 20 * MiB)


@pytest_twisted.ensureDeferred
async def test_parts_pause_the_body_while_puts_are_busy(s3_store):
    store = s3_store
    upload = await store.new_upload(UploadInfo(size=6 * MIN_PART_SIZE))
    writer = await upload.open_chunk(0)
    producer = Producer()
    writer.registerProducer(producer, True)
    # Five full parts at once: two PUTs start, one part waits, the body is paused.
    for number in range(5):
        writer.write(pattern(number * MIN_PART_SIZE, MIN_PART_SIZE))
    assert producer.paused and producer.pauses == 1
    await producer.resumed
    writer.unregisterProducer()
    assert await writer.commit() == 5 * MIN_PART_SIZE


# Failing requests --------------------------------------------------------------

class FaultyProxy(Resource):
    """
    Forwards every request unchanged (Host included, so signatures stay
    valid) to the real server, except that requests matching C{fail} get a
    503 without reaching it.  A request for which C{hold} returns a
    Deferred waits for it first.
    """

    isLeaf = True

    def __init__(self, target: str, fail, mangle=lambda method, uri: False, answer=lambda method, uri, headers: None,
                 hold=lambda method, uri: None):
        super().__init__()
        self.target = target
        self.fail = fail
        self.mangle = mangle
        self.answer = answer
        self.hold = hold
        self.seen: list[tuple[str, str, int]] = []

    def render(self, request):
        held = self.hold(request.method.decode(), request.uri.decode())
        if held is None:
            self.relay(request)
        else:
            held.addCallback(lambda _: self.relay(request))
        return NOT_DONE_YET

    def relay(self, request):
        method = request.method.decode()
        uri = request.uri.decode()
        if self.fail(method, uri):
            self.seen.append((method, uri, 503))
            request.setResponseCode(503)
            request.write(b"<Error><Code>ServiceUnavailable</Code><Message>injected</Message></Error>")
            request.finish()
            return
        headers = {k: v for k, v in request.requestHeaders.getAllRawHeaders() if k.lower() != b"content-length"}
        body = request.content.read()
        if body and self.mangle(method, uri):
            # Corrupted on the way: S3 stores (and hashes) other bytes than were sent.
            body = bytes([body[0] ^ 0xFF]) + body[1:]
        d = treq.request(method, self.target + uri, headers=headers, data=body or None)

        def answer(response):
            self.seen.append((method, uri, response.code))
            request.setResponseCode(response.code)
            dropped = (b"transfer-encoding", b"connection") + ((b"content-length",) if method != "HEAD" else ())
            for name, values in response.headers.getAllRawHeaders():
                if name.lower() not in dropped:
                    request.responseHeaders.setRawHeaders(name, values)
            self.answer(method, uri, request.responseHeaders)
            return treq.content(response).addCallback(lambda content: (request.write(content), request.finish()))

        d.addCallback(answer)
        d.addErrback(lambda f: (request.setResponseCode(502), request.finish()))


@pytest.fixture
def faulty(s3_server, part_mode, tmp_path):
    """A proxy in front of the real server and a store that talks through it."""
    rules = {"fail": lambda method, uri: False, "mangle": lambda method, uri: False, "answer": lambda m, u, h: None,
             "hold": lambda method, uri: None}
    proxy = FaultyProxy(s3_server.endpoint, lambda m, u: rules["fail"](m, u), lambda m, u: rules["mangle"](m, u),
                        lambda m, u, h: rules["answer"](m, u, h), lambda m, u: rules["hold"](m, u))
    port = reactor.listenTCP(0, Site(proxy), interface="127.0.0.1")
    client = S3Client(s3_server.bucket, s3_server.credentials, s3_server.region,
                      f"http://127.0.0.1:{port.getHost().port}", reactor=reactor, retries=2, backoff=0.01)
    store = S3Store(client, prefix=make_s3_store(s3_server).prefix, part_size=MIN_PART_SIZE, concurrency=2,
                    **mode_options(part_mode, tmp_path))
    yield store, proxy, rules
    pytest_twisted.blockon(client.close())
    pytest_twisted.blockon(port.stopListening())


@pytest_twisted.ensureDeferred
async def test_a_failed_part_put_is_retried(faulty):
    store, proxy, rules = faulty
    upload = await store.new_upload(UploadInfo(size=2 * MIN_PART_SIZE))
    failures = {"left": 2}

    def fail_twice(method, uri):
        if method == "PUT" and "partNumber=2" in uri and failures["left"]:
            failures["left"] -= 1
            return True
        return False

    rules["fail"] = fail_twice
    writer = await upload.open_chunk(0)
    await feed(writer, Producer(), pattern(0, 2 * MIN_PART_SIZE))
    if store.part_mode == "buffer":
        assert await writer.commit() == 2 * MIN_PART_SIZE
        assert [s for m, u, s in proxy.seen if "partNumber=2" in u] == [503, 503, 200]
        return
    # A piped part is sent once: its bytes are gone.  The client gets a 5xx
    # and resumes from the part S3 holds (its retry is the retry).
    with pytest.raises(errors.TusError) as caught:
        await writer.commit()
    assert caught.value.status >= 500
    assert [s for m, u, s in proxy.seen if "partNumber=2" in u] == [503]
    assert (await upload.get_info()).offset == MIN_PART_SIZE
    failures["left"] = 0
    writer = await upload.open_chunk(MIN_PART_SIZE)
    await feed(writer, Producer(), pattern(MIN_PART_SIZE, MIN_PART_SIZE))
    assert await writer.commit() == 2 * MIN_PART_SIZE
    assert [s for m, u, s in proxy.seen if "partNumber=2" in u] == [503, 200]
    await upload.finish()
    assert await store.client.get_object(store.key(upload.id)) == pattern(0, 2 * MIN_PART_SIZE)


@pytest_twisted.ensureDeferred
async def test_a_part_that_keeps_failing_stops_the_body_and_keeps_what_s3_holds(faulty):
    store, proxy, rules = faulty
    upload = await store.new_upload(UploadInfo(size=8 * MIN_PART_SIZE))
    rules["fail"] = lambda method, uri: method == "PUT" and "partNumber=" in uri and "partNumber=1&" not in uri
    writer = await upload.open_chunk(0)
    producer = Producer()
    await feed(writer, producer, pattern(0, 8 * MIN_PART_SIZE))
    assert producer.stopped  # the body stopped: the server answers at once
    with pytest.raises(errors.TusError) as caught:
        await writer.commit()
    assert caught.value.status >= 500
    # Only part 1 was confirmed: HEAD says exactly that, and the upload
    # resumes from there.
    rules["fail"] = lambda method, uri: False
    assert (await upload.get_info()).offset == MIN_PART_SIZE
    writer = await upload.open_chunk(MIN_PART_SIZE)
    await feed(writer, Producer(), pattern(MIN_PART_SIZE, 7 * MIN_PART_SIZE))
    assert await writer.commit() == 8 * MIN_PART_SIZE
    await upload.finish()
    assert await store.client.get_object(store.key(upload.id)) == pattern(0, 8 * MIN_PART_SIZE)


# Buffered parts carry Content-MD5 (S3 refuses corrupted bytes itself): these
# are about piped parts only.
PIPED = ["pipe", "pipe-spool"]


@pytest.mark.parametrize("part_mode", PIPED)
@pytest.mark.parametrize(("void", "tail"), [(1, MiB + 17), (2, 0)])
@pytest_twisted.ensureDeferred
async def test_pipe_a_part_s3_holds_with_other_bytes_does_not_count(faulty, s3_server, void, tail):
    """
    A piped part is sent without Content-MD5: when the ETag S3 answers is
    not the MD5 of the bytes sent, S3 holds other bytes under that part
    number.  The PATCH fails, the offset stops before that part (keeping
    the old .part if it went into it), and the next PATCH, from another
    process, overwrites it: the final object is exactly what was sent.
    rclone cannot replace a part it has streamed with other bytes: there
    the next PATCH fails too, and the wrong bytes never count.
    """
    store, proxy, rules = faulty
    size = 3 * MIN_PART_SIZE
    upload = await store.new_upload(UploadInfo(size=size))
    if tail:
        assert await write_chunk_plain(upload, 0, pattern(0, tail)) == tail
    rules["mangle"] = lambda method, uri: method == "PUT" and f"partNumber={void}&" in uri
    writer = await upload.open_chunk(tail)
    await feed(writer, Producer(), pattern(tail, size - tail))
    with pytest.raises(errors.TusError) as caught:
        await writer.commit()
    assert caught.value.status >= 500
    rules["mangle"] = lambda method, uri: False
    parts = await store.client.list_parts(store.key(upload.id), store.multipart_id(upload.id))
    assert len(parts) >= void  # S3 holds the part with the wrong bytes ...
    expected = tail if void == 1 else (void - 1) * MIN_PART_SIZE
    assert (await upload.get_info()).offset == expected  # ... and it does not count
    other = S3Store(S3Client(store.client.bucket, store.client.credentials, store.client.region,
                             store.client._base, reactor=reactor), prefix=store.prefix, part_size=MIN_PART_SIZE,
                    part_mode="pipe")
    try:
        again = await other.get_upload(upload.id)
        assert (await again.get_info()).offset == expected
        writer = await again.open_chunk(expected)
        await feed(writer, Producer(), pattern(expected, size - expected))
        if s3_server.name == "rclone":
            with pytest.raises(errors.TusError) as caught:
                await writer.commit()
            assert caught.value.status >= 500
            assert (await again.get_info()).offset == expected
            return
        assert await writer.commit() == size
        await again.finish()
        assert await other.client.get_object(other.key(upload.id)) == pattern(0, size)
    finally:
        await other.client.close()


def other_pipe_store(store: S3Store) -> S3Store:
    """Another process's store, on the same bucket and prefix, straight to the server."""
    return S3Store(S3Client(store.client.bucket, store.client.credentials, store.client.region,
                            store.client._base, reactor=reactor), prefix=store.prefix, part_size=MIN_PART_SIZE,
                   part_mode="pipe")


async def finish_after_void(store: S3Store, s3_server, upload_id: str, offset: int, size: int) -> None:
    """
    Send the rest from C{offset}, the void part included, on another
    process: on moto the final object is exactly what was sent; rclone
    cannot replace the part it streamed with other bytes, so the PATCH
    fails and the offset stays.
    """
    other = other_pipe_store(store)
    try:
        again = await other.get_upload(upload_id)
        assert (await again.get_info()).offset == offset
        writer = await again.open_chunk(offset)
        await feed(writer, Producer(), pattern(offset, size - offset))
        if s3_server.name == "rclone":
            with pytest.raises(errors.TusError) as caught:
                await writer.commit()
            assert caught.value.status >= 500
            assert (await again.get_info()).offset == offset
            return
        assert await writer.commit() == size
        await again.finish()
        assert await other.client.get_object(other.key(upload_id)) == pattern(0, size)
    finally:
        await other.client.close()


async def small_patch(store: S3Store, upload_id: str, offset: int, length: int, staged: bool = False) -> None:
    """
    A PATCH of C{length} bytes (ending with less than a part) on another
    process, checksummed (staged) or not; HEAD then says offset + length.
    """
    other = other_pipe_store(store)
    try:
        again = await other.get_upload(upload_id)
        writer = await (other.open_staged_chunk(again, offset) if staged else again.open_chunk(offset))
        await feed(writer, Producer(), pattern(offset, length))
        assert await writer.commit() == offset + length
        assert (await again.get_info()).offset == offset + length
    finally:
        await other.client.close()


@pytest.mark.parametrize("part_mode", PIPED)
@pytest.mark.parametrize(("void", "tail"), [(1, MiB + 17), (2, 0)])
@pytest_twisted.ensureDeferred
async def test_pipe_a_void_part_stays_void_after_a_patch_smaller_than_a_part(faulty, s3_server, void, tail):
    """
    The PATCH after a void part sends less than a part: its bytes go to the
    .part, the void part stays in S3's list, and it still does not count
    (the .part written then marks it void again).
    """
    store, proxy, rules = faulty
    size = 3 * MIN_PART_SIZE
    upload = await store.new_upload(UploadInfo(size=size))
    if tail:
        assert await write_chunk_plain(upload, 0, pattern(0, tail)) == tail
    rules["mangle"] = lambda method, uri: method == "PUT" and f"partNumber={void}&" in uri
    writer = await upload.open_chunk(tail)
    await feed(writer, Producer(), pattern(tail, size - tail))
    with pytest.raises(errors.TusError):
        await writer.commit()
    rules["mangle"] = lambda method, uri: False
    expected = tail if void == 1 else (void - 1) * MIN_PART_SIZE
    assert (await upload.get_info()).offset == expected
    await small_patch(store, upload.id, expected, MiB)
    assert len(await store.client.list_parts(store.key(upload.id), store.multipart_id(upload.id))) >= void
    await finish_after_void(store, s3_server, upload.id, expected + MiB, size)


@pytest.mark.parametrize("part_mode", PIPED)
@pytest.mark.parametrize("staged", [False, True], ids=["plain", "staged"])
@pytest_twisted.ensureDeferred
async def test_pipe_a_void_part_after_a_failed_part_stays_void(faulty, s3_server, staged):
    """
    Two piped PUTs at once: part 1 fails, part 2 comes back with other
    bytes.  Part 2 is void though it is not next to the upload's parts;
    once a later PATCH stored part 1 and a .part, it still does not count,
    also when that PATCH was checksummed (its staged chunk rolled forward
    into part 1 and the .part).
    """
    store, proxy, rules = faulty
    size = 3 * MIN_PART_SIZE
    upload = await store.new_upload(UploadInfo(size=size))
    second_answered = Deferred()

    def answered(method, uri, headers):
        if method == "PUT" and "partNumber=2&" in uri and not second_answered.called:
            second_answered.callback(None)

    # Part 1's 503 comes after S3 answered part 2 (with the wrong bytes).
    rules["hold"] = lambda method, uri: second_answered if method == "PUT" and "partNumber=1&" in uri else None
    rules["fail"] = lambda method, uri: method == "PUT" and "partNumber=1&" in uri
    rules["mangle"] = lambda method, uri: method == "PUT" and "partNumber=2&" in uri
    rules["answer"] = answered
    writer = await upload.open_chunk(0)
    await feed(writer, Producer(), pattern(0, size))
    with pytest.raises(errors.TusError):
        await writer.commit()
    rules.update(hold=lambda m, u: None, fail=lambda m, u: False, mangle=lambda m, u: False)
    assert [s for m, u, s in proxy.seen if "partNumber=" in u and m == "PUT"] == [200, 503]
    parts = await store.client.list_parts(store.key(upload.id), store.multipart_id(upload.id))
    assert [p.number for p in parts] == [2]
    assert (await upload.get_info()).offset == 0
    # Part 1 and a 1 MiB .part: part 2 (S3 lists it now after part 1) does not count.
    await small_patch(store, upload.id, 0, MIN_PART_SIZE + MiB, staged)
    await finish_after_void(store, s3_server, upload.id, MIN_PART_SIZE + MiB, size)


@pytest.mark.parametrize("part_mode", PIPED)
@pytest.mark.parametrize("encryption", [("x-amz-server-side-encryption", "aws:kms"),
                                        ("x-amz-server-side-encryption-customer-algorithm", "AES256")])
@pytest_twisted.ensureDeferred
async def test_pipe_parts_encrypted_with_kms_or_customer_keys_are_not_checked_against_their_etag(faulty, encryption):
    """S3 answers parts it encrypted with a KMS key or the client's with an ETag that is not their MD5."""
    store, proxy, rules = faulty

    def kms(method, uri, headers):
        if method == "PUT" and "partNumber=" in uri:
            headers.setRawHeaders(b"etag", [b'"0123456789abcdef0123456789abcdef"'])
            headers.setRawHeaders(encryption[0].encode(), [encryption[1].encode()])

    rules["answer"] = kms
    upload = await store.new_upload(UploadInfo(size=2 * MIN_PART_SIZE))
    writer = await upload.open_chunk(0)
    await feed(writer, Producer(), pattern(0, MIN_PART_SIZE + MiB))
    assert await writer.commit() == MIN_PART_SIZE + MiB


# Staged (checksummed) chunks -----------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_a_staged_chunk_counts_only_once_committed(s3_store):
    store = s3_store
    size = 3 * MIN_PART_SIZE
    upload = await store.new_upload(UploadInfo(size=size))
    assert await write_chunk_plain(upload, 0, pattern(0, MiB)) == MiB
    writer = await store.open_staged_chunk(upload, MiB)
    await feed(writer, Producer(), pattern(MiB, 2 * MIN_PART_SIZE))
    # Two staging parts are in S3, none counts.
    assert (await upload.get_info()).offset == MiB
    assert await writer.commit() == MiB + 2 * MIN_PART_SIZE
    assert (await upload.get_info()).offset == MiB + 2 * MIN_PART_SIZE
    assert not [k for k in await keys(store) if ".staged." in k]
    rest = size - MiB - 2 * MIN_PART_SIZE
    assert await write_chunk_plain(upload, size - rest, pattern(size - rest, rest)) == size
    await upload.finish()
    assert await store.client.get_object(store.key(upload.id)) == pattern(0, size)


@pytest_twisted.ensureDeferred
async def test_a_rolled_back_staged_chunk_leaves_the_upload_as_it_was(s3_store):
    store = s3_store
    upload = await store.new_upload(UploadInfo(size=3 * MIN_PART_SIZE))
    assert await write_chunk_plain(upload, 0, pattern(0, MiB)) == MiB
    writer = await store.open_staged_chunk(upload, MiB)
    await feed(writer, Producer(), b"x" * (2 * MIN_PART_SIZE))
    assert await writer.rollback() == MiB
    assert (await upload.get_info()).offset == MiB
    assert await keys(store) == {store.key(upload.id)[len(store.prefix):] + s for s in (".info", ".part")}
    assert await store.client.get_object(store.part_key(upload.id)) == pattern(0, MiB)


@pytest_twisted.ensureDeferred
async def test_a_commit_cut_short_is_finished_by_the_next_reader(s3_store, s3_server):
    store = s3_store
    size = 3 * MIN_PART_SIZE
    upload = await store.new_upload(UploadInfo(size=size))
    assert await write_chunk_plain(upload, 0, pattern(0, MiB)) == MiB
    writer = await store.open_staged_chunk(upload, MiB)
    await feed(writer, Producer(), pattern(MiB, MIN_PART_SIZE + 2 * MiB))

    async def crash(upload_id, size, key=None):
        raise RuntimeError("process killed after the staged object was completed")

    store.roll_forward = crash  # the staged object is completed, then the process dies
    with pytest.raises(RuntimeError):
        await writer.commit()
    del store.roll_forward
    other = make_s3_store(s3_server, prefix=store.prefix, part_size=MIN_PART_SIZE)
    try:
        again = await other.get_upload(upload.id)
        assert (await again.get_info()).offset == MiB + MIN_PART_SIZE + 2 * MiB
    finally:
        await other.client.close()
    done = MiB + MIN_PART_SIZE + 2 * MiB
    assert await write_chunk_plain(upload, done, pattern(done, size - done)) == size
    await upload.finish()
    assert await store.client.get_object(store.key(upload.id)) == pattern(0, size)


async def write_chunk_plain(upload, offset: int, data: bytes) -> int:
    writer = await upload.open_chunk(offset)
    await feed(writer, Producer(), data)
    return await writer.commit()


# Pipe mode ---------------------------------------------------------------------

def pipe_store(s3_server, **options):
    return make_s3_store(s3_server, part_size=MIN_PART_SIZE, concurrency=2, part_mode="pipe", **options)


@pytest.mark.parametrize("tail", [0, MiB + 17])
@pytest_twisted.ensureDeferred
async def test_pipe_a_body_cut_inside_a_part_keeps_the_whole_parts_and_resumes(s3_server, tail):
    """
    Pipe mode's price: a body that ends inside a piped part loses that
    part's bytes (its PUT is aborted; S3 holds nothing of it), never more,
    and never a byte of the old .part.  The client resumes from HEAD's
    offset and every byte of the result is right.
    """
    store = pipe_store(s3_server)
    size = 5 * MIN_PART_SIZE
    try:
        upload = await store.new_upload(UploadInfo(size=size))
        if tail:
            assert await write_chunk_plain(upload, 0, pattern(0, tail)) == tail
        # Announced: the whole rest.  Arrived: the first part and 3 MiB of the second.
        writer = await upload.open_chunk(tail)
        cut = 2 * MIN_PART_SIZE - 2 * MiB  # 3 MiB into part 2
        await feed(writer, Producer(), pattern(tail, cut - tail), announced=size - tail)
        assert await writer.commit() == MIN_PART_SIZE
        assert (await upload.get_info()).offset == MIN_PART_SIZE
        parts = await store.client.list_parts(store.key(upload.id), store.multipart_id(upload.id))
        assert [p.size for p in parts] == [MIN_PART_SIZE]
        # A cut 1 MiB into the next part keeps nothing of it.
        writer = await upload.open_chunk(MIN_PART_SIZE)
        await feed(writer, Producer(), pattern(MIN_PART_SIZE, MiB), announced=size - MIN_PART_SIZE)
        assert await writer.commit() == MIN_PART_SIZE
        # Resume from HEAD's offset, on another process.
        other = pipe_store(s3_server, prefix=store.prefix)
        try:
            again = await other.get_upload(upload.id)
            offset = (await again.get_info()).offset
            assert offset == MIN_PART_SIZE
            writer = await again.open_chunk(offset)
            await feed(writer, Producer(), pattern(offset, size - offset))
            assert await writer.commit() == size
            await again.finish()
        finally:
            await other.client.close()
        assert await store.client.get_object(store.key(upload.id)) == pattern(0, size)
    finally:
        await store.client.close()


@pytest_twisted.ensureDeferred
async def test_pipe_a_cut_before_the_first_part_keeps_the_old_tail(s3_server):
    store = pipe_store(s3_server)
    size = 3 * MIN_PART_SIZE
    try:
        upload = await store.new_upload(UploadInfo(size=size))
        tail = 2 * MiB
        assert await write_chunk_plain(upload, 0, pattern(0, tail)) == tail
        writer = await upload.open_chunk(tail)
        await feed(writer, Producer(), pattern(tail, MiB), announced=size - tail)
        assert await writer.commit() == tail
        assert (await upload.get_info()).offset == tail
        writer = await upload.open_chunk(tail)
        await feed(writer, Producer(), pattern(tail, size - tail))
        assert await writer.commit() == size
        await upload.finish()
        assert await store.client.get_object(store.key(upload.id)) == pattern(0, size)
    finally:
        await store.client.close()


class _StallState:
    def __init__(self):
        self.stalled = False
        self.held: list = []


class StallingProxyServer(portforward.ProxyServer):
    """A TCP relay to S3 that, while stalled, stops reading what txtus sends: a slow S3."""

    def dataReceived(self, data):
        state = self.factory.state
        if state.stalled:
            state.held.append((self, data))
            self.transport.pauseProducing()
            return
        super().dataReceived(data)


@pytest_twisted.ensureDeferred
async def test_pipe_a_slow_s3_pauses_the_client(s3_server):
    """The piped PUT's connection is full: the request body is paused, and memory stays small."""
    target = urlsplit(s3_server.endpoint)
    factory = portforward.ProxyFactory(target.hostname, target.port)
    factory.protocol = StallingProxyServer
    factory.state = state = _StallState()
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    client = S3Client(s3_server.bucket, s3_server.credentials, s3_server.region,
                      f"http://127.0.0.1:{port.getHost().port}", reactor=reactor, retries=0)
    store = S3Store(client, prefix=make_s3_store(s3_server).prefix, part_size=MIN_PART_SIZE, concurrency=1,
                    part_mode="pipe")
    size = 4 * MIN_PART_SIZE
    try:
        upload = await store.new_upload(UploadInfo(size=size))
        writer = await upload.open_chunk(0)
        writer.expect_length(size)
        producer = Producer()
        writer.registerProducer(producer, True)
        state.stalled = True
        fed = 0
        step = 64 * 1024

        async def pump():
            nonlocal fed
            while fed < size:
                while producer.paused:
                    await producer.resumed
                writer.write(pattern(fed, step))
                fed += step
                await deferLater(reactor, 0, lambda: None)

        pumping = ensureDeferred(pump())
        await deferLater(reactor, 1.0, lambda: None)
        stalled_at = fed
        await deferLater(reactor, 0.5, lambda: None)
        assert producer.paused and fed == stalled_at < size
        # What the writer holds meanwhile is a socket read or two, not parts.
        assert writer._filled == 0
        state.stalled = False
        held, state.held = state.held, []
        for proxy, data in held:
            proxy.transport.resumeProducing()
            portforward.ProxyServer.dataReceived(proxy, data)
        await pumping
        writer.unregisterProducer()
        assert await writer.commit() == size
        await upload.finish()
        assert await store.client.get_object(store.key(upload.id)) == pattern(0, size)
    finally:
        state.stalled = False
        await client.close()
        await port.stopListening()


# Spooled parts (--s3-spool-dir) --------------------------------------------------

def _spool_fds(spool) -> int:
    """Descriptors of this process open on files in C{spool}."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith(str(spool) + "/"):
                count += 1
        except OSError:
            pass
    return count


@pytest_twisted.ensureDeferred
async def test_spooled_parts_wait_in_nameless_files_closed_after_their_put(s3_server, tmp_path):
    spool = tmp_path / "spool"
    spool.mkdir()
    store = make_s3_store(s3_server, part_size=MIN_PART_SIZE, concurrency=1, spool_dir=str(spool))
    size = 3 * MIN_PART_SIZE
    try:
        upload = await store.new_upload(UploadInfo(size=size))
        writer = await upload.open_chunk(0)
        producer = Producer()
        writer.registerProducer(producer, True)
        for position in range(0, MIN_PART_SIZE + 2 * MiB, 256 * 1024):
            while producer.paused:
                await producer.resumed
            writer.write(pattern(position, 256 * 1024))
        # Part 1 (its PUT running or done) and 2 MiB of part 2: on disk, under no name.
        assert os.listdir(spool) == []
        assert _spool_fds(spool) >= 1
        assert isinstance(writer._pieces, SpooledPart) and writer._pieces.length == 2 * MiB
        rest = MIN_PART_SIZE + 2 * MiB
        await feed(writer, producer, pattern(rest, size - rest))
        assert await writer.commit() == size
        assert _spool_fds(spool) == 0 and os.listdir(spool) == []
        await upload.finish()
        assert await store.client.get_object(store.key(upload.id)) == pattern(0, size)
    finally:
        await store.client.close()


@pytest_twisted.ensureDeferred
async def test_a_spool_that_cannot_be_written_stops_the_body_and_keeps_what_s3_holds(s3_server, tmp_path):
    """A full disk (here: a file size limit) fails the PATCH with a 500; HEAD reports the parts S3 holds."""
    spool = tmp_path / "spool"
    spool.mkdir()
    store = make_s3_store(s3_server, part_size=MIN_PART_SIZE, concurrency=1, spool_dir=str(spool))
    size = 3 * MIN_PART_SIZE
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    try:
        upload = await store.new_upload(UploadInfo(size=size))
        writer = await upload.open_chunk(0)
        producer = Producer()
        await feed(writer, producer, pattern(0, MIN_PART_SIZE))  # part 1: its PUT starts
        resource.setrlimit(resource.RLIMIT_FSIZE, (MiB, old_limit[1]))
        await feed(writer, producer, pattern(MIN_PART_SIZE, 2 * MIN_PART_SIZE))
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        assert producer.stopped
        with pytest.raises(errors.TusError) as caught:
            await writer.commit()
        assert caught.value.status == 500
        assert _spool_fds(spool) == 0
        assert (await upload.get_info()).offset == MIN_PART_SIZE
        writer = await upload.open_chunk(MIN_PART_SIZE)
        await feed(writer, Producer(), pattern(MIN_PART_SIZE, size - MIN_PART_SIZE))
        assert await writer.commit() == size
        await upload.finish()
        assert await store.client.get_object(store.key(upload.id)) == pattern(0, size)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)
        await store.client.close()
