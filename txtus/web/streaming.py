"""
L{TusRequest} and L{TusSite}: twisted.web's request, taught to hand request
bodies to a resource while they arrive.

Stock twisted.web buffers a whole body (in memory, or a temporary file) and
only then calls C{render}: an interrupted upload loses every byte, each byte
is copied twice, and nothing can be refused early.  L{TusRequest} acts when
the headers are complete (C{gotLength}): it finds the resource the request
is for and, if that resource provides L{IStreamingBodyResource}, feeds it
the body chunk by chunk and tells it when the body ends or the connection
drops.  Every other resource sees a perfectly ordinary request.
"""

from __future__ import annotations

import io
from typing import Any
from urllib.parse import unquote_to_bytes

from twisted.internet.defer import Deferred, succeed
from twisted.web import server

from txtus import errors
from txtus.web import _twisted_private
from txtus.interfaces import IStreamingBodyResource


# Socket reads while an upload body streams: large enough to cut per-read
# overhead, small enough not to hurt 1 MiB uploads (1 MiB reads did).
UPLOAD_READ_SIZE = 256 * 1024
# Socket reads while a request's header block is awaited (on a new
# connection, and once a streamed body has ended).  twisted.web splits each header line off the
# bytes read so far, copying everything after it: a 256 KiB read carrying a
# header block and the start of a body was copied once per header line,
# which made three extra copies of every byte of a 1 MiB upload (measured
# with callgrind; twisted.web's own 64 KiB reads cost one).
HEADER_READ_SIZE = 16 * 1024


