"""
Every use of private Twisted API, quarantined here with its own tests
(C{tests/test_twisted_private.py}), so a Twisted upgrade that breaks one of
them breaks loudly in one place.

Why each is needed:
  - On HTTP/1.1 the request line is only public after the whole body has
    arrived (C{requestReceived}); streaming needs it when the headers end.
  - A response written before the body has been read must close the
    connection, or the unread body would be parsed as the next request.
  - Twisted's chunked decoder parses trailers and throws them away;
    checksum-trailer needs them.  It also accepts any chunk size (2**96
    and up) and streams what follows as data; the size must be checked
    before a byte of the chunk reaches the store.
  - Twisted has no public API for 1xx responses other than 100-continue.
    On HTTP/2 the stream's connection sends them through h2 (which allows
    any number of 1xx HEADERS before the final one), as Twisted's own
    C{_send100Continue} does.
  - On HTTP/2, Twisted's connection ignores h2's C{TrailersReceived}
    event: a request's trailers are dropped.  They are caught as h2
    reports them (the connection's C{receive_data} wrapped) and kept by
    stream until the request ends (L{received_trailers}) or the stream is
    done with (Twisted's C{_requestDone} wrapped): a small request
    arrives whole in one read, its trailers reported before Twisted has
    even created its stream.  The wrapper must be in place before the
    first byte, so it is installed when Twisted's ALPN switch creates the
    C{H2Connection} (L{watch_protocol_switch}).
  - The channel's idle timeout must not cut a body paused by a slow store,
    yet must come back for the response; twisted.web keeps it in a private
    attribute while a request is processed.
  - HTTP/2 (twisted.web._http2): each request's channel is an C{H2Stream},
    which has no transport but is itself the push producer of the request
    body (pausing it withholds the stream's flow-control window, which is
    the backpressure); it calls C{gotLength} on meeting C{Content-Length},
    possibly before the headers after it; and a response that ends a
    stream whose body is unread leaves Twisted unable to take that body's
    remaining DATA frames, so the stream must be reset (RFC 9113 8.1:
    RST_STREAM with NO_ERROR after a complete response).
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.interfaces import IPushProducer

from twisted.web.http_headers import Headers


def _channel(request: Any) -> Any:
    # twisted.web deletes request.channel once the response is finished.
    return getattr(request, "channel", None)


def request_line(request: Any) -> tuple[bytes, bytes, bytes] | None:
    """
    The (method, uri, version) of a request whose headers are complete but
    whose body has not arrived, or L{None} if this channel does not tell.
    """
    channel = _channel(request)
    command = getattr(channel, "_command", None)  # HTTP/1.1: HTTPChannel
    if command is not None:
        return command, channel._path, channel._version
    command = getattr(channel, "command", None)  # HTTP/2: H2Stream
    path = getattr(channel, "path", None)
    if command is not None and path is not None:
        return command, path, b"HTTP/2"
    return None


def _h2_stream(request: Any) -> Any:
    """The request's C{H2Stream} if it came over HTTP/2, else L{None}."""
    channel = _channel(request)
    if channel is not None and getattr(channel, "streamID", None) is not None and hasattr(channel, "_conn"):
        return channel
    return None


def headers_complete_at_got_length(request: Any) -> bool:
    """
    Whether every request header is known when C{gotLength} is called:
    yes on HTTP/1.1 (at the end of the header block); on HTTP/2 only if
    the request has no C{Content-Length} (else C{gotLength} comes when that
    header is met).  When not, they are all known by the first body chunk.
    """
    stream = _h2_stream(request)
    return stream is None or not request.requestHeaders.hasHeader(b"content-length")


def set_read_size(request: Any, size: int) -> None:
    """
    Read up to C{size} bytes per C{recv} on this request's TCP connection.
    Twisted's 64 KiB reads cost measurably on large upload bodies (256 KiB
    measured +19% on 8 MiB PATCHes); other transports are left alone.
    """
    transport = getattr(_channel(request), "transport", None)
    if transport is not None and isinstance(getattr(transport, "bufferSize", None), int):
        transport.bufferSize = size


