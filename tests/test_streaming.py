"""
The streaming body path (L{txtus.web.streaming}, L{txtus.web.body} and the resource's
exchange), driven the way Twisted's own C{ChannelProductionTests} drive
C{HTTPChannel}: a real L{TusSite} and channel on a L{StringTransport}, bytes
fed with C{dataReceived}, time moved with a L{Clock}.  No sockets, no sleeps.
"""

from __future__ import annotations

import tracemalloc
from typing import Any

import pytest
from twisted.internet.defer import succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from zope.interface import implementer

from txtus.composer import StoreComposer
from txtus.config import TusConfig
from txtus.stores.file import FileStore
from txtus.interfaces import IChunkWriter, IDataStore
from txtus.lockers.memory import MemoryLocker
from txtus.service import make_site

TUS = b"Tus-Resumable: 1.0.0\r\n"
OCTETS = b"Content-Type: application/offset+octet-stream\r\n"


# A store double with a buffering writer --------------------------------------


@implementer(IChunkWriter)
class BufferingWriter:
    """
    A chunk writer in the shape of a remote store's: it keeps what it gets
    in memory until the test calls L{drain}, pausing its producer above
    C{high} bytes and resuming it once drained below C{low}, as
    L{IChunkWriter} asks.
    """

    def __init__(self, inner: Any, high: int, low: int) -> None:
        self.inner = inner
        self.high = high
        self.low = low
        self.buffer: list[bytes] = []
        self.buffered = 0
        self.producer: Any = None
        self.paused = False

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        assert streaming
        self.producer = producer
        self.inner.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        self.producer = None
        self.inner.unregisterProducer()

    def write(self, data: bytes) -> None:
        self.buffer.append(data)
        self.buffered += len(data)
        if self.buffered > self.high and not self.paused and self.producer is not None:
            self.paused = True
            self.producer.pauseProducing()

    def drain(self, amount: int | None = None) -> None:
        while self.buffer and (amount is None or amount > 0):
            data = self.buffer.pop(0)
            if amount is not None:
                amount -= len(data)
            self.buffered -= len(data)
            self.inner.write(data)
        if self.paused and self.buffered <= self.low:
            self.paused = False
            if self.producer is not None:
                self.producer.resumeProducing()

    def commit(self) -> Any:
        self.drain()
        return self.inner.commit()

    def abort(self) -> Any:
        self.buffer, self.buffered = [], 0
        return self.inner.abort()


class BufferingUpload:
    def __init__(self, inner: Any, store: "BufferingStore") -> None:
        self.inner = inner
        self.store = store
        self.id = inner.id

    def get_info(self) -> Any:
        return self.inner.get_info()

    def finish(self) -> Any:
        return self.inner.finish()

    def open_chunk(self, offset: int) -> Any:
        def wrap(writer: Any) -> BufferingWriter:
            self.store.writer = BufferingWriter(writer, self.store.high, self.store.low)
            return self.store.writer
        return self.inner.open_chunk(offset).addCallback(wrap)


@implementer(IDataStore)
class BufferingStore:
    """A L{FileStore} whose chunk writers buffer (see L{BufferingWriter})."""

    def __init__(self, inner: FileStore, high: int, low: int) -> None:
        self.inner = inner
        self.high = high
        self.low = low
        self.writer: BufferingWriter | None = None

    def new_upload(self, info: Any) -> Any:
        return self.inner.new_upload(info).addCallback(BufferingUpload, self)

    def get_upload(self, upload_id: str) -> Any:
        return self.inner.get_upload(upload_id).addCallback(BufferingUpload, self)


# A server on a StringTransport ---------------------------------------------


