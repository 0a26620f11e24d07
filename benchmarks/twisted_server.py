"""
The Twisted ceiling for the benchmark: a twisted.web server with no tus
logic, doing the same flow as txtus with the same machinery underneath.
POST creates C{<dir>/<id>} and streams its body (if any) into it, PATCH
streams its body into the file at C{Upload-Offset}, HEAD answers the
offset kept in a dict.  No validation, no locks, no info files, no
logging.

Bodies are streamed as txtus streams them (a C{Request} subclass acting
in C{gotLength} and C{handleContentChunk}) instead of being buffered by
twisted.web, with Twisted's default read size, a C{Site} that does not
parse POST bodies as forms and no access log: the best a twisted.web
server can do, so txtus's ratio to it is the cost of txtus's own logic.

Usage: C{python twisted_server.py PORT DIR}.
"""

from __future__ import annotations

import os
import sys
import uuid

from twisted.internet import reactor
from twisted.web import resource, server

PREFIX = b"/files/"


class State:
    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.lengths: dict[bytes, bytes] = {}
        self.offsets: dict[bytes, int] = {}

    def path(self, upload_id: bytes) -> str:
        return os.path.join(self.directory, upload_id.decode("ascii"))


class StreamingRequest(server.Request):
    """Writes the body to its file as it arrives, as txtus's TusRequest does."""

    fd = -1
    upload_id = b""
    offset = 0

    def gotLength(self, length: int | None) -> None:
        super().gotLength(0)  # nothing buffered
        # The request line is not public before the body ends on HTTP/1.1
        # (txtus reads the same private attributes, in _twisted_private).
        command, path = self.channel._command, self.channel._path
        state = self.channel.site.state
        if command == b"POST":
            self.upload_id = uuid.uuid4().hex.encode("ascii")
            self.fd = os.open(state.path(self.upload_id), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        elif command == b"PATCH" and path[len(PREFIX):] in state.offsets:
            self.upload_id = path[len(PREFIX):]
            self.offset = state.offsets[self.upload_id]
            self.fd = os.open(state.path(self.upload_id), os.O_WRONLY)

    def handleContentChunk(self, data: bytes) -> None:
        if self.fd >= 0:
            os.pwrite(self.fd, data, self.offset)
        self.offset += len(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        super().requestReceived(command, path, version)

    def connectionLost(self, reason: object) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        super().connectionLost(reason)


class Uploads(resource.Resource):
    isLeaf = True

    def __init__(self, state: State) -> None:
        super().__init__()
        self.state = state

    def render_POST(self, request: StreamingRequest) -> bytes:
        upload_id, state = request.upload_id, self.state
        state.lengths[upload_id] = request.getHeader(b"upload-length") or b"0"
        state.offsets[upload_id] = request.offset
        request.setResponseCode(201)
        request.setHeader(b"tus-resumable", b"1.0.0")
        request.setHeader(b"location", PREFIX + upload_id)
        request.setHeader(b"upload-offset", b"%d" % request.offset)
        return b""

    def render_PATCH(self, request: StreamingRequest) -> bytes:
        if not request.upload_id:
            request.setResponseCode(404)
            return b""
        self.state.offsets[request.upload_id] = request.offset
        request.setResponseCode(204)
        request.setHeader(b"tus-resumable", b"1.0.0")
        request.setHeader(b"upload-offset", b"%d" % request.offset)
        return b""

    def render_HEAD(self, request: StreamingRequest) -> bytes:
        upload_id = request.path[len(PREFIX):]
        if upload_id not in self.state.offsets:
            request.setResponseCode(404)
            return b""
        request.setHeader(b"tus-resumable", b"1.0.0")
        request.setHeader(b"upload-offset", b"%d" % self.state.offsets[upload_id])
        request.setHeader(b"upload-length", self.state.lengths[upload_id])
        request.setHeader(b"cache-control", b"no-store")
        return b""


class QuietSite(server.Site):
    def log(self, request: server.Request) -> None:
        pass  # no access log, as txtus's TusSite


def main(port: int, directory: str) -> None:
    state = State(directory)
    root = resource.Resource()
    root.putChild(b"files", Uploads(state))
    site = QuietSite(root, requestFactory=StreamingRequest, parsePOSTFormSubmission=False)
    site.state = state  # type: ignore[attr-defined]
    reactor.listenTCP(port, site, backlog=1024, interface="127.0.0.1")
    print("listening", flush=True)
    reactor.run()


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
