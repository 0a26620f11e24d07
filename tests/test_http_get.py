"""
GET (download), after tusd's get_test.go: what has arrived so far is
served, with a Content-Type / Content-Disposition that cannot make a browser
run uploaded script.
"""

import base64
import os

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.logger import globalLogPublisher

from tushttp import TIMEOUT, TUS, create, expect_error, header, patch, raw_request, request_bytes, upload_id


def metadata(**values):
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in values.items())


@pytest_twisted.ensureDeferred
async def test_download(server):
    location = await create(server, 20, b"hello", headers={
        "Upload-Metadata": metadata(filename='file.jpg"evil', filetype="image/jpeg")})
    response = await treq.get(location)
    assert await response.content() == b"hello"
    assert response.code == 200
    assert response.length == 5  # Twisted's client keeps Content-Length out of headers
    assert header(response, "content-type") == "image/jpeg"
    assert header(response, "content-disposition") == 'inline;filename="file.jpg\\"evil"'
    assert header(response, "tus-resumable") == "1.0.0"
    assert header(response, "x-content-type-options") == "nosniff"


@pytest_twisted.ensureDeferred
async def test_download_grows_with_the_upload(server):
    location = await create(server, 10, b"hello")
    assert await (await treq.get(location)).content() == b"hello"
    await patch(location, 5, b"world")
    assert await (await treq.get(location)).content() == b"helloworld"


@pytest_twisted.ensureDeferred
async def test_empty_download(server):
    location = await create(server, 20)
    raw = await raw_request(server, request_bytes("GET", "/" + location.split("/", 3)[3], {}))
    assert raw.status == 204
    assert raw.header("content-disposition") == "attachment"
    assert raw.header("content-type") == "application/octet-stream"
    # RFC 9110 8.6: no Content-Length on a 204 (tusd sends "0").
    assert raw.header("content-length") is None
    assert raw.header("transfer-encoding") is None


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("filetype, content_type, disposition", [
    ("non-a-valid-mime-type", "application/octet-stream", "attachment"),
    ("text/html", "text/html", "attachment"),
    ("image/svg+xml", "image/svg+xml", "attachment"),
    ("application/vnd.openxmlformats-officedocument.wordprocessingml.document",
     "application/vnd.openxmlformats-officedocument.wordprocessingml.document", "attachment"),
    ("image/png", "image/png", "inline"),
    ("audio/ogg; codecs=opus", "audio/ogg; codecs=opus", "inline"),
    ("audio/ogg; codecs=opus; codecs=vorbis", "application/octet-stream", "attachment"),
    ("text/plain\r\nX-Evil: 1", "application/octet-stream", "attachment"),
])
async def test_file_types(server, filetype, content_type, disposition):
    location = await create(server, 5, b"hello", headers={
        "Upload-Metadata": metadata(filetype=filetype, filename="invoice.docx")})
    response = await treq.get(location)
    assert await response.content() == b"hello"
    assert header(response, "content-type") == content_type
    assert header(response, "content-disposition") == disposition + ';filename="invoice.docx"'
    assert header(response, "x-evil") is None


@pytest_twisted.ensureDeferred
async def test_no_metadata(server):
    location = await create(server, 5, b"hello")
    response = await treq.get(location)
    assert await response.content() == b"hello"
    assert header(response, "content-type") == "application/octet-stream"
    assert header(response, "content-disposition") == "attachment"


@pytest_twisted.ensureDeferred
async def test_filename_cannot_inject_headers(server):
    location = await create(server, 5, b"hello", headers={
        "Upload-Metadata": metadata(filename="a\r\nSet-Cookie: x=1\r\n\u00e9.txt")})
    raw = await raw_request(server, request_bytes("GET", "/" + location.split("/", 3)[3], {"Connection": "close"}))
    assert raw.status == 200
    assert raw.body == b"hello"
    assert "set-cookie" not in raw.headers
    disposition = raw.header("content-disposition")
    assert "\r" not in disposition and "\n" not in disposition
    assert disposition.startswith('attachment;filename="')
    assert "filename*=UTF-8''" in disposition


@pytest_twisted.ensureDeferred
async def test_large_download(server):
    data = os.urandom(2 * 1024 * 1024 + 3)
    location = await create(server, len(data), data)
    response = await treq.get(location)
    assert await response.content() == data
    assert response.length == len(data)