class TusRequest(server.Request):
    """A request whose body can be streamed to the resource it is for."""

    _tus_body: Any = None
    # When this request's header block began, while it is incomplete.
    headers_since: float | None = None
    _refused = False
    _length_pending: tuple[int | None] | None = None
    _tus_site: Any = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        site = getattr(self.channel, "site", None)
        if isinstance(site, TusSite):
            self._tus_site = site
            site.in_flight.add(self)
            # twisted.web's idle timeout restarts with every byte, so headers
            # trickled a byte at a time would hold the connection for ever:
            # the header block gets a deadline of its own, from the request
            # line on, which the site enforces for all its requests at once.
            if site.header_timeout:
                self.headers_since = site.reactor.seconds()
                site.watch_header_deadlines()

    def headers_too_slow(self) -> None:
        self.headers_since = None
        transport = getattr(getattr(self, "channel", None), "transport", None)
        if transport is not None:
            transport.loseConnection()

    def _headers_done(self) -> None:
        self.headers_since = None

    def gotLength(self, length: int | None) -> None:
        self._headers_done()
        if self._tus_site is not None and self._tus_site.draining:
            self._refuse_while_draining(length)
            return
        if length != 0 and not _twisted_private.headers_complete_at_got_length(self):
            # HTTP/2: headers after Content-Length are still to come; they
            # are all in by the first body chunk (or the end of the body).
            self._length_pending = (length,)
            self.content = io.BytesIO()
            return
        self._choose_body(length)

    def _choose_body(self, length: int | None) -> None:
        """Stream the body to the resource if it takes one, else buffer it."""
        self._length_pending = None
        if length != 0:
            line = _twisted_private.request_line(self)
            if line is not None:
                self._tus_body = self._streaming_receiver(*line, length=length)
        if self._tus_body is None:
            super().gotLength(length)
        else:
            # Nothing is buffered; twisted.web still expects a file.
            self.content = io.BytesIO()

    def _streaming_receiver(self, method: bytes, uri: bytes, version: bytes, length: int | None) -> Any:
        self.method, self.uri, self.clientproto = method, uri, version
        self.path = uri.split(b"?", 1)[0]
        self.prepath = []
        self.postpath = [unquote_to_bytes(s) for s in self.path[1:].split(b"/")]
        site = self.channel.site
        self.site = site
        try:
            resource = site.getResourceFor(self)
        except Exception:
            return None
        if not IStreamingBodyResource.providedBy(resource):
            return None
        if self.requestHeaders.hasHeader(b"expect"):
            # Twisted would answer 100-continue at once; the resource sends
            # it when it is ready for the body (or refuses instead).
            self.requestHeaders.removeHeader(b"expect")
            self.expects_continue = True
        _twisted_private.capture_trailers(self)
        receiver = resource.begin_body(self)
        if receiver is not None:
            _twisted_private.set_read_size(self, UPLOAD_READ_SIZE)
            _twisted_private.watch_chunk_sizes(self, receiver.chunk_announced)
        return receiver

    def handleContentChunk(self, data: bytes) -> None:
        if self._length_pending is not None:
            self._choose_body(*self._length_pending)
        body = self._tus_body
        if body is None:
            super().handleContentChunk(data)
        else:
            body.chunk(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self._length_pending is not None:
            self._choose_body(*self._length_pending)
        if self._tus_body is not None:
            _twisted_private.set_read_size(self, HEADER_READ_SIZE)
            self._tus_body.ended(_twisted_private.received_trailers(self))
        super().requestReceived(command, path, version)

    def connectionLost(self, reason: Any) -> None:
        self._headers_done()
        super().connectionLost(reason)
        if self._tus_body is not None:
            self._tus_body.lost(reason)
        self._gone()

    def finish(self) -> None:
        super().finish()
        if self._tus_body is not None and getattr(self._tus_body, "end", True) is not None:
            # Answered, its body over: drop the body, which refers back to
            # this request (a cycle for the garbage collector otherwise).
            self._tus_body = None
        self._gone()

    def _gone(self) -> None:
        if self._tus_site is not None:
            self._tus_site.request_gone(self)
            self._tus_site = None

    def write(self, data: bytes) -> None:
        if not self.startedWriting and self._tus_site is not None and self._tus_site.draining:
            # Shutting down: no further request on this connection.
            _twisted_private.close_after_response(self)
        super().write(data)

    # Shutting down -------------------------------------------------------

    def _refuse_while_draining(self, length: int | None) -> None:
        """
        The site is shutting down: answer 503 and close, without reading
        (or buffering) the body.
        """
        self._refused = True
        self._tus_body = _DISCARD
        self.content = io.BytesIO()
        if length != 0:
            # A body follows: answer now rather than read it, from a fresh
            # reactor turn (not from inside the channel's header parsing).
            producer = _twisted_private.transport_producer(self)
            if producer is not None:
                producer.pauseProducing()
            self._tus_site.reactor.callLater(0, self._answer_unavailable)

    def process(self) -> None:
        if self._refused:
            self._answer_unavailable()
        else:
            super().process()

    def _answer_unavailable(self) -> None:
        if self.finished or self._disconnected:
            return
        error = errors.ServerShutdown()
        body = error.body()
        self.setResponseCode(error.status)
        self.setHeader(b"content-type", error.content_type)
        self.setHeader(b"content-length", b"%d" % len(body))
        self.setHeader(b"tus-resumable", b"1.0.0")
        _twisted_private.close_after_response(self)
        self.write(body)
        self.finish()


class _Discard:
    """The body of a request refused during shutdown: dropped as it comes."""

    def chunk(self, data: bytes) -> None:
        pass

    def ended(self, trailers: Any) -> None:
        pass

    def lost(self, reason: Any) -> None:
        pass


_DISCARD = _Discard()


class TusSite(server.Site):
    """
    A C{Site} set up for uploads: streaming requests, no HTML form parsing
    of POST bodies, and no per-request access log on the hot path.

    @ivar header_timeout: seconds a request's header block may take from
        its request line on (L{None}: no limit but the idle timeout).
    """

    header_timeout: float | None = None

    def __init__(self, resource: Any, *args: Any, header_timeout: float | None = None, **kwargs: Any) -> None:
        self.header_timeout = header_timeout
        kwargs.setdefault("requestFactory", TusRequest)
        kwargs.setdefault("parsePOSTFormSubmission", False)
        super().__init__(resource, *args, **kwargs)
        # Requests not yet answered (or cut), and open connections: what
        # shutting down waits for.
        self.in_flight: set[TusRequest] = set()
        self.connections: set[Any] = set()
        self.draining = False
        self._waiting: list[tuple[set[Any], Deferred]] = []
        self._header_sweep: Any = None

    @property
    def open_connections(self) -> int:
        return len(self.connections)

    def buildProtocol(self, addr: Any) -> Any:
        protocol = super().buildProtocol(addr)
        if protocol is not None:
            _twisted_private.watch_protocol_switch(protocol)
            _twisted_private.set_first_read_size(protocol, HEADER_READ_SIZE)
            self.connections.add(protocol)
            _twisted_private.when_connection_lost(protocol, lambda: self._forget(self.connections, protocol))
        return protocol

    def stopFactory(self) -> None:
        # Not listening any more: no timer of ours outlives that.  (A
        # request still in flight sets it again if it needs it.)
        if self._header_sweep is not None and self._header_sweep.active():
            self._header_sweep.cancel()
        self._header_sweep = None
        super().stopFactory()

    def request_gone(self, request: TusRequest) -> None:
        self._forget(self.in_flight, request)

    def watch_header_deadlines(self) -> None:
        """
        Make sure a header block that is still incomplete
        C{header_timeout} seconds after its request line is cut.  One timer
        serves every request: it fires at the earliest deadline and then
        sets itself for the next, so a request costs no timer of its own
        (one each cost about a tenth of a small upload's tus overhead).
        """
        if self._header_sweep is None:
            self._header_sweep = self.reactor.callLater(self.header_timeout, self._cut_slow_headers)

    def _cut_slow_headers(self) -> None:
        self._header_sweep = None
        now = self.reactor.seconds()
        earliest = None
        for request in list(self.in_flight):
            since = request.headers_since
            if since is None:
                continue
            if now - since >= self.header_timeout:
                request.headers_too_slow()
            elif earliest is None or since < earliest:
                earliest = since
        if earliest is not None:
            self._header_sweep = self.reactor.callLater(earliest + self.header_timeout - now,
                                                        self._cut_slow_headers)

    def stop_bodies(self, why: Any) -> int:
        """
        Stop every request body still streaming in (C{why}: a
        L{txtus.web.body.BodyEnd}); what arrived stays stored.

        @return: how many were stopped.
        """
        stopped = 0
        for request in list(self.in_flight):
            body = request._tus_body
            if body is not None and getattr(body, "end", True) is None:
                body.stop(why)
                stopped += 1
        return stopped

    def when_idle(self) -> Deferred:
        """A Deferred that fires once no request is in flight."""
        return self._when_empty(self.in_flight)

    def close_connections(self) -> Deferred:
        """
        Close every connection once what was written to it is sent (an
        HTTP/2 one with a GOAWAY first).

        @return: a Deferred that fires when they are all closed.
        """
        for protocol in list(self.connections):
            _twisted_private.close_connection(protocol)
        return self._when_empty(self.connections)

    def _when_empty(self, items: set[Any]) -> Deferred:
        if not items:
            return succeed(None)
        d: Deferred = Deferred()
        self._waiting.append((items, d))
        return d

    def _forget(self, items: set[Any], item: Any) -> None:
        items.discard(item)
        if not items and self._waiting:
            ready = [d for waited, d in self._waiting if waited is items]
            self._waiting = [(waited, d) for waited, d in self._waiting if waited is not items]
            for d in ready:
                d.callback(None)

    def log(self, request: Any) -> None:
        """Upload events are logged by the tus resource; skip access logs."""