def connection_transport(protocol: Any) -> Any:
    """
    The transport of a connection's protocol as a twisted.web site built
    it: a C{_GenericHTTPChannelProtocol} has none of its own but forwards to
    the channel it wraps (HTTP/1.1 or HTTP/2), which holds it.
    """
    transport = getattr(protocol, "transport", None)
    if transport is None:
        transport = getattr(getattr(protocol, "_channel", None), "transport", None)
    return transport


def close_connection(protocol: Any) -> None:
    """
    Close a site's connection once what was written to it is sent.  On
    HTTP/2 a GOAWAY (NO_ERROR) goes first, so the client knows the server
    is going away and opens no new stream on it; Twisted's C{H2Connection}
    only sends one when its idle timeout fires.
    """
    channel = getattr(protocol, "_channel", None)
    h2_state = getattr(channel, "conn", None)
    if h2_state is not None and hasattr(h2_state, "close_connection"):
        from h2.exceptions import ProtocolError
        try:
            h2_state.close_connection()
            channel.transport.write(h2_state.data_to_send())
        except ProtocolError:
            pass  # the connection is already closing
    transport = connection_transport(protocol)
    if transport is not None:
        # The channel is registered as the transport's producer; TLS waits
        # for its producer to go before it shuts down, so an idle HTTPS or
        # HTTP/2 connection would stay open until aborted.
        transport.unregisterProducer()
        transport.loseConnection()


def set_first_read_size(protocol: Any, size: int) -> None:
    """
    Read up to C{size} bytes per C{recv} on the TCP connection C{protocol}
    (a protocol a site built) is about to be given, from its first read on.
    """
    make_connection = protocol.makeConnection

    def made(transport: Any) -> None:
        del protocol.makeConnection  # once; and no cycle through this closure
        if isinstance(getattr(transport, "bufferSize", None), int):
            transport.bufferSize = size
        make_connection(transport)

    protocol.makeConnection = made


def transport_producer(request: Any) -> Any:
    """
    The push producer that reads the request's connection, or L{None}.
    Pausing it stops reading from the client's socket (TCP backpressure).
    """
    channel = _channel(request)
    if channel is None:
        return None
    stream = _h2_stream(request)
    if stream is not None:
        return stream  # pausing it stops opening the stream's window
    transport = getattr(channel, "transport", None)
    return IPushProducer(transport, None)


def suspend_idle_timeout(request: Any) -> float | None:
    """
    Stop the channel's idle timeout, which would otherwise cut a body that
    is merely paused by a slow store; the caller watches the body itself.

    @return: the timeout to hand to L{restore_idle_timeout}, or L{None} if
        there was none.
    """
    channel = _channel(request)
    if channel is None or not hasattr(channel, "setTimeout"):
        return None
    return channel.setTimeout(None)


def restore_idle_timeout(request: Any, timeout: float | None, body_complete: bool) -> None:
    """
    Undo L{suspend_idle_timeout}.  Once the whole body has arrived,
    twisted.web keeps the idle timeout off until the response is done and
    then restores C{_savedTimeOut}; hand the timeout over to it.  Otherwise
    (a body left unread or being drained) re-arm it now, so a client that
    stops reading or sending is still cut off.
    """
    channel = _channel(request)
    if channel is None or not timeout:
        return
    if body_complete:
        channel._savedTimeOut = timeout
    else:
        channel.setTimeout(timeout)


def close_after_response(request: Any) -> None:
    """
    Make the channel close the connection once this request's response is
    written, instead of reading the next request from the (unread) body.
    """
    stream = _h2_stream(request)
    if stream is not None:
        # No Connection header on HTTP/2: end just this stream, once the
        # response has gone out.
        _reset_stream_when_done(stream)
        return
    channel = _channel(request)
    if channel is not None and hasattr(channel, "persistent"):
        channel.persistent = False
    request.responseHeaders.setRawHeaders(b"connection", [b"close"])


def _reset_stream_when_done(stream: Any) -> None:
    connection = stream._conn
    done = connection._streamCleanupCallbacks.get(stream.streamID)
    if done is None:
        return
    stream_id = stream.streamID


    def reset(ignored: Any) -> Any:
        from h2.errors import ErrorCodes
        from h2.exceptions import StreamClosedError
        try:
            connection.conn.reset_stream(stream_id, ErrorCodes.NO_ERROR)
        except StreamClosedError:
            pass  # the client finished sending after all
        else:
            connection._tryToWriteControlData()
        return ignored

    done.addCallback(reset)


