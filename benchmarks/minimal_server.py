"""
Two reference servers for the benchmark, on plain asyncio with no tus
logic: no validation, no locks, no info files, offsets kept in a dict.

- C{store}: POST creates C{<dir>/<id>} (writing the body if any), PATCH
  writes its body at C{Upload-Offset}, HEAD answers the offset.  What a
  Python server that just writes bytes to files can do without Twisted's
  HTTP machinery (the C{asyncio} peer; L{twisted_server} is the same
  flow on twisted.web).
- C{discard}: the same protocol, bodies read and thrown away.  Run against
  the load generator to show the generator is not what limits a scenario.

Usage: C{python minimal_server.py store|discard PORT DIR}.  Prints
C{listening} once bound.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid

PREFIX = b"/files/"


class _Connection(asyncio.Protocol):
    def __init__(self, state: "_State") -> None:
        self.state = state
        self.buffer = b""
        self.remaining = 0  # body bytes still expected
        self.fd = -1
        self.upload_id = b""
        self.offset = 0
        self.method = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self._close_file()

    def data_received(self, data: bytes) -> None:
        while data:
            if self.remaining:
                take = data[:self.remaining] if len(data) > self.remaining else data
                self._body(take)
                data = data[len(take):]
                self.remaining -= len(take)
                if not self.remaining:
                    self._respond_after_body()
                continue
            self.buffer += data
            data = b""
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head, data = self.buffer[:end], self.buffer[end + 4:]
            self.buffer = b""
            self._headers(head)

    # request handling -------------------------------------------------

    def _headers(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        method, path, _ = lines[0].split(b" ", 2)
        fields = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            fields[name.strip().lower()] = value.strip()
        length = int(fields.get(b"content-length", b"0"))
        self.method = method
        state = self.state
        if method == b"POST":
            self.upload_id = uuid.uuid4().hex.encode("ascii")
            state.lengths[self.upload_id] = int(fields.get(b"upload-length", b"0"))
            self.offset = 0
            if state.directory:
                self.fd = os.open(os.path.join(state.directory, self.upload_id.decode()),
                                  os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        elif method in (b"PATCH", b"HEAD"):
            self.upload_id = path[len(PREFIX):]
            if self.upload_id not in state.lengths:
                self.remaining = 0
                self._send(b"404 Not Found", b"")
                return
            self.offset = state.offsets.get(self.upload_id, 0)
            if method == b"PATCH" and state.directory:
                self.fd = os.open(os.path.join(state.directory, self.upload_id.decode()), os.O_WRONLY)
        else:
            self._send(b"405 Method Not Allowed", b"")
            return
        self.remaining = length
        if not length:
            self._respond_after_body()

    def _body(self, data: bytes) -> None:
        if self.fd >= 0:
            os.pwrite(self.fd, data, self.offset)
        self.offset += len(data)

    def _respond_after_body(self) -> None:
        self._close_file()
        state, upload_id = self.state, self.upload_id
        if self.method == b"HEAD":
            self._send(b"200 OK", b"Upload-Offset: %d\r\nUpload-Length: %d\r\nCache-Control: no-store\r\n"
                       % (self.offset, state.lengths[upload_id]), content_length=False)
            return
        state.offsets[upload_id] = self.offset
        if self.method == b"POST":
            self._send(b"201 Created", b"Location: %s%s\r\nUpload-Offset: %d\r\n"
                       % (PREFIX, upload_id, self.offset))
        else:
            self._send(b"204 No Content", b"Upload-Offset: %d\r\n" % self.offset, content_length=False)

    def _close_file(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def _send(self, status: bytes, extra: bytes, content_length: bool = True) -> None:
        assert self.transport is not None
        self.transport.write(b"HTTP/1.1 " + status + b"\r\nTus-Resumable: 1.0.0\r\n" + extra
                             + (b"Content-Length: 0\r\n\r\n" if content_length else b"\r\n"))


class _State:
    def __init__(self, directory: str | None) -> None:
        self.directory = directory
        self.lengths: dict[bytes, int] = {}
        self.offsets: dict[bytes, int] = {}


async def serve(kind: str, port: int, directory: str) -> None:
    state = _State(directory if kind == "store" else None)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Connection(state), "127.0.0.1", port, backlog=1024)
    print("listening", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    kind, port_text, directory = sys.argv[1:4]
    if kind not in ("store", "discard"):
        raise SystemExit("kind must be store or discard")
    try:
        asyncio.run(serve(kind, int(port_text), directory))
    except KeyboardInterrupt:
        pass