@pytest_twisted.ensureDeferred
async def test_get_without_tus_resumable(server):
    location = await create(server, 5, b"hello")
    raw = await raw_request(server, request_bytes("GET", "/" + location.split("/", 3)[3], {}))
    assert raw.status == 200
    assert raw.body == b"hello"


@pytest_twisted.ensureDeferred
async def test_not_found(server):
    response = await treq.get(server.url + "0123456789abcdef")
    await expect_error(response, 404, "ERR_UPLOAD_NOT_FOUND")


@pytest_twisted.ensureDeferred
async def test_get_on_creation_url(server):
    response = await treq.get(server.url, headers=TUS)
    await expect_error(response, 405, "ERR_METHOD_NOT_ALLOWED")


@pytest_twisted.ensureDeferred
async def test_download_disabled(server_factory):
    server = await server_factory(disable_download=True)
    location = await create(server, 5, b"hello")
    response = await treq.get(location, headers=TUS)
    body = await expect_error(response, 405, "ERR_DOWNLOAD_DISABLED")
    assert "hello" not in body
    assert "GET" not in header(response, "allow")


@pytest.mark.parametrize("wait_for_lock", [False, True])
@pytest_twisted.ensureDeferred
async def test_unreadable_data_file_is_a_logged_500_not_a_hang(server, upload_dir, wait_for_lock):
    """
    A data file that cannot be opened (here replaced by a directory, as a
    second process or an operator might leave it) fails inside the
    response's sending: the client still gets an answer with an error code,
    and the failure is logged with the upload's ID.  Also when the GET had
    to wait for the upload's lock, so its answer is written from a later
    reactor turn.
    """
    location = await create(server, 20, b"hello")
    data_path = server.store.data_path(upload_id(location))
    os.unlink(data_path)
    os.mkdir(data_path)
    logged = []
    globalLogPublisher.addObserver(logged.append)
    try:
        lock = None
        if wait_for_lock:
            lock = await server.config.composer.locker.lock(upload_id(location), lambda: None)
        answer = treq.get(location, timeout=TIMEOUT)
        if lock is not None:
            await deferLater(reactor, 0.05, lambda: None)
            await lock.unlock()
        response = await answer
        await expect_error(response, 500, "ERR_INTERNAL_SERVER_ERROR")
    finally:
        globalLogPublisher.removeObserver(logged.append)
    assert any(event.get("upload_id") == upload_id(location) and event.get("log_failure") for event in logged)
    # The server goes on serving other uploads.
    other = await create(server, 5, b"hello")
    assert await (await treq.get(other)).content() == b"hello"


# Range (single ranges, as tusd serves them through Go's http.ServeContent) ----

@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("range_header, status, body, content_range", [
    ("bytes=0-4", 206, b"01234", "bytes 0-4/10"),
    ("bytes=3-", 206, b"3456789", "bytes 3-9/10"),
    ("bytes=-3", 206, b"789", "bytes 7-9/10"),
    ("bytes=8-100", 206, b"89", "bytes 8-9/10"),
    ("bytes=-100", 206, b"0123456789", "bytes 0-9/10"),
    ("BYTES = 9-9", 206, b"9", "bytes 9-9/10"),
    ("bytes=0-1,4-5", 200, b"0123456789", None),  # several ranges: the whole upload
    ("bytes=5-2", 200, b"0123456789", None),  # backwards: ignored
    ("items=0-1", 200, b"0123456789", None),
    ("bytes=abc", 200, b"0123456789", None),
])
async def test_download_range(server, range_header, status, body, content_range):
    location = await create(server, 20, b"0123456789")
    response = await treq.get(location, headers={"Range": range_header})
    assert (response.code, await response.content()) == (status, body)
    assert response.length == len(body)
    assert header(response, "content-range") == content_range
    assert header(response, "accept-ranges") == "bytes"


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("range_header", ["bytes=10-", "bytes=10-12", "bytes=-0"])
async def test_download_range_not_satisfiable(server, range_header):
    location = await create(server, 20, b"0123456789")
    response = await treq.get(location, headers={"Range": range_header})
    assert response.code == 416
    assert header(response, "content-range") == "bytes */10"
    assert (await response.content()).startswith(b"ERR_RANGE_NOT_SATISFIABLE")


@pytest_twisted.ensureDeferred
async def test_if_range_sends_the_whole_upload(server):
    location = await create(server, 20, b"0123456789")
    response = await treq.get(location, headers={"Range": "bytes=0-1", "If-Range": '"some-etag"'})
    assert (response.code, await response.content()) == (200, b"0123456789")