def capture_trailers(request: Any) -> None:
    """
    Arrange for the trailer fields of a chunked request body to be kept on
    C{request.trailers} (a L{Headers}) just before the body ends.
    """
    request.trailers = Headers()
    if _h2_stream(request) is not None:
        # Kept by the connection (watch_protocol_switch), collected by
        # received_trailers.
        return
    decoder = getattr(_channel(request), "_transferDecoder", None)
    if decoder is None or not hasattr(decoder, "_trailerHeaders"):
        return
    finish = decoder.finishCallback

    def keep_trailers(rest: bytes) -> None:
        for raw in decoder._trailerHeaders:
            name, sep, value = bytes(raw).partition(b":")
            if sep:
                request.trailers.addRawHeader(name.strip(), value.strip())
        finish(rest)

    decoder.finishCallback = keep_trailers


def when_connection_lost(protocol: Any, callback: Callable[[], None]) -> None:
    """
    Call C{callback()} once the connection of C{protocol} (as a twisted.web
    site built it) is lost.  A C{_GenericHTTPChannelProtocol} forwards
    C{connectionLost} to the channel it wraps (assigning it on the proxy
    assigns it on that channel), and replaces its HTTP/1.1 channel with an
    C{H2Connection} once ALPN picked HTTP/2: the watch goes on the channel,
    and moves to the new one (L{watch_protocol_switch}).
    """
    channel = getattr(protocol, "_channel", protocol)
    lost = channel.connectionLost

    def connection_lost(reason: Any) -> None:
        # Once; and no reference cycle left through this closure.
        del channel.connectionLost
        protocol.__dict__.pop("_txtus_when_lost", None)
        callback()
        lost(reason)

    channel.connectionLost = connection_lost
    protocol._txtus_when_lost = callback


def watch_protocol_switch(protocol: Any) -> None:
    """
    For a protocol a twisted.web site built (C{_GenericHTTPChannelProtocol},
    which picks HTTP/1.1 or HTTP/2 by ALPN on its first bytes): once it
    picked HTTP/2, and before the connection sees a byte, make it keep
    request trailers (L{_catch_h2_trailers}) and move the watch of
    L{when_connection_lost} to the new channel.
    """
    original = getattr(protocol, "dataReceived", None)
    if original is None or not hasattr(protocol, "_negotiatedProtocol") or not hasattr(protocol, "_channel"):
        return

    def data_received(data: bytes) -> Any:
        if protocol._negotiatedProtocol is None:
            # Twisted chooses (and creates the H2Connection) on the first
            # call; an empty one makes it choose with nothing to parse.
            original(b"")
            del protocol.dataReceived
            if protocol._negotiatedProtocol == b"h2":
                _catch_h2_trailers(protocol._channel)
                callback = getattr(protocol, "_txtus_when_lost", None)
                if callback is not None:
                    when_connection_lost(protocol, callback)
        return original(data)

    protocol.dataReceived = data_received