class Server:
    def __init__(self, tmp_path: Any, core: Any = None, network_timeout: float = 60.0,
                 min_upload_rate: float = 0.0) -> None:
        self.clock = Clock()
        self.files = FileStore(str(tmp_path / "uploads"))
        composer = StoreComposer()
        if core is None:
            self.files.use_in(composer)
        else:
            composer.use_core(core)
        self.locker = MemoryLocker(reactor=self.clock)
        self.locker.use_in(composer)
        self.config = TusConfig(composer=composer, reactor=self.clock, network_timeout=network_timeout,
                                min_upload_rate=min_upload_rate)
        self.site = make_site(self.config)

    def connect(self) -> "Connection":
        return Connection(self)

    def create(self, length: int) -> str:
        connection = self.connect()
        connection.send(b"POST /files/ HTTP/1.1\r\nHost: h\r\n" + TUS + b"Upload-Length: %d\r\n\r\n" % length)
        (status, headers, _), = connection.responses()
        assert status == 201
        return headers[b"location"].rsplit(b"/", 1)[1].decode()

    def stored(self, upload_id: str) -> bytes:
        with open(self.files.data_path(upload_id), "rb") as f:
            return f.read()

    def stored_size(self, upload_id: str) -> int:
        import os
        return os.path.getsize(self.files.data_path(upload_id))

    def head_offset(self, upload_id: str) -> int:
        connection = self.connect()
        connection.send(b"HEAD /files/%s HTTP/1.1\r\nHost: h\r\n" % upload_id.encode() + TUS + b"\r\n")
        (status, headers, _), = connection.responses()
        assert status == 200
        return int(headers[b"upload-offset"])


class Connection:
    def __init__(self, server: Server) -> None:
        self.server = server
        self.protocol = server.site.buildProtocol(None)
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)
        self._read = 0

    def send(self, data: bytes) -> None:
        self.protocol.dataReceived(data)
        self.server.clock.advance(0)

    def patch_head(self, upload_id: str, offset: int, length: int, extra: bytes = b"") -> bytes:
        return (b"PATCH /files/%s HTTP/1.1\r\nHost: h\r\n" % upload_id.encode() + TUS + OCTETS
                + b"Upload-Offset: %d\r\nContent-Length: %d\r\n" % (offset, length) + extra + b"\r\n")

    def drop(self) -> None:
        self.protocol.connectionLost(Failure(ConnectionDone("client went away")))
        self.server.clock.advance(0)

    def output(self) -> bytes:
        """Bytes the server wrote since the last call."""
        value = self.transport.value()
        new, self._read = value[self._read:], len(value)
        return new

    def responses(self) -> list[tuple[int, dict[bytes, bytes], bytes]]:
        return parse_responses(self.output())


def parse_responses(data: bytes) -> list[tuple[int, dict[bytes, bytes], bytes]]:
    """Split HTTP/1.1 responses (1xx included); bodies by Content-Length."""
    result = []
    while data:
        head, sep, data = data.partition(b"\r\n\r\n")
        assert sep, f"incomplete response head: {head!r}"
        status_line, *lines = head.split(b"\r\n")
        version, status, _ = status_line.split(b" ", 2)
        assert version == b"HTTP/1.1"
        headers = {}
        for line in lines:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get(b"content-length", b"0"))
        body, data = data[:length], data[length:]
        result.append((int(status), headers, body))
    return result


@pytest.fixture
def server(tmp_path: Any) -> Server:
    return Server(tmp_path)


# Streaming -------------------------------------------------------------------


