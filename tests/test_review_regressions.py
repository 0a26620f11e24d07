"""
Regressions found in a review of txtus/*.py: each test failed before the
fix committed with it.
"""

from __future__ import annotations

from typing import Any

import pytest_twisted
import treq
from test_streaming import OCTETS, TUS, Server
from tushttp import TUS as TUS_HEADERS
from tushttp import create, head, header, patch, stored, upload_id


def test_overflowing_bytes_that_arrived_while_locked_answer_413(tmp_path: Any) -> None:
    """
    A chunked PATCH whose early bytes (received while another holder had
    the lock) already run past the upload's length: the body is cut while
    L{StreamingBody.start} is still delivering them.  That must end as 413,
    not as a 500 from C{start}; since issue 11 a chunk announced larger than
    the upload can take is refused whole, before any of it is stored.
    """
    server = Server(tmp_path)
    upload_id = server.create(5)
    held: list[Any] = []
    server.locker.lock(upload_id, lambda: None).addCallback(held.append)
    connection = server.connect()
    connection.send(b"PATCH /files/%s HTTP/1.1\r\nHost: h\r\n" % upload_id.encode() + TUS + OCTETS
                    + b"Upload-Offset: 0\r\nTransfer-Encoding: chunked\r\n\r\n"
                    + b"a\r\n0123456789\r\n")
    assert connection.output() == b""
    held[0].unlock()
    server.clock.advance(0)
    (status, headers, _), = connection.responses()
    assert status == 413
    assert server.stored(upload_id) == b""


@pytest_twisted.ensureDeferred
async def test_concatenation_retried_after_an_interrupted_copy_starts_over(server):
    """
    A final upload whose concatenation stopped part way (a crash, a full
    disk) holds a prefix of its bytes and is still incomplete; completing
    it later must rewrite it from the start, not append after the prefix.
    """
    a = await create(server, 5, b"hello", headers={"Upload-Concat": "partial"})
    b = await create(server, 5, b"wor", headers={"Upload-Concat": "partial"})
    response = await treq.post(server.url, headers={**TUS_HEADERS, "Upload-Concat": f"final;{a} {b}"})
    await response.content()
    assert response.code == 201
    location = header(response, "location")
    # What an interrupted copy leaves behind: the first bytes of partial a.
    with open(server.store.data_path(upload_id(location)), "wb") as f:
        f.write(b"hel")
    assert header(await patch(b, 3, b"ld"), "upload-offset") == "5"
    status = await head(location)
    assert header(status, "upload-offset") == header(status, "upload-length") == "10"
    assert stored(server, location) == b"helloworld"


@pytest_twisted.ensureDeferred
async def test_client_leaving_mid_download_is_not_logged_as_a_failure(server):
    """A client that disconnects during a GET is routine, not a traceback."""
    from twisted.internet import reactor
    from twisted.internet.defer import Deferred
    from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
    from twisted.internet.protocol import Protocol
    from twisted.logger import globalLogPublisher
    import treq

    data = b"x" * (8 * 1024 * 1024)
    response = await treq.post(server.url, data, headers={
        "Tus-Resumable": "1.0.0", "Upload-Length": str(len(data)),
        "Content-Type": "application/offset+octet-stream"})
    assert response.code == 201
    path = response.headers.getRawHeaders("location")[0].split(str(server.port_number), 1)[1]

    failures = []

    def observe(event):
        if event.get("log_failure") is not None:
            failures.append(event)

    globalLogPublisher.addObserver(observe)
    try:
        got_some: Deferred = Deferred()

        class Reader(Protocol):
            def connectionMade(self):
                self.transport.write(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: h\r\n\r\n")

            def dataReceived(self, chunk):
                if not got_some.called:
                    got_some.callback(self)

        reader = await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", server.port_number), Reader())
        await got_some
        reader.transport.abortConnection()
        settle: Deferred = Deferred()
        reactor.callLater(0.2, settle.callback, None)
        await settle
    finally:
        globalLogPublisher.removeObserver(observe)
    assert failures == []
