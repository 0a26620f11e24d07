"""
Tests for L{txtus.web._twisted_private}: each private-API helper against a real
L{HTTPChannel} fed through a L{StringTransport}, so a Twisted release that
renames the internals they rely on fails here, loudly and in one place.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.web import http
from twisted.web.test.requesthelper import DummyChannel

from txtus.web import _twisted_private


class RecordingRequest(http.Request):
    """
    A plain request that runs a test-supplied hook when its headers are in
    (C{gotLength}), keeps the body chunks it is given, and answers once the
    body is complete.
    """

    at_headers: Any = None
    answer: Any = None
    instances: list["RecordingRequest"] = []

    def gotLength(self, length: int | None) -> None:
        self.chunks: list[bytes] = []
        self.seen: dict[str, Any] = {}
        type(self).instances.append(self)
        if self.at_headers is not None:
            self.at_headers(self)
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        self.chunks.append(data)
        super().handleContentChunk(data)

    def process(self) -> None:
        if self.answer is not None:
            self.answer(self)
        else:
            self.setHeader(b"content-length", b"2")
            self.write(b"ok")
            self.finish()


def connect(at_headers: Any = None, answer: Any = None) -> tuple[http.HTTPChannel, StringTransport]:
    factory = type("Factory", (RecordingRequest,), {"at_headers": staticmethod(at_headers) if at_headers else None,
                                                     "answer": staticmethod(answer) if answer else None,
                                                     "instances": []})
    channel = http.HTTPChannel()
    channel.requestFactory = factory
    channel.clock = Clock()  # type: ignore[attr-defined]
    channel.callLater = channel.clock.callLater
    transport = StringTransport()
    channel.makeConnection(transport)
    channel.factory_class = factory  # type: ignore[attr-defined]
    return channel, transport


# request_line ------------------------------------------------------------


def test_request_line_at_got_length_http11() -> None:
    channel, _ = connect(at_headers=lambda r: r.seen.update(line=_twisted_private.request_line(r),
                                                            method=r.method))
    channel.dataReceived(b"PATCH /files/abc?x=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\n")
    request = channel.factory_class.instances[0]
    assert request.seen["line"] == (b"PATCH", b"/files/abc?x=1", b"HTTP/1.1")
    # The reason the helper exists: twisted.web has not set it yet.
    assert request.seen["method"] != b"PATCH"


def test_request_line_http10() -> None:
    channel, _ = connect(at_headers=lambda r: r.seen.update(line=_twisted_private.request_line(r)))
    channel.dataReceived(b"POST /up HTTP/1.0\r\nContent-Length: 1\r\n\r\n")
    assert channel.factory_class.instances[0].seen["line"] == (b"POST", b"/up", b"HTTP/1.0")


def test_request_line_unknown_channel() -> None:
    """A channel that does not expose the request line gives L{None}."""
    request = http.Request(DummyChannel())
    assert _twisted_private.request_line(request) is None


def test_request_line_per_pipelined_request() -> None:
    lines = []
    channel, transport = connect(at_headers=lambda r: lines.append(_twisted_private.request_line(r)))
    channel.dataReceived(b"PATCH /one HTTP/1.1\r\nContent-Length: 1\r\n\r\nx"
                         b"POST /two HTTP/1.1\r\nContent-Length: 1\r\n\r\ny")
    assert lines == [(b"PATCH", b"/one", b"HTTP/1.1"), (b"POST", b"/two", b"HTTP/1.1")]


# transport_producer ----------------------------------------------------


def test_transport_producer_pauses_the_socket() -> None:
    def at_headers(request: Any) -> None:
        producer = _twisted_private.transport_producer(request)
        request.seen["producer"] = producer
        producer.pauseProducing()

    channel, transport = connect(at_headers=at_headers)
    channel.dataReceived(b"PATCH /a HTTP/1.1\r\nContent-Length: 10\r\n\r\n")
    assert channel.factory_class.instances[0].seen["producer"] is transport
    assert transport.producerState == "paused"


def test_transport_producer_without_channel() -> None:
    request = http.Request(DummyChannel())
    request.channel = None
    assert _twisted_private.transport_producer(request) is None


# suspend_idle_timeout / restore_idle_timeout ---------------------------------


def idle_channel() -> tuple[http.HTTPChannel, StringTransport, list]:
    saved: list = []

    def at_headers(request: Any) -> None:
        saved.append(_twisted_private.suspend_idle_timeout(request))

    def answer(request: Any) -> None:
        # As TusRequest does: hand the timeout back when the body is
        # complete, before the response is written.
        _twisted_private.restore_idle_timeout(request, saved[0], body_complete=True)
        request.setHeader(b"content-length", b"0")
        request.finish()

    channel, transport = connect(at_headers=at_headers, answer=answer)
    channel.setTimeout(10)
    channel.dataReceived(b"PATCH /a HTTP/1.1\r\nContent-Length: 2\r\n\r\n")
    return channel, transport, saved


def test_idle_timeout_suspended_while_body_is_slow() -> None:
    channel, transport, saved = idle_channel()
    assert saved == [10]
    channel.clock.advance(100)
    assert not transport.disconnecting


def test_idle_timeout_handed_back_after_complete_body() -> None:
    channel, transport, saved = idle_channel()
    channel.dataReceived(b"ab")
    assert transport.value().startswith(b"HTTP/1.1 200 ")
    channel.clock.advance(9)
    assert not transport.disconnecting
    channel.clock.advance(1)
    assert transport.disconnecting


def test_idle_timeout_rearmed_for_unread_body() -> None:
    channel, transport, saved = idle_channel()
    request = channel.factory_class.instances[0]
    _twisted_private.restore_idle_timeout(request, saved[0], body_complete=False)
    channel.clock.advance(10)
    assert transport.disconnecting


# close_after_response -----------------------------------------------------


def answer_early(channel: http.HTTPChannel, close: bool) -> Any:
    """Answer a PATCH whose body has only partly arrived, as txtus does."""
    channel.dataReceived(b"PATCH /a HTTP/1.1\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)
    request = channel.factory_class.instances[0]
    request.clientproto = b"HTTP/1.1"  # TusRequest sets it from request_line()
    if close:
        _twisted_private.close_after_response(request)
    request.setResponseCode(409)
    request.setHeader(b"content-length", b"0")
    request.finish()
    return request


def test_close_after_response_closes() -> None:
    """
    Answered before its body was read, a request's remaining body bytes
    must not be parsed as a next request: the connection closes instead.
    """
    channel, transport = connect()
    answer_early(channel, close=True)
    response = transport.value()
    assert response.startswith(b"HTTP/1.1 409 ")
    assert b"\r\nConnection: close\r\n" in response
    assert not channel.persistent
    assert transport.disconnecting


def test_without_close_after_response_connection_stays() -> None:
    """The control for the test above: twisted.web alone would keep it."""
    channel, transport = connect()
    answer_early(channel, close=False)
    assert b"Connection: close" not in transport.value()
    assert not transport.disconnecting


# capture_trailers ----------------------------------------------------------


def trailers_of(request: Any) -> list[tuple[bytes, list[bytes]]]:
    return sorted(request.trailers.getAllRawHeaders())


def test_capture_trailers_on_chunked_body() -> None:
    channel, transport = connect(at_headers=_twisted_private.capture_trailers)
    channel.dataReceived(b"PATCH /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                         b"5\r\nhello\r\n6\r\n world\r\n0\r\n"
                         b"Upload-Checksum: sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0=\r\nX-Other:  v \r\n\r\n")
    request = channel.factory_class.instances[0]
    assert b"".join(request.chunks) == b"hello world"
    assert trailers_of(request) == [(b"Upload-Checksum", [b"sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0="]),
                                    (b"X-Other", [b"v"])]
    assert transport.value().startswith(b"HTTP/1.1 200 ")


def test_capture_trailers_split_across_reads() -> None:
    channel, _ = connect(at_headers=_twisted_private.capture_trailers)
    data = (b"PATCH /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n0\r\nUpload-Checksum: md5 xyz\r\n\r\n")
    for i in range(len(data)):
        channel.dataReceived(data[i:i + 1])
    request = channel.factory_class.instances[0]
    assert trailers_of(request) == [(b"Upload-Checksum", [b"md5 xyz"])]


def test_capture_trailers_without_trailers_or_chunking() -> None:
    channel, _ = connect(at_headers=_twisted_private.capture_trailers)
    channel.dataReceived(b"PATCH /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n"
                         b"PATCH /b HTTP/1.1\r\nContent-Length: 2\r\n\r\nyz")
    first, second = channel.factory_class.instances
    assert trailers_of(first) == []
    assert trailers_of(second) == []
    assert b"".join(second.chunks) == b"yz"


# watch_chunk_sizes ---------------------------------------------------------


def _watch(sizes: list[Any]) -> Any:
    def at_headers(request: Any) -> None:
        def announced(size: int) -> None:
            sizes.append((size, b"".join(request.chunks)))
        _twisted_private.watch_chunk_sizes(request, announced)
    return at_headers


def test_watch_chunk_sizes_before_each_chunk_is_delivered() -> None:
    sizes: list[Any] = []
    channel, _ = connect(at_headers=_watch(sizes))
    data = (b"PATCH /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
    for i in range(len(data)):
        channel.dataReceived(data[i:i + 1])
    request = channel.factory_class.instances[0]
    assert b"".join(request.chunks) == b"hello world"
    # Each size is seen before any byte of its chunk arrived.
    assert sizes == [(5, b""), (6, b"hello")]


def test_watch_chunk_sizes_sees_absurd_sizes() -> None:
    sizes: list[Any] = []
    channel, _ = connect(at_headers=_watch(sizes))
    channel.dataReceived(b"PATCH /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                         b"ffffffffffffffffffffffff\r\nhello")
    assert sizes == [(2 ** 96 - 1, b"")]


def test_watch_chunk_sizes_without_chunking() -> None:
    sizes: list[Any] = []
    channel, _ = connect(at_headers=_watch(sizes))
    channel.dataReceived(b"PATCH /b HTTP/1.1\r\nContent-Length: 2\r\n\r\nyz")
    assert sizes == []
    assert b"".join(channel.factory_class.instances[0].chunks) == b"yz"


# write_informational --------------------------------------------------------


def test_write_informational_before_final_response() -> None:
    def answer(request: Any) -> None:
        request.seen["sent"] = _twisted_private.write_informational(
            request, 103, b"Early Hints", [(b"Link", b"</a>; rel=preload")])
        request.setHeader(b"content-length", b"0")
        request.finish()
        request.seen["after"] = _twisted_private.write_informational(request, 100, b"Continue", [])

    channel, transport = connect(answer=answer)
    channel.dataReceived(b"PATCH /a HTTP/1.1\r\nContent-Length: 1\r\n\r\nx")
    request = channel.factory_class.instances[0]
    assert request.seen == {"sent": True, "after": False}
    value = transport.value()
    assert value.startswith(b"HTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\n")


def test_write_informational_at_headers() -> None:
    """At C{gotLength} (before the body), as C{100 Continue} is sent."""
    def at_headers(request: Any) -> None:
        request.seen["sent"] = _twisted_private.write_informational(request, 100, b"Continue", [])

    channel, transport = connect(at_headers=at_headers)
    channel.dataReceived(b"PATCH /a HTTP/1.1\r\nContent-Length: 1\r\n\r\n")
    assert channel.factory_class.instances[0].seen["sent"] is True
    assert transport.value() == b"HTTP/1.1 100 Continue\r\n\r\n"


def test_write_informational_not_on_http10() -> None:
    def at_headers(request: Any) -> None:
        request.seen["sent"] = _twisted_private.write_informational(request, 100, b"Continue", [])

    channel, transport = connect(at_headers=at_headers)
    channel.dataReceived(b"PATCH /a HTTP/1.0\r\nContent-Length: 1\r\n\r\n")
    assert channel.factory_class.instances[0].seen["sent"] is False
    assert transport.value() == b""


def test_set_read_size_on_tcp_transport():
    from twisted.internet import tcp
    from txtus.web._twisted_private import set_read_size

    class Request:
        pass

    class Channel:
        pass

    request, channel = Request(), Channel()
    transport = tcp.Connection.__new__(tcp.Connection)
    channel.transport, request.channel = transport, channel
    assert transport.bufferSize == 64 * 1024
    set_read_size(request, 256 * 1024)
    assert transport.bufferSize == 256 * 1024
    assert tcp.Connection.bufferSize == 64 * 1024  # only this connection
    channel.transport = object()
    set_read_size(request, 1)  # a transport without reads of its own: ignored


# HTTP/2 (twisted.web._http2) -------------------------------------------------

def _h2_stream(headers: list[tuple[bytes, bytes]]) -> Any:
    """An H2Stream built as H2Connection builds one, on a request that records gotLength."""
    from twisted.web._http2 import H2Connection, H2Stream

    seen: dict[str, Any] = {}

    class Recording(http.Request):
        def gotLength(self, length: int | None) -> None:
            seen["headers complete"] = _twisted_private.headers_complete_at_got_length(self)
            seen["upload-offset"] = self.getHeader(b"upload-offset")
            seen["request line"] = _twisted_private.request_line(self)
            super().gotLength(length)

    connection = H2Connection(Clock())
    connection.makeConnection(StringTransport())
    stream = H2Stream(1, connection, headers, Recording, None, None)
    return stream, connection, seen


def test_h2_calls_gotlength_at_content_length_before_later_headers():
    stream, _, seen = _h2_stream([(b":method", b"PATCH"), (b":path", b"/files/x"), (b":authority", b"h"),
                                  (b"content-length", b"5"), (b"upload-offset", b"0")])
    # The reason TusRequest waits for the first body chunk on HTTP/2.
    assert seen == {"headers complete": False, "upload-offset": None,
                    "request line": (b"PATCH", b"/files/x", b"HTTP/2")}
    assert _twisted_private.transport_producer(stream._request) is stream


def test_h2_without_content_length_has_every_header_at_gotlength():
    _, _, seen = _h2_stream([(b":method", b"PATCH"), (b":path", b"/files/x"), (b"upload-offset", b"0")])
    assert seen["headers complete"] is True
    assert seen["upload-offset"] == b"0"


def test_h2_private_names_used_still_exist():
    from twisted.web._http2 import H2Connection, H2Stream

    connection = H2Connection(Clock())
    assert isinstance(connection._streamCleanupCallbacks, dict)
    assert callable(connection._tryToWriteControlData)
    assert callable(H2Stream._send100Continue)
    stream, _, _ = _h2_stream([(b":method", b"GET"), (b":path", b"/")])
    assert stream._conn is not None and stream.streamID == 1
    assert list(stream._inboundDataBuffer) == []


def test_h2_names_for_trailers_and_interim_responses_still_exist():
    """What watch_protocol_switch, received_trailers and write_informational rely on."""
    from h2.events import TrailersReceived  # noqa: F401
    from h2.exceptions import ProtocolError, StreamClosedError
    from twisted.web._http2 import H2Connection
    from twisted.web.http import HTTPChannel, _GenericHTTPChannelProtocol

    protocol = _GenericHTTPChannelProtocol(HTTPChannel())
    assert protocol._negotiatedProtocol is None and isinstance(protocol._channel, HTTPChannel)
    connection = H2Connection(Clock())
    assert callable(connection.conn.receive_data) and callable(connection.conn.send_headers)
    assert callable(connection._requestDone) and connection.conn.local_settings.max_concurrent_streams > 0
    assert isinstance(connection.streams, dict)
    assert issubclass(StreamClosedError, ProtocolError)


def test_watch_protocol_switch_keeps_http11_working():
    from twisted.web.http import HTTPChannel, _GenericHTTPChannelProtocol

    class Hello(http.Request):
        def process(self) -> None:
            self.write(b"hello")
            self.finish()

    protocol = _GenericHTTPChannelProtocol(HTTPChannel())
    protocol.requestFactory = Hello
    _twisted_private.watch_protocol_switch(protocol)
    transport = StringTransport()
    protocol.makeConnection(transport)
    protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert protocol._negotiatedProtocol == b"http/1.1"
    assert "dataReceived" not in vars(protocol)  # the wrapper steps aside after the first read
    assert transport.value().startswith(b"HTTP/1.1 200") and transport.value().endswith(b"hello\r\n0\r\n\r\n")


def test_received_trailers_of_an_h2_stream():
    stream, connection, _ = _h2_stream([(b":method", b"PATCH"), (b":path", b"/files/x")])
    request = stream._request
    _twisted_private.capture_trailers(request)
    connection._txtus_trailers = {1: [(b"upload-checksum", b"sha1 abc")], 3: [(b"x", b"y")]}
    assert request.trailers.getRawHeaders(b"upload-checksum") is None
    trailers = _twisted_private.received_trailers(request)
    assert trailers.getRawHeaders(b"upload-checksum") == [b"sha1 abc"]
    assert connection._txtus_trailers == {3: [(b"x", b"y")]}


class _H2Pair:
    """
    A Twisted H2Connection with trailers caught, driven by an h2 client in
    memory; requests pause their stream at their headers, as a request
    waiting for its lock or a slow store does, and record their trailers
    once their body ends.
    """

    def __init__(self) -> None:
        import h2.config
        import h2.connection
        from twisted.web._http2 import H2Connection

        pair = self
        self.requests: dict[int, Any] = {}

        class Paused(http.Request):
            def gotLength(self, length: int | None) -> None:
                super().gotLength(length)
                pair.requests[self.channel.streamID] = self
                self.channel.pauseProducing()

            def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
                self.collected = _twisted_private.received_trailers(self)
                self.content.seek(0, 0)

        self.server = H2Connection(Clock())
        self.server.requestFactory = Paused
        self.server.site = None
        self.server.makeConnection(StringTransport())
        _twisted_private._catch_h2_trailers(self.server)
        self.client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.client.initiate_connection()
        self.flush()

    def flush(self) -> None:
        self.server.dataReceived(self.client.data_to_send())
        self.client.receive_data(self.server.transport.value())
        self.server.transport.clear()

    def patch_with_trailer(self, stream_id: int, checksum: bytes) -> None:
        self.client.send_headers(stream_id, [(b":method", b"PATCH"), (b":path", b"/files/x"),
                                             (b":scheme", b"https"), (b":authority", b"h")])
        self.client.send_data(stream_id, b"data")
        self.client.send_headers(stream_id, [(b"upload-checksum", checksum)], end_stream=True)
        self.flush()


def test_h2_trailers_of_many_paused_streams_are_all_kept():
    """
    More paused streams than any fixed cache on one connection: each
    still finds its own trailer when it resumes (a fixed 64 lost the
    oldest, and its PATCH failed with a spurious 460).
    """
    pair = _H2Pair()
    ids = [1 + 2 * n for n in range(90)]
    for stream_id in ids:
        pair.patch_with_trailer(stream_id, b"sha1 %d" % stream_id)
    for stream_id in ids:
        pair.server.streams[stream_id].resumeProducing()
    for stream_id in ids:
        assert pair.requests[stream_id].collected.getRawHeaders(b"upload-checksum") == [b"sha1 %d" % stream_id]
    assert pair.server._txtus_trailers == {}


def test_h2_trailers_of_a_stream_done_with_are_dropped():
    pair = _H2Pair()
    pair.patch_with_trailer(1, b"sha1 a")
    pair.patch_with_trailer(3, b"sha1 b")
    assert set(pair.server._txtus_trailers) == {1, 3}
    # Reset by the client while paused.
    pair.client.reset_stream(1)
    pair.flush()
    # Answered and reset by the server before its request read the body.
    pair.server.abortRequest(3)
    assert pair.server._txtus_trailers == {}


def test_h2_kept_trailers_are_bounded_by_the_concurrent_stream_limit():
    pair = _H2Pair()
    limit = pair.server.conn.local_settings.max_concurrent_streams
    kept = pair.server._txtus_trailers
    # Entries nothing collected nor dropped (a leak): never more than the limit.
    kept.update({-n: [] for n in range(limit)})
    pair.patch_with_trailer(1, b"sha1 a")
    assert len(kept) == limit and kept[1] == [(b"upload-checksum", b"sha1 a")]
