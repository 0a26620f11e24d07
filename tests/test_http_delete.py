"""
DELETE (termination), after tusd's terminate_test.go: finished and
unfinished uploads, uploads being written, the switch that turns it off.
"""

import os

import pytest
import pytest_twisted
import treq

from tushttp import OCTET, TUS, connect, create, expect_error, head, header, request_bytes, upload_id, wait_for


def _files(server):
    return sorted(os.listdir(server.store.path))


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("body", [None, b"he", b"hello"])
async def test_terminate(server, body):
    location = await create(server, 5, body)
    response = await treq.delete(location, headers=TUS)
    assert await response.content() == b""
    assert response.code == 204
    assert header(response, "tus-resumable") == "1.0.0"
    assert _files(server) == []
    status = await head(location)
    assert status.code == 404
    response = await treq.patch(location, b"x", headers={**TUS, "Upload-Offset": "0", "Content-Type": OCTET})
    await expect_error(response, 404, "ERR_UPLOAD_NOT_FOUND")
    response = await treq.delete(location, headers=TUS)
    await expect_error(response, 404, "ERR_UPLOAD_NOT_FOUND")


@pytest_twisted.ensureDeferred
async def test_terminate_only_that_upload(server):
    keep = await create(server, 5, b"keep!")
    drop = await create(server, 5)
    response = await treq.delete(drop, headers=TUS)
    await response.content()
    assert response.code == 204
    assert _files(server) == sorted([upload_id(keep), upload_id(keep) + ".info"])
    response = await treq.get(keep)
    assert await response.content() == b"keep!"


@pytest_twisted.ensureDeferred
async def test_not_found(server):
    response = await treq.delete(server.url + "0123456789abcdef", headers=TUS)
    await expect_error(response, 404, "ERR_UPLOAD_NOT_FOUND")


@pytest_twisted.ensureDeferred
async def test_needs_tus_resumable(server):
    location = await create(server, 5)
    response = await treq.delete(location)
    await expect_error(response, 412, "ERR_UNSUPPORTED_VERSION")
    assert (await head(location)).code == 200


@pytest_twisted.ensureDeferred
async def test_delete_on_creation_url(server):
    location = await create(server, 5)
    response = await treq.delete(server.url, headers=TUS)
    await expect_error(response, 405, "ERR_METHOD_NOT_ALLOWED")
    assert (await head(location)).code == 200


@pytest_twisted.ensureDeferred
async def test_termination_disabled(server_factory):
    server = await server_factory(disable_termination=True)
    location = await create(server, 5)
    response = await treq.delete(location, headers=TUS)
    await expect_error(response, 501, "ERR_NOT_IMPLEMENTED")
    assert (await head(location)).code == 200


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("method", ["POST", "GET", "PUT"])
async def test_method_override(server, method):
    location = await create(server, 5)
    response = await treq.request(method, location, headers={**TUS, "X-HTTP-Method-Override": "DELETE"})
    assert await response.content() == b""
    assert response.code == 204
    assert (await head(location)).code == 404


@pytest_twisted.ensureDeferred
async def test_terminate_during_patch(server):
    """A DELETE takes the lock from a stalled PATCH, then removes the upload."""
    location = await create(server, 10)
    connection = await connect(server)
    path = "/" + location.split("/", 3)[3]
    try:
        connection.write(request_bytes("PATCH", path, {
            **TUS, "Upload-Offset": "0", "Content-Type": OCTET, "Content-Length": "10"}) + b"abc")

        async def three_bytes():
            return os.path.getsize(server.store.data_path(upload_id(location))) == 3
        await wait_for(three_bytes)
        response = await treq.delete(location, headers=TUS)
        await response.content()
        assert response.code == 204
        raw = await connection.response()
        assert raw.status == 400
        assert raw.text.startswith("ERR_UPLOAD_INTERRUPTED: ")
    finally:
        connection.close()
        await connection.wait_closed()
    assert _files(server) == []
    assert (await head(location)).code == 404
