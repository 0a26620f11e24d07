"""
Bodies the tus resource does not store (a POST that is not
C{application/offset+octet-stream}, HEAD, GET, DELETE, OPTIONS...): read
and dropped up to a small fixed limit, refused with 413 beyond it, never
buffered whole by twisted.web (which spools large bodies to a temporary
file, outside C{--path} and past C{--max-size}).
"""

from __future__ import annotations

import os

import pytest
import pytest_twisted

from tushttp import OCTET, TUS, chunked, connect, create, head, header, request_bytes, upload_id
from txtus.web.body import UNUSED_BODY_LIMIT

CODE = "ERR_REQUEST_BODY_TOO_LARGE"
HUGE = 200 * 1024 * 1024


def _path(url: str) -> str:
    return "/" + url.split("/", 3)[3]


async def _refused(connection) -> None:
    response = await connection.response()
    assert response.status == 413, response
    assert response.text.startswith(CODE + ": "), response.text
    assert response.header("connection") == "close"
    await connection.wait_closed()


@pytest.mark.parametrize("method", ["DELETE", "HEAD", "GET", "OPTIONS", "POST"])
@pytest_twisted.ensureDeferred
async def test_declared_large_body_refused_before_it_is_read(server, method):
    location = await create(server, 10, b"hello")
    target = server.url if method == "POST" else location
    extra = {"Content-Type": "text/plain", "Upload-Length": "5"} if method == "POST" else {}
    connection = await connect(server)
    try:
        # Headers only: the answer must not wait for a byte of the body.
        connection.write(request_bytes(method, _path(target), {**TUS, **extra, "Content-Length": str(HUGE)}))
        response = await connection.response(no_body=method == "HEAD")
        assert response.status == 413, response
        assert response.header("connection") == "close"
        if method != "HEAD":
            assert response.text.startswith(CODE + ": "), response.text
        await connection.wait_closed()
    finally:
        if not connection.is_closed:
            connection.close()
    # Nothing happened to the upload.
    response = await head(location)
    assert (response.code, header(response, "upload-offset")) == (200, "5")


@pytest.mark.parametrize("method", ["DELETE", "POST"])
@pytest_twisted.ensureDeferred
async def test_chunked_body_counted_and_cut(server, upload_dir, method):
    location = await create(server, 10, b"hello")
    target = server.url if method == "POST" else location
    extra = {"Content-Type": "text/plain", "Upload-Length": "5"} if method == "POST" else {}
    before = sorted(os.listdir(upload_dir))
    connection = await connect(server)
    try:
        connection.write(request_bytes(method, _path(target), {
            **TUS, **extra, "Transfer-Encoding": "chunked"}))
        piece = b"x" * 16384
        for _ in range(UNUSED_BODY_LIMIT // len(piece) + 2):
            if connection.is_closed:
                break
            connection.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        await _refused(connection)
    finally:
        if not connection.is_closed:
            connection.close()
    assert sorted(os.listdir(upload_dir)) == before  # not deleted, nothing created
    response = await head(location)
    assert (response.code, header(response, "upload-offset")) == (200, "5")


@pytest_twisted.ensureDeferred
async def test_small_unused_bodies_are_dropped_and_the_connection_kept(server):
    location = await create(server, 10, b"hello")
    connection = await connect(server)
    try:
        connection.write(request_bytes("HEAD", _path(location), {**TUS, "Content-Length": "4"}, b"junk"))
        response = await connection.response(no_body=True)
        assert (response.status, response.header("upload-offset")) == (200, "5")
        connection.write(request_bytes("POST", _path(server.url), {
            **TUS, "Upload-Length": "3", "Content-Type": "text/plain", "Transfer-Encoding": "chunked"},
            chunked(b"ignored", b"too")))
        response = await connection.response()
        assert response.status == 201, response
        assert response.header("upload-offset") is None
        connection.write(request_bytes("DELETE", _path(response.header("location")), {
            **TUS, "Content-Length": str(UNUSED_BODY_LIMIT)}, b"z" * UNUSED_BODY_LIMIT))
        response = await connection.response()
        assert response.status == 204, response
        assert not connection.is_closed
    finally:
        connection.close()
        await connection.wait_closed()