def test_patch_body_reaches_the_file_as_it_arrives(server: Server) -> None:
    upload_id = server.create(1000)
    connection = server.connect()
    connection.send(connection.patch_head(upload_id, 0, 1000))
    for sent in range(100, 1001, 100):
        connection.send(b"%d" % (sent // 100 % 10) * 100)
        assert server.stored_size(upload_id) == sent
        if sent < 1000:
            assert connection.output() == b""
    (status, headers, _), = connection.responses()
    assert status == 204
    assert headers[b"upload-offset"] == b"1000"
    assert server.stored(upload_id) == b"".join(b"%d" % (i % 10) * 100 for i in range(1, 11))
    assert not connection.transport.disconnecting


def test_streamed_request_buffers_nothing(server: Server) -> None:
    upload_id = server.create(10)
    connection = server.connect()
    connection.send(connection.patch_head(upload_id, 0, 10) + b"0123456789")
    request = connection.protocol._channel.requests[0] if connection.protocol._channel.requests else None
    assert connection.responses()[0][0] == 204
    assert request is None or request.content.getvalue() == b""


def test_creation_with_upload_streams(server: Server) -> None:
    connection = server.connect()
    connection.send(b"POST /files/ HTTP/1.1\r\nHost: h\r\n" + TUS + OCTETS
                    + b"Upload-Length: 20\r\nContent-Length: 8\r\n\r\n" + b"abcd")
    upload_ids = [name for name in __import__("os").listdir(server.files.path) if not name.endswith(".info")]
    assert len(upload_ids) == 1
    assert server.stored(upload_ids[0]) == b"abcd"
    connection.send(b"efgh")
    (status, headers, _), = connection.responses()
    assert status == 201
    assert headers[b"upload-offset"] == b"8"
    assert server.stored(upload_ids[0]) == b"abcdefgh"


# Backpressure ----------------------------------------------------------------


def test_store_backpressure_pauses_the_transport(tmp_path: Any) -> None:
    """
    A writer above its high-water mark pauses the body, which pauses the
    socket; draining it resumes the socket.
    """
    files = FileStore(str(tmp_path / "uploads"))
    store = BufferingStore(files, high=16 * 1024, low=4 * 1024)
    server = Server(tmp_path, core=store)
    upload_id = server.create(100 * 1024)
    connection = server.connect()
    transport = connection.transport
    connection.send(connection.patch_head(upload_id, 0, 100 * 1024))
    assert transport.producerState == "producing"
    piece = b"p" * 8192
    connection.send(piece)
    connection.send(piece)
    assert transport.producerState == "producing"
    connection.send(piece)
    assert store.writer is not None and store.writer.buffered == 24 * 1024
    assert transport.producerState == "paused"

    store.writer.drain(8 * 1024)  # still above the low-water mark
    assert transport.producerState == "paused"
    store.writer.drain()
    assert transport.producerState == "producing"
    assert server.stored_size(upload_id) == 24 * 1024

    for _ in range(9):
        connection.send(piece)
        store.writer.drain()
    connection.send(b"p" * (100 * 1024 - 12 * 8192))
    (status, headers, _), = connection.responses()
    assert status == 204
    assert headers[b"upload-offset"] == b"%d" % (100 * 1024)
    assert server.stored(upload_id) == b"p" * 100 * 1024
    assert transport.producerState == "producing"


@pytest.mark.parametrize("min_upload_rate", [0, 100])
def test_backpressure_is_not_a_network_timeout(tmp_path: Any, min_upload_rate: float) -> None:
    """A body paused by its store for long does not time out, nor count as slow."""
    files = FileStore(str(tmp_path / "uploads"))
    store = BufferingStore(files, high=1024, low=0)
    server = Server(tmp_path, core=store, network_timeout=10, min_upload_rate=min_upload_rate)
    upload_id = server.create(4096)
    connection = server.connect()
    connection.send(connection.patch_head(upload_id, 0, 4096) + b"x" * 2048)
    assert connection.transport.producerState == "paused"
    for _ in range(10):
        server.clock.advance(5)
    assert connection.output() == b""
    store.writer.drain()
    connection.send(b"x" * 2048)
    assert connection.responses()[0][0] == 204
    assert server.stored_size(upload_id) == 4096


# Interrupted bodies ------------------------------------------------------------


def test_dropped_connection_keeps_every_byte_and_resumes(server: Server) -> None:
    upload_id = server.create(1000)
    connection = server.connect()
    connection.send(connection.patch_head(upload_id, 0, 1000) + b"a" * 300)
    connection.send(b"b" * 123)
    connection.drop()
    assert server.stored(upload_id) == b"a" * 300 + b"b" * 123
    assert server.head_offset(upload_id) == 423
    assert not server.locker.is_locked(upload_id)

    resumed = server.connect()
    resumed.send(resumed.patch_head(upload_id, 423, 577) + b"c" * 577)
    (status, headers, _), = resumed.responses()
    assert status == 204
    assert headers[b"upload-offset"] == b"1000"
    assert server.stored(upload_id) == b"a" * 300 + b"b" * 123 + b"c" * 577


def test_dropped_connection_right_after_headers(server: Server) -> None:
    upload_id = server.create(10)
    connection = server.connect()
    connection.send(connection.patch_head(upload_id, 0, 10))
    connection.drop()
    assert server.head_offset(upload_id) == 0
    assert not server.locker.is_locked(upload_id)


def test_network_timeout_answers_and_keeps_bytes(tmp_path: Any) -> None:
    server = Server(tmp_path, network_timeout=10)
    upload_id = server.create(1000)
    connection = server.connect()
    connection.send(connection.patch_head(upload_id, 0, 1000) + b"t" * 250)
    for _ in range(9):
        server.clock.advance(1)
    assert connection.output() == b""
    server.clock.advance(1)  # network_timeout after the last byte, not later
    (status, headers, body), = connection.responses()
    assert status == 500
    assert body.startswith(b"ERR_READ_TIMEOUT")
    assert headers.get(b"connection") == b"close"
    assert connection.transport.disconnecting
    assert server.stored(upload_id) == b"t" * 250
    assert not server.locker.is_locked(upload_id)
    assert server.head_offset(upload_id) == 250


def test_idle_timeout_returns_after_the_body(tmp_path: Any) -> None:
    """
    The channel's idle timeout, off while the body streams, is back for
    the kept-alive connection once the response is sent.
    """
    server = Server(tmp_path, network_timeout=10)
    upload_id = server.create(4)
    connection = server.connect()
    connection.send(connection.patch_head(upload_id, 0, 4) + b"abcd")
    assert connection.responses()[0][0] == 204
    server.clock.advance(9)
    assert not connection.transport.disconnecting
    server.clock.advance(1)
    assert connection.transport.disconnecting


def test_trickling_bytes_do_not_time_out(tmp_path: Any) -> None:
    server = Server(tmp_path, network_timeout=10)
    upload_id = server.create(20)
    connection = server.connect()
    connection.send(connection.patch_head(upload_id, 0, 20))
    for _ in range(19):
        connection.send(b"z")
        server.clock.advance(6)
    assert connection.output() == b""
    connection.send(b"z")
    assert connection.responses()[0][0] == 204


def test_minimum_rate_cuts_a_trickle_and_keeps_its_bytes(tmp_path: Any) -> None:
    server = Server(tmp_path, network_timeout=10, min_upload_rate=100)
    upload_id = server.create(5000)
    connection = server.connect()
    connection.send(connection.patch_head(upload_id, 0, 5000))
    for _ in range(10):  # 150 B/s for the first 10 s: fast enough
        connection.send(b"a" * 150)
        server.clock.advance(1)
    assert connection.output() == b""
    for _ in range(10):  # then 1 byte a second: below 100 B/s
        connection.send(b"z")
        server.clock.advance(1)
    (status, headers, body), = connection.responses()
    assert status == 500 and body.startswith(b"ERR_READ_TIMEOUT")
    assert server.stored(upload_id) == b"a" * 1500 + b"z" * 10


# Early rejection -----------------------------------------------------------------


@pytest.mark.parametrize("target", ["wrong-offset", "unknown"])
def test_early_rejection_of_large_body_closes(server: Server, target: str) -> None:
    upload_id = server.create(10 * 1024 * 1024)
    if target == "unknown":
        upload_id, offset, expected = "0" * 32, 0, 404
    else:
        offset, expected = 5, 409
    connection = server.connect()
    connection.send(connection.patch_head(upload_id, offset, 10 * 1024 * 1024) + b"x" * 1000)
    (status, headers, _), = connection.responses()
    assert status == expected
    assert headers[b"connection"] == b"close"
    assert connection.transport.disconnecting
    if target != "unknown":
        assert server.stored_size(upload_id) == 0


@pytest.mark.parametrize("target", ["wrong-offset", "unknown"])
def test_early_rejection_of_small_body_keeps_connection(server: Server, target: str) -> None:
    upload_id = server.create(100)
    patched = "f" * 32 if target == "unknown" else upload_id
    connection = server.connect()
    connection.send(connection.patch_head(patched, 7 if target != "unknown" else 0, 100) + b"y" * 40)
    assert connection.output() == b""  # answered only once the body is read
    connection.send(b"y" * 60 + b"HEAD /files/%s HTTP/1.1\r\nHost: h\r\n" % upload_id.encode() + TUS + b"\r\n")
    (status, headers, _), (head_status, head_headers, _) = connection.responses()
    assert status == (404 if target == "unknown" else 409)
    assert b"connection" not in headers
    assert head_status == 200
    assert head_headers[b"upload-offset"] == b"0"
    assert not connection.transport.disconnecting
    assert server.stored_size(upload_id) == 0


def test_oversized_body_refused_before_reading(server: Server) -> None:
    upload_id = server.create(100)
    connection = server.connect()
    connection.send(connection.patch_head(upload_id, 0, 1024 * 1024) + b"x" * 100)
    (status, headers, body), = connection.responses()
    assert status == 413
    assert connection.transport.disconnecting
    assert server.stored_size(upload_id) == 0


# Expect: 100-continue ------------------------------------------------------------


CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
EXPECT = b"Expect: 100-continue\r\n"


def test_continue_only_once_locked_and_found(server: Server) -> None:
    upload_id = server.create(5)
    held = []
    server.locker.lock(upload_id, lambda: held.append("release asked")).addCallback(held.append)
    connection = server.connect()
    connection.send(connection.patch_head(upload_id, 0, 5, EXPECT))
    assert connection.output() == b""  # still waiting for the lock
    assert held[1:] == ["release asked"]
    held[0].unlock()
    server.clock.advance(0)
    assert connection.output() == CONTINUE
    connection.send(b"hello")
    (status, _, _), = connection.responses()
    assert status == 204
    assert server.stored(upload_id) == b"hello"


def test_body_started_at_once_never_pauses_the_socket(server: Server) -> None:
    """With a store and locker that answer at once, reading is not paused and resumed per request."""
    upload_id = server.create(5)
    connection = server.connect()
    pauses = []
    pause = connection.transport.pauseProducing
    connection.transport.pauseProducing = lambda: (pauses.append("paused"), pause())
    connection.send(connection.patch_head(upload_id, 0, 5) + b"hello")
    (status, _, _), = connection.responses()
    assert status == 204
    assert pauses == []
    assert server.stored(upload_id) == b"hello"


def test_bytes_arriving_while_the_lock_is_held_pause_reading(server: Server) -> None:
    """The first bytes that arrive before the handler is ready are kept, and stop further reads."""
    upload_id = server.create(10)
    held = []
    server.locker.lock(upload_id, lambda: None).addCallback(held.append)
    connection = server.connect()
    connection.send(connection.patch_head(upload_id, 0, 10))
    assert connection.transport.producerState == "producing"
    connection.send(b"hello")
    assert connection.transport.producerState == "paused"
    held[0].unlock()
    server.clock.advance(0)
    assert connection.transport.producerState == "producing"
    assert server.stored(upload_id) == b"hello"
    connection.send(b"world")
    (status, headers, _), = connection.responses()
    assert status == 204
    assert headers[b"upload-offset"] == b"10"
    assert server.stored(upload_id) == b"helloworld"


@pytest.mark.parametrize("target", ["wrong-offset", "unknown"])
def test_no_continue_before_rejection(server: Server, target: str) -> None:
    upload_id = server.create(5)
    if target == "unknown":
        upload_id = "a" * 32
    connection = server.connect()
    connection.send(connection.patch_head(upload_id, 3 if target != "unknown" else 0, 5, EXPECT))
    output = connection.output()
    assert CONTINUE not in output
    (status, headers, _), = parse_responses(output)
    assert status == (404 if target == "unknown" else 409)
    assert headers[b"connection"] == b"close"


# Memory ------------------------------------------------------------------------


def test_large_body_is_never_accumulated(server: Server) -> None:
    """
    64 MiB in 64 KiB reads: nothing is buffered in the request, and the
    Python heap never holds more than a few pieces at once.
    """
    size, piece = 64 * 1024 * 1024, b"m" * 65536
    upload_id = server.create(size)
    connection = server.connect()
    connection.send(connection.patch_head(upload_id, 0, size))
    request = connection.protocol._channel.requests[0]
    tracemalloc.start()
    try:
        for i in range(size // len(piece)):
            connection.protocol.dataReceived(piece)
            if i == 512:
                assert request.content.getvalue() == b""
                assert server.stored_size(upload_id) == 513 * len(piece)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    connection.server.clock.advance(0)
    assert peak < 1024 * 1024, peak
    (status, headers, _), = connection.responses()
    assert status == 204
    assert headers[b"upload-offset"] == b"%d" % size
    assert server.stored_size(upload_id) == size


def test_headers_trickled_past_the_timeout_are_cut(server: Server) -> None:
    """The idle timeout restarts with each byte; the header block has a deadline."""
    # The site's header deadline is the network timeout: 60 s here.
    connection = server.connect()
    connection.send(b"OPTIONS /files/ HTTP/1.1\r\n")
    for _ in range(59):
        connection.send(b"X")
        server.clock.advance(1)
    assert not connection.transport.disconnecting
    server.clock.advance(1)
    assert connection.transport.disconnecting
    assert connection.output() == b""


def test_header_deadline_ends_with_the_headers(server: Server) -> None:
    connection = server.connect()
    connection.send(b"OPTIONS /files/ HTTP/1.1\r\nHost: h\r\n\r\n")
    assert connection.responses()[0][0] == 200
    server.clock.advance(59)
    connection.send(b"OPTIONS /files/ HTTP/1.1\r\nHost: h\r\n\r\n")
    assert connection.responses()[0][0] == 200
    server.clock.advance(30)
    assert not connection.transport.disconnecting



def test_each_request_gets_its_own_header_deadline(server: Server) -> None:
    """
    One timer serves all requests: the first one's deadline passes without
    cutting anyone, and each later request is cut at its own deadline.
    """
    early = server.connect()
    early.send(b"OPTIONS /files/ HTTP/1.1\r\nHost: h\r\n\r\n")
    assert early.responses()[0][0] == 200
    server.clock.advance(30)
    late = server.connect()
    late.send(b"OPTIONS /files/ HTTP/1.1\r\n")
    slower = None
    for second in range(59):
        late.send(b"X")
        if second == 9:
            slower = server.connect()  # begins 9 s after the late one
            slower.send(b"OPTIONS /files/ HTTP/1.1\r\n")
        server.clock.advance(1)
    assert not late.transport.disconnecting
    server.clock.advance(1)
    assert late.transport.disconnecting and not slower.transport.disconnecting
    server.clock.advance(8.5)
    assert not slower.transport.disconnecting
    server.clock.advance(0.5)
    assert slower.transport.disconnecting



def test_the_header_deadline_timer_stops_with_the_site(server: Server) -> None:
    """No timer of the site outlives it (a dirty reactor in tests, a call after shutdown)."""
    connection = server.connect()
    connection.send(b"OPTIONS /files/ HTTP/1.1\r\nHost: h\r\n\r\n")
    assert connection.responses()[0][0] == 200
    assert any(call.func == server.site._cut_slow_headers for call in server.clock.getDelayedCalls())
    server.site.doStart()
    server.site.doStop()
    assert not any(call.func == server.site._cut_slow_headers for call in server.clock.getDelayedCalls())

# Lock release for silent holders only (lock_release_after = 0.5 s) -----------


def test_release_waits_while_the_body_flows_then_interrupts_once_silent(server: Server) -> None:
    upload_id = server.create(100)
    holder = server.connect()
    holder.send(holder.patch_head(upload_id, 0, 100) + b"x" * 10)
    newcomer = server.connect()
    newcomer.send(newcomer.patch_head(upload_id, 15, 85))  # where the holder will stop
    for _ in range(5):  # a byte every 0.4 s: never silent for 0.5 s
        server.clock.advance(0.4)
        holder.send(b"x")
        assert holder.output() == b"" and newcomer.output() == b""
    server.clock.advance(0.49)
    assert holder.output() == b""
    server.clock.advance(0.01)
    (status, headers, body), = holder.responses()
    assert (status, body.split(b":")[0]) == (400, b"ERR_UPLOAD_INTERRUPTED")
    newcomer.send(b"y" * 85)
    (status, headers, _), = newcomer.responses()
    assert (status, headers[b"upload-offset"]) == (204, b"100")  # the holder's 15 bytes, then 85
    assert server.stored(upload_id) == b"x" * 15 + b"y" * 85


def test_store_backpressure_is_not_client_silence(tmp_path) -> None:
    """
    A body held paused by a slow store is not silent, however long: it is
    not interrupted, and a HEAD answers beside it.
    """
    store = BufferingStore(FileStore(str(tmp_path / "uploads")), high=10, low=0)
    server = Server(tmp_path, core=store)
    upload_id = server.create(100)
    holder = server.connect()
    holder.send(holder.patch_head(upload_id, 0, 100) + b"x" * 50)
    assert store.writer.paused
    newcomer = server.connect()
    newcomer.send(newcomer.patch_head(upload_id, 0, 1))
    server.clock.advance(5)
    assert holder.output() == b"" and newcomer.output() == b""
    assert server.head_offset(upload_id) == 0  # nothing committed yet
    store.writer.drain()
    holder.send(b"x" * 50)
    (status, headers, _), = holder.responses()
    assert (status, headers[b"upload-offset"]) == (204, b"100")
    newcomer.send(b"y")
    (status, _, _), = newcomer.responses()
    assert status == 409