def _catch_h2_trailers(connection: Any) -> None:
    """
    Make C{connection} (an C{H2Connection}) keep the trailers h2 reports,
    by stream ID, in C{connection._txtus_trailers} until
    L{received_trailers} collects them.  h2 reports them from
    C{receive_data}, before Twisted handles the batch's events (the
    stream's creation among them, and the C{StreamEnded} that completes
    its request).

    A stream paused by its request (waiting for a lock or a slow store)
    keeps its trailers until it resumes, however long that is; so entries
    go only when collected or when their stream is done (Twisted's
    C{_requestDone}: the response sent, or the stream reset by either
    side), never by age.  As a bound against a leak, never more than h2's
    own limit of concurrent streams are kept: a stream with trailers is
    half-closed and counts towards that limit until it is done.
    """
    h2_connection = getattr(connection, "conn", None)
    receive = getattr(h2_connection, "receive_data", None)
    if receive is None or getattr(receive, "_txtus_trailers", False):
        return
    from h2.events import RequestReceived, TrailersReceived
    kept: dict[int, list[tuple[bytes, bytes]]] = {}
    connection._txtus_trailers = kept

    def receive_data(data: bytes) -> Any:
        events = receive(data)
        for event in events:
            if isinstance(event, TrailersReceived):
                stream_id = event.stream_id
                # Only for a stream Twisted holds (or creates from this
                # batch's events): an entry for a stream already done with
                # would never be dropped.
                if stream_id not in connection.streams and not any(
                        isinstance(e, RequestReceived) and e.stream_id == stream_id for e in events):
                    continue
                limit = h2_connection.local_settings.max_concurrent_streams
                while kept and len(kept) >= limit:
                    del kept[next(iter(kept))]
                kept[stream_id] = [(_as_bytes(n), _as_bytes(v)) for n, v in event.headers]
        return events

    receive_data._txtus_trailers = True  # type: ignore[attr-defined]
    h2_connection.receive_data = receive_data

    request_done = getattr(connection, "_requestDone", None)
    if request_done is not None:
        def forget_trailers(stream_id: int) -> Any:
            kept.pop(stream_id, None)
            return request_done(stream_id)

        connection._requestDone = forget_trailers


def received_trailers(request: Any) -> Headers:
    """
    The trailer fields of a request whose body just ended (call it from
    C{requestReceived}): C{request.trailers} as L{capture_trailers} set it
    up, with those an HTTP/2 connection kept for its stream added.
    """
    trailers = getattr(request, "trailers", None)
    if trailers is None:
        trailers = request.trailers = Headers()
    stream = _h2_stream(request)
    kept = getattr(getattr(stream, "_conn", None), "_txtus_trailers", None)
    if kept:
        for name, value in kept.pop(stream.streamID, ()):
            trailers.addRawHeader(name, value)
    return trailers


def _as_bytes(text: Any) -> bytes:
    return text if isinstance(text, bytes) else str(text).encode("latin-1")


def watch_chunk_sizes(request: Any, announced: Callable[[int], None]) -> None:
    """
    Call C{announced(size)} each time a chunked request body's chunk-size
    line has been parsed, before any byte of that chunk is delivered.  The
    callee may stop the body then; the decoder itself never refuses sizes.
    """
    decoder = getattr(_channel(request), "_transferDecoder", None)
    parse = getattr(decoder, "_dataReceived_CHUNK_LENGTH", None)
    if parse is None:
        return

    def checked() -> bool:
        done = parse()
        if done and decoder.state == "BODY":
            announced(decoder.length)
        return done

    # dataReceived dispatches with getattr(self, "_dataReceived_" + state),
    # so an instance attribute takes the class method's place.
    decoder._dataReceived_CHUNK_LENGTH = checked


def write_informational(request: Any, code: int, reason: bytes, headers: list[tuple[bytes, bytes]]) -> bool:
    """
    Send an interim (1xx) response ahead of the final one, on HTTP/1.1 or
    HTTP/2.

    @return: whether it was sent (not on other protocols, nor after the
        final response started).
    """
    channel = _channel(request)
    if channel is None or request.startedWriting:
        return False
    stream = _h2_stream(request)
    if stream is not None:
        if code == 100:
            stream._send100Continue()
            return True
        from h2.exceptions import ProtocolError
        connection = stream._conn
        fields = [(b":status", b"%d" % code)] + [(name.lower(), value) for name, value in headers]
        try:
            # As Twisted's _send100Continue, which may also run while the
            # stream is being created (not yet in connection.streams).
            connection.conn.send_headers(stream_id=stream.streamID, headers=fields)
        except ProtocolError:  # the stream was reset or closed meanwhile
            return False
        connection._tryToWriteControlData()
        return True
    if getattr(channel, "_version", request.clientproto) != b"HTTP/1.1":
        return False
    transport = getattr(channel, "transport", None)
    if transport is None:
        return False
    lines = [b"HTTP/1.1 %d %s\r\n" % (code, reason)]
    lines.extend(b"%s: %s\r\n" % (name, value) for name, value in headers)
    lines.append(b"\r\n")
    transport.write(b"".join(lines))
    return True
