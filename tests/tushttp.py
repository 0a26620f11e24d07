"""
Small helpers shared by the HTTP conformance tests (C{tests/test_http_*.py}):
tus request shortcuts on top of treq, and a raw HTTP/1.1 client built on a
Twisted protocol for what treq cannot express (chunked bodies that overflow,
bodies cut off mid-way, unnormalised request targets such as C{/files/..}).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.task import deferLater

TUS = {"Tus-Resumable": "1.0.0"}
OCTET = "application/offset+octet-stream"
TIMEOUT = 5.0


def header(response: Any, name: str) -> str | None:
    """The first value of a treq response's header C{name}, or L{None}."""
    values = response.headers.getRawHeaders(name)
    return values[0] if values else None


async def create(server: Any, length: int | None, body: bytes | None = None,
                 headers: dict[str, str] | None = None) -> str:
    """
    Create an upload (deferred length when C{length} is L{None}), optionally
    with a creation-with-upload body; assert 201 and return its URL.
    """
    all_headers = {**TUS, **(headers or {})}
    if length is None:
        all_headers.setdefault("Upload-Defer-Length", "1")
    else:
        all_headers.setdefault("Upload-Length", str(length))
    if body is not None:
        all_headers.setdefault("Content-Type", OCTET)
    response = await treq.post(server.url, body, headers=all_headers)
    text = await response.content()
    assert response.code == 201, (response.code, text)
    location = header(response, "location")
    assert location is not None
    return location


async def patch(url: str, offset: int, body: bytes, headers: dict[str, str] | None = None) -> Any:
    """A PATCH with the right tus headers; returns the (read) response."""
    all_headers = {**TUS, "Upload-Offset": str(offset), "Content-Type": OCTET, **(headers or {})}
    response = await treq.patch(url, body, headers=all_headers)
    response.text_body = (await response.content()).decode("utf-8", "replace")
    return response


async def head(url: str, headers: dict[str, str] | None = None) -> Any:
    response = await treq.head(url, headers={**TUS, **(headers or {})})
    await response.content()
    return response


async def text(response: Any) -> str:
    return (await response.content()).decode("utf-8")


