"""
The checksum and checksum-trailer extensions over real HTTP: a verified
chunk is stored, a mismatched or unverifiable one is discarded whole.
"""

from __future__ import annotations

import base64
import hashlib
import zlib

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol

TUS = {"Tus-Resumable": "1.0.0"}
OCTETS = "application/offset+octet-stream"


def b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


DIGESTS = {
    "sha1": lambda d: hashlib.sha1(d).digest(),
    "md5": lambda d: hashlib.md5(d).digest(),
    "sha256": lambda d: hashlib.sha256(d).digest(),
    "sha512": lambda d: hashlib.sha512(d).digest(),
    "crc32": lambda d: zlib.crc32(d).to_bytes(4, "big"),
}


async def create(server, length: int) -> str:
    response = await treq.post(server.url, headers={**TUS, "Upload-Length": str(length)})
    assert response.code == 201
    return response.headers.getRawHeaders("location")[0]


async def offset_of(location: str) -> int:
    response = await treq.head(location, headers=TUS)
    return int(response.headers.getRawHeaders("upload-offset")[0])


async def patch(location: str, offset: int, data: bytes, **extra: str):
    response = await treq.patch(location, data, headers={
        **TUS, "Upload-Offset": str(offset), "Content-Type": OCTETS, **extra})
    await response.content()
    return response


def stored(server, location: str) -> bytes:
    with open(server.store.data_path(location.rsplit("/", 1)[1]), "rb") as f:
        return f.read()


@pytest_twisted.ensureDeferred
async def test_options_advertises_checksum(server):
    response = await treq.request("OPTIONS", server.url)
    extensions = response.headers.getRawHeaders("tus-extension")[0].split(",")
    assert "checksum" in extensions and "checksum-trailer" in extensions
    algorithms = response.headers.getRawHeaders("tus-checksum-algorithm")[0].split(",")
    assert algorithms[0] == "sha1"
    assert set(algorithms) == set(DIGESTS)


@pytest.mark.parametrize("algorithm", sorted(DIGESTS))
@pytest_twisted.ensureDeferred
async def test_matching_checksum_is_stored(server, algorithm):
    location = await create(server, 10)
    response = await patch(location, 0, b"hello", **{"Upload-Checksum": f"{algorithm} {b64(DIGESTS[algorithm](b'hello'))}"})
    assert response.code == 204
    assert response.headers.getRawHeaders("upload-offset") == ["5"]
    assert stored(server, location) == b"hello"


@pytest.mark.parametrize("algorithm", sorted(DIGESTS))
@pytest_twisted.ensureDeferred
async def test_mismatch_discards_the_chunk(server, algorithm):
    location = await create(server, 10)
    assert (await patch(location, 0, b"hello")).code == 204
    response = await patch(location, 5, b"world", **{"Upload-Checksum": f"{algorithm} {b64(DIGESTS[algorithm](b'w0rld'))}"})
    assert response.code == 460
    assert await offset_of(location) == 5
    assert stored(server, location) == b"hello"
    # The client retries the same chunk from the same offset.
    response = await patch(location, 5, b"world", **{"Upload-Checksum": f"{algorithm} {b64(DIGESTS[algorithm](b'world'))}"})
    assert response.code == 204
    assert stored(server, location) == b"helloworld"


@pytest.mark.parametrize("value, code", [
    ("sha3 AAAA", "ERR_UNSUPPORTED_CHECKSUM_ALGORITHM"),
    ("sha1", "ERR_INVALID_CHECKSUM"),
    ("sha1 not*base64", "ERR_INVALID_CHECKSUM"),
    ("SHA1 AAAA", "ERR_INVALID_CHECKSUM"),
])
@pytest_twisted.ensureDeferred
async def test_bad_checksum_header_is_400_and_stores_nothing(server, value, code):
    location = await create(server, 10)
    response = await treq.patch(location, b"hello", headers={
        **TUS, "Upload-Offset": "0", "Content-Type": OCTETS, "Upload-Checksum": value})
    body = await response.text()
    assert response.code == 400
    assert body.startswith(code)
    assert await offset_of(location) == 0
    assert stored(server, location) == b""


@pytest_twisted.ensureDeferred
async def test_checksum_on_creation_with_upload(server):
    response = await treq.post(server.url, b"hello", headers={
        **TUS, "Upload-Length": "5", "Content-Type": OCTETS,
        "Upload-Checksum": f"sha1 {b64(hashlib.sha1(b'nope').digest())}"})
    assert response.code == 460
    location = response.headers.getRawHeaders("location")[0]
    assert await offset_of(location) == 0


