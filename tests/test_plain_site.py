"""
A L{TusResource} mounted in a stock C{twisted.web.server.Site} (no
L{TusRequest}): every verb still works, on the body twisted.web buffered,
over real loopback HTTP.  What is lost there is pinned too: a body cut off
mid-way never reaches the resource, so none of its bytes are kept.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.web.resource import Resource
from twisted.web.server import Site

from tushttp import OCTET, TUS, connect, request_bytes
from txtus import FileStore, MemoryLocker, StoreComposer, TusConfig, TusResource
from txtus.service import mount
from txtus.web.streaming import TusRequest


class PlainServer:
    def __init__(self, path: str, port: Any, store: FileStore, site: Site) -> None:
        self.port = port
        self.store = store
        self.site = site
        self.port_number = port.getHost().port
        self.url = f"http://127.0.0.1:{self.port_number}/api/files/"


@pytest.fixture
def plain(upload_dir):
    composer = StoreComposer()
    store = FileStore(str(upload_dir))
    store.use_in(composer)
    MemoryLocker(reactor=reactor).use_in(composer)
    root = Resource()
    mount(root, "/api/files/", TusResource(TusConfig(composer=composer, reactor=reactor)))
    site = Site(root)
    port = pytest_twisted.blockon(TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(site))
    yield PlainServer(str(upload_dir), port, store, site)
    pytest_twisted.blockon(port.stopListening())


def read(server: PlainServer, location: str) -> bytes:
    with open(server.store.data_path(location.rsplit("/", 1)[1]), "rb") as f:
        return f.read()


def test_site_is_stock(plain: PlainServer) -> None:
    """The point of these tests: no streaming request in this site."""
    assert not issubclass(plain.site.requestFactory, TusRequest)


@pytest.mark.parametrize("size", [5, 300 * 1024])  # in memory / in a temporary file
@pytest_twisted.ensureDeferred
async def test_create_patch_head(plain: PlainServer, size: int) -> None:
    data = os.urandom(size)
    response = await treq.post(plain.url, headers={**TUS, "Upload-Length": str(size)})
    assert response.code == 201
    location = response.headers.getRawHeaders("location")[0]
    assert location.startswith(plain.url)
    response = await treq.patch(location, data, headers={**TUS, "Upload-Offset": "0", "Content-Type": OCTET})
    assert response.code == 204, await response.text()
    assert response.headers.getRawHeaders("upload-offset") == [str(size)]
    response = await treq.head(location, headers=TUS)
    assert response.code == 200
    assert response.headers.getRawHeaders("upload-offset") == [str(size)]
    assert response.headers.getRawHeaders("upload-length") == [str(size)]
    assert read(plain, location) == data


@pytest_twisted.ensureDeferred
async def test_creation_with_upload_and_resume(plain: PlainServer) -> None:
    response = await treq.post(plain.url, b"hello ", headers={
        **TUS, "Upload-Length": "11", "Content-Type": OCTET})
    assert response.code == 201
    assert response.headers.getRawHeaders("upload-offset") == ["6"]
    location = response.headers.getRawHeaders("location")[0]
    response = await treq.patch(location, b"wrong", headers={**TUS, "Upload-Offset": "0", "Content-Type": OCTET})
    assert response.code == 409
    response = await treq.patch(location, b"world", headers={**TUS, "Upload-Offset": "6", "Content-Type": OCTET})
    assert response.code == 204
    assert read(plain, location) == b"hello world"


@pytest_twisted.ensureDeferred
async def test_cut_body_is_lost_in_a_plain_site(plain: PlainServer) -> None:
    """
    The documented cost of a plain Site: twisted.web drops a request whose
    body never completed, so the upload's offset stays where it was.
    """
    response = await treq.post(plain.url, headers={**TUS, "Upload-Length": "1000"})
    location = response.headers.getRawHeaders("location")[0]
    connection = await connect(plain)
    path = "/" + location.split("/", 3)[3]
    connection.write(request_bytes("PATCH", path, {**TUS, "Upload-Offset": "0", "Content-Type": OCTET,
                                                  "Content-Length": "1000"}) + b"x" * 400)
    connection.close()
    await connection.wait_closed()
    response = await treq.head(location, headers=TUS)
    assert response.headers.getRawHeaders("upload-offset") == ["0"]
    response = await treq.patch(location, b"y" * 1000, headers={**TUS, "Upload-Offset": "0", "Content-Type": OCTET})
    assert response.code == 204
    assert read(plain, location) == b"y" * 1000
