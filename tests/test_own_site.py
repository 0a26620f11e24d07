"""
Embedding way 2 (docs/embedding.md, docs/plain-site.md): the tus resource
mounted in the embedder's own twisted.web Site, made with
requestFactory=TusRequest.  Bodies then stream, so the bytes of a cut-off
PATCH are kept, unlike in a stock Site (tests/test_plain_site.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.web.resource import Resource
from twisted.web.server import Site

import txtus
from tushttp import OCTET, TUS, connect, create, head, header, patch, request_bytes, wait_for


@dataclass
class _Server:
    url: str
    port_number: int
    port: Any


async def _listen(tmp_path, request_factory=None) -> _Server:
    composer = txtus.StoreComposer()
    txtus.FileStore(str(tmp_path / "uploads")).use_in(composer)
    txtus.MemoryLocker(reactor=reactor).use_in(composer)
    config = txtus.TusConfig(composer=composer, reactor=reactor)
    root = Resource()
    txtus.mount(root, "/files/", txtus.TusResource(config))
    site = Site(root) if request_factory is None else Site(root, requestFactory=request_factory)
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    number = port.getHost().port
    return _Server(f"http://127.0.0.1:{number}/files/", number, port)


async def _cut_patch(server: _Server, url: str, sent: bytes, announced: int) -> None:
    """A PATCH that announces C{announced} bytes, sends C{sent} and hangs up."""
    connection = await connect(server)
    connection.write(request_bytes("PATCH", url.split(str(server.port_number), 1)[1], {
        **TUS, "Upload-Offset": "0", "Content-Type": OCTET, "Content-Length": str(announced)}, sent))
    connection.close()
    await connection.wait_closed()


@pytest_twisted.ensureDeferred
async def test_own_site_with_tus_request_serves_uploads(tmp_path):
    server = await _listen(tmp_path, txtus.TusRequest)
    try:
        url = await create(server, 11)
        response = await patch(url, 0, b"hello world")
        assert response.code == 204, response.text_body
        assert header(response, "upload-offset") == "11"
        download = await treq.get(url)
        assert await download.content() == b"hello world"
    finally:
        await server.port.stopListening()


@pytest_twisted.ensureDeferred
async def test_tus_request_factory_keeps_a_cut_body(tmp_path):
    server = await _listen(tmp_path, txtus.TusRequest)
    try:
        url = await create(server, 200_000)
        await _cut_patch(server, url, b"x" * 100_000, 200_000)

        async def offset_is_kept() -> bool:
            return header(await head(url), "upload-offset") == "100000"

        await wait_for(offset_is_kept)
    finally:
        await server.port.stopListening()