class _RawExchange(Protocol):
    """Sends one request and collects the response until the peer closes."""

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.received = b""
        self.done: Deferred = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.request)

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if b"\r\n\r\n" in self.received:
            self.transport.loseConnection()

    def connectionLost(self, reason) -> None:
        self.done.callback(self.received)


async def chunked_patch(server, location: str, offset: int, data: bytes, trailer: bytes | None,
                        announce: bool = True) -> bytes:
    path = location.split(str(server.port_number), 1)[1]
    head = (f"PATCH {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nTus-Resumable: 1.0.0\r\n"
            f"Upload-Offset: {offset}\r\nContent-Type: {OCTETS}\r\nTransfer-Encoding: chunked\r\n"
            + ("Trailer: Upload-Checksum\r\n" if announce else "") + "Connection: close\r\n\r\n").encode()
    body = b"%x\r\n%s\r\n0\r\n" % (len(data), data)
    if trailer is not None:
        body += b"Upload-Checksum: " + trailer + b"\r\n"
    body += b"\r\n"
    protocol = _RawExchange(head + body)
    await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", server.port_number), protocol)
    return await protocol.done


@pytest_twisted.ensureDeferred
async def test_trailer_checksum_match_and_mismatch(server):
    location = await create(server, 10)
    bad = b"sha256 " + base64.b64encode(hashlib.sha256(b"nope!").digest())
    answer = await chunked_patch(server, location, 0, b"hello", bad)
    assert answer.startswith(b"HTTP/1.1 460 ")
    assert await offset_of(location) == 0
    good = b"crc32 " + base64.b64encode(zlib.crc32(b"hello").to_bytes(4, "big"))
    answer = await chunked_patch(server, location, 0, b"hello", good)
    assert answer.startswith(b"HTTP/1.1 204 ")
    assert await offset_of(location) == 5
    assert stored(server, location) == b"hello"


@pytest_twisted.ensureDeferred
async def test_announced_trailer_missing_discards_chunk(server):
    location = await create(server, 10)
    answer = await chunked_patch(server, location, 0, b"hello", None)
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"ERR_INVALID_CHECKSUM" in answer
    assert await offset_of(location) == 0


@pytest_twisted.ensureDeferred
async def test_unannounced_trailer_is_not_trusted(server):
    # Without a Trailer header the body is a plain chunk: its bytes are kept
    # as they arrive (like any plain PATCH), and the client is told that the
    # checksum it sent late was not used.
    location = await create(server, 10)
    good = b"sha1 " + base64.b64encode(hashlib.sha1(b"hello").digest())
    answer = await chunked_patch(server, location, 0, b"hello", good, announce=False)
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"ERR_INVALID_CHECKSUM" in answer and b"Upload-Offset: 5" in answer
    assert await offset_of(location) == 5


# A store that cannot stage chunks (issue 11) --------------------------------

class _WithoutStaging:
    """A L{MemoryStore} that offers everything but staged chunks."""

    def __init__(self) -> None:
        from txtus import MemoryStore
        self.inner = MemoryStore()

    def use_in(self, composer) -> None:
        for slot in ("core", "terminater", "concater", "length_deferrer", "reader", "lister"):
            getattr(composer, "use_" + slot)(self.inner)


@pytest_twisted.ensureDeferred
async def test_store_without_staging_refuses_checksums(server_factory):
    server = await server_factory(store=_WithoutStaging())
    response = await treq.request("OPTIONS", server.url)
    await response.content()
    extensions = response.headers.getRawHeaders("tus-extension")[0].split(",")
    assert "checksum" not in extensions and "checksum-trailer" not in extensions
    location = await create(server, 10)
    digest = b64(hashlib.sha1(b"hello").digest())
    response = await patch(location, 0, b"hello", **{"Upload-Checksum": "sha1 " + digest})
    assert response.code == 400
    answer = await chunked_patch(server, location, 0, b"hello", None)
    assert answer.startswith(b"HTTP/1.1 400 ") and b"ERR_UNSUPPORTED_CHECKSUM_ALGORITHM" in answer
    assert await offset_of(location) == 0
    assert (await patch(location, 0, b"hello")).code == 204  # plain PATCHes work
    assert await offset_of(location) == 5