def upload_id(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[1]


def stored(server: Any, url: str) -> bytes:
    """What the file store holds for the upload at C{url}."""
    with open(server.store.data_path(upload_id(url)), "rb") as f:
        return f.read()


def assert_error(status: int, code: str, response_code: int, body: str, response: Any) -> None:
    """A tus error response: status, C{CODE: message} body, text/plain."""
    assert response_code == status, (response_code, body)
    assert body.startswith(code + ": "), body
    assert body.endswith("\n")
    assert header(response, "content-type") == "text/plain; charset=utf-8"
    assert header(response, "tus-resumable") == "1.0.0"


async def expect_error(response: Any, status: int, code: str) -> str:
    body = await text(response)
    assert_error(status, code, response.code, body, response)
    return body


async def wait_for(predicate: Any, timeout: float = TIMEOUT, interval: float = 0.01) -> None:
    """Poll C{predicate} (a coroutine function) until true, bounded."""
    for _ in range(int(timeout / interval)):
        if await predicate():
            return
        await deferLater(reactor, interval, lambda: None)
    raise AssertionError("condition not met in time")


# Raw HTTP/1.1 ----------------------------------------------------------------

@dataclass
class RawResponse:
    status: int
    reason: str
    headers: dict[str, list[str]] = field(default_factory=dict)
    body: bytes = b""
    interim: list[int] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[0] if values else None

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def parse_response(data: bytes, no_body: bool = False, complete: bool = False) -> tuple[RawResponse | None, bytes]:
    """
    Parse one response from the start of C{data}, skipping 1xx interim
    responses.  Returns C{(None, data)} if more bytes are needed; with
    C{complete} (the connection closed) a body without framing ends there.
    """
    interim = []
    while True:
        end = data.find(b"\r\n\r\n")
        if end < 0:
            return None, data
        lines = data[:end].decode("latin-1").split("\r\n")
        version, status, *reason = lines[0].split(" ", 2)
        headers: dict[str, list[str]] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers.setdefault(name.strip().lower(), []).append(value.strip())
        rest = data[end + 4:]
        code = int(status)
        if 100 <= code < 200:
            interim.append(code)
            data = rest
            continue
        break
    response = RawResponse(code, reason[0] if reason else "", headers, interim=interim)
    if no_body or code in (204, 304):
        return response, rest
    if "content-length" in headers:
        length = int(headers["content-length"][0])
        if len(rest) < length:
            return None, data
        response.body = rest[:length]
        return response, rest[length:]
    if headers.get("transfer-encoding", [""])[0].lower() == "chunked":
        body = b""
        position = 0
        while True:
            line_end = rest.find(b"\r\n", position)
            if line_end < 0:
                return None, data
            size = int(rest[position:line_end].split(b";")[0], 16)
            if size == 0:
                trailer_end = rest.find(b"\r\n\r\n", line_end)
                if trailer_end < 0:
                    return None, data
                response.body = body
                return response, rest[trailer_end + 4:]
            chunk_start = line_end + 2
            if len(rest) < chunk_start + size + 2:
                return None, data
            body += rest[chunk_start:chunk_start + size]
            position = chunk_start + size + 2
    if not complete:
        return None, data
    response.body = rest
    return response, b""


class RawConnection(Protocol):
    """
    One client connection that writes exactly the bytes it is given and
    collects the responses.  C{closed} fires when the connection is gone.
    """

    def __init__(self) -> None:
        self.received = b""
        self.closed: Deferred = Deferred()
        self.is_closed = False
        self._waiting: list[tuple[Deferred, bool]] = []

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        self._deliver(False)

    def connectionLost(self, reason: Any = None) -> None:
        self.is_closed = True
        self._deliver(True)
        for waiter, _ in self._waiting:
            if not waiter.called:
                waiter.errback(ConnectionError(f"closed without a (complete) response: {self.received[:200]!r}"))
        self._waiting = []
        self.closed.callback(None)

    def _deliver(self, complete: bool) -> None:
        while self._waiting:
            waiter, no_body = self._waiting[0]
            if waiter.called:  # timed out
                self._waiting.pop(0)
                continue
            response, rest = parse_response(self.received, no_body, complete)
            if response is None:
                return
            self.received = rest
            self._waiting.pop(0)
            waiter.callback(response)

    def write(self, data: bytes) -> None:
        self.transport.write(data)

    def close(self) -> None:
        self.transport.loseConnection()

    def response(self, no_body: bool = False, timeout: float = TIMEOUT) -> Deferred:
        """The next response (waiting for it, at most C{timeout} seconds)."""
        waiter: Deferred = Deferred()
        self._waiting.append((waiter, no_body))
        waiter.addTimeout(timeout, reactor)
        self._deliver(self.is_closed)
        return waiter

    async def wait_closed(self, timeout: float = TIMEOUT) -> None:
        if self.is_closed:
            return
        waiter: Deferred = Deferred()
        self.closed.addBoth(lambda result: waiter.callback(None) if not waiter.called else None)
        waiter.addTimeout(timeout, reactor)
        await waiter


async def connect(server: Any) -> RawConnection:
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", server.port_number, timeout=int(TIMEOUT))
    return await connectProtocol(endpoint, RawConnection())


def request_bytes(method: str, target: str, headers: dict[str, str] | None = None,
                  body: bytes = b"", host: str = "127.0.0.1") -> bytes:
    """A raw HTTP/1.1 request; no header is added except C{Host}."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def raw_request(server: Any, data: bytes, no_body: bool = False) -> RawResponse:
    """Send C{data} on a fresh connection and return the first response."""
    connection = await connect(server)
    try:
        connection.write(data)
        return await connection.response(no_body=no_body)
    finally:
        if not connection.is_closed:
            connection.close()
            await connection.wait_closed()


def chunked(*pieces: bytes) -> bytes:
    """A chunked body made of C{pieces}, with its last-chunk."""
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces if p) + b"0\r\n\r\n"
