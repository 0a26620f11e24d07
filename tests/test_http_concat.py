"""
The concatenation extension, after tusd's concat_test.go: partial uploads,
final uploads built from them (absolute and relative URLs, in order, a
partial used twice), and everything a final upload refuses.
"""

import os

import pytest
import pytest_twisted
import treq

from tushttp import (
    OCTET, TUS, create, expect_error, head, header, patch, raw_request, request_bytes, stored, upload_id,
)


def _count(server):
    return len([name for name in os.listdir(server.store.path) if name.endswith(".info")])


async def partial(server, data, length=None, headers=None):
    return await create(server, len(data) if length is None else length, data or None,
                        headers={"Upload-Concat": "partial", **(headers or {})})


async def final(server, concat, headers=None):
    response = await treq.post(server.url, headers={**TUS, "Upload-Concat": concat, **(headers or {})})
    response.text_body = (await response.content()).decode()
    return response


@pytest_twisted.ensureDeferred
async def test_extension_advertised(server):
    response = await treq.request("OPTIONS", server.url)
    await response.content()
    assert "concatenation" in header(response, "tus-extension").split(",")


@pytest_twisted.ensureDeferred
async def test_partial(server):
    location = await partial(server, b"he", length=5)
    status = await head(location)
    assert status.code == 200
    assert header(status, "upload-concat") == "partial"
    assert header(status, "upload-offset") == "2"
    assert header(status, "upload-length") == "5"
    assert server.store.read_info(upload_id(location)).is_partial


@pytest_twisted.ensureDeferred
async def test_final(server):
    a = await partial(server, b"hello", headers={"Upload-Metadata": "name YQ=="})
    b = await partial(server, b"world")
    relative_b = "/files/" + upload_id(b) + "/"
    response = await final(server, f"final; {a} {relative_b}", headers={"Upload-Metadata": "name ZmluYWw="})
    assert (response.code, response.text_body) == (201, "")
    location = header(response, "location")
    info = server.store.read_info(upload_id(location))
    assert info.is_final and not info.is_partial
    assert info.size == 10
    assert info.partial_uploads == [upload_id(a), upload_id(b)]
    assert info.metadata == {"name": "final"}
    assert stored(server, location) == b"helloworld"

    status = await head(location)
    assert header(status, "upload-concat") == f"final;{a} {b}"
    assert header(status, "upload-offset") == header(status, "upload-length") == "10"
    assert header(status, "upload-metadata") == "name ZmluYWw="
    response = await treq.get(location)
    assert await response.content() == b"helloworld"


@pytest_twisted.ensureDeferred
async def test_final_status_urls_follow_host(server):
    a = await partial(server, b"a")
    response = await final(server, f"final;{a} {a}")
    path = "/files/" + upload_id(header(response, "location"))
    raw = await raw_request(server, request_bytes("HEAD", path, TUS, host="tus.io"), no_body=True)
    assert raw.status == 200
    assert raw.header("upload-concat") == f"final;http://tus.io/files/{upload_id(a)} http://tus.io/files/{upload_id(a)}"


@pytest_twisted.ensureDeferred
async def test_order_and_reuse(server):
    a = await partial(server, b"hello")
    b = await partial(server, b"world")
    response = await final(server, f"final;{b} {a} {b}")
    assert response.code == 201
    assert stored(server, header(response, "location")) == b"worldhelloworld"
    # Partials survive and can be used again.
    response = await final(server, f"final;{a}")
    assert stored(server, header(response, "location")) == b"hello"


@pytest_twisted.ensureDeferred
async def test_empty_partial(server):
    a = await partial(server, b"", length=0)
    b = await partial(server, b"xyz")
    response = await final(server, f"final;{a} {b}")
    assert response.code == 201
    assert stored(server, header(response, "location")) == b"xyz"


@pytest_twisted.ensureDeferred
async def test_unfinished_partial(server):
    """
    concatenation-unfinished: the final is accepted at once, has no offset
    while a partial is still uploading, and is filled when it finishes.
    """
    a = await partial(server, b"hel", length=5)
    b = await partial(server, b"world")
    response = await final(server, f"final;{a} {b}")
    assert response.code == 201
    location = header(response, "location")
    status = await head(location)
    assert status.code == 200
    assert header(status, "upload-offset") is None
    assert header(status, "upload-length") == "10"
    assert header(status, "upload-concat") == f"final;{a} {b}"
    response = await patch(location, 0, b"x")
    assert response.code == 403
    assert header(await patch(a, 3, b"lo"), "upload-offset") == "5"
    status = await head(location)
    assert header(status, "upload-offset") == header(status, "upload-length") == "10"
    response = await treq.get(location)
    assert await response.content() == b"helloworld"


@pytest_twisted.ensureDeferred
async def test_partial_with_deferred_length(server):
    a = await create(server, None, b"hel", headers={"Upload-Concat": "partial"})
    response = await final(server, f"final;{a}")
    assert response.code == 400
    assert response.text_body.startswith("ERR_INVALID_CONCAT: ")
    assert _count(server) == 1


@pytest_twisted.ensureDeferred
async def test_exceeding_max_size(server_factory):
    server = await server_factory(max_size=400)
    a = await partial(server, b"x" * 300)
    b = await partial(server, b"y" * 300)
    response = await final(server, f"final;{a} {b}")
    assert response.code == 413
    assert response.text_body.startswith("ERR_MAX_SIZE_EXCEEDED: ")
    assert _count(server) == 2


@pytest_twisted.ensureDeferred
async def test_patch_to_final(server):
    a = await partial(server, b"hello")
    location = header(await final(server, f"final;{a}"), "location")
    for offset in (5, 0):
        response = await patch(location, offset, b"more")
        assert response.code == 403, response.text_body
        assert response.text_body.startswith("ERR_MODIFY_FINAL: ")
    assert stored(server, location) == b"hello"


@pytest_twisted.ensureDeferred
async def test_final_with_body(server):
    a = await partial(server, b"hello")
    before = _count(server)
    response = await treq.post(server.url, b"world", headers={
        **TUS, "Upload-Concat": f"final;{a}", "Content-Type": OCTET})
    await expect_error(response, 403, "ERR_MODIFY_FINAL")
    assert _count(server) == before


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("concat", ["final;", "final; ", "final", "bogus", "partial;x", "Final;/files/x", ""])
async def test_invalid_concat_header(server, concat):
    response = await treq.post(server.url, headers={**TUS, "Upload-Concat": concat, "Upload-Length": "5"})
    await expect_error(response, 400, "ERR_INVALID_CONCAT")
    assert _count(server) == 0


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("header_name, value", [("Upload-Length", "5"), ("Upload-Defer-Length", "1")])
async def test_final_with_length(server, header_name, value):
    a = await partial(server, b"hello")
    response = await final(server, f"final;{a}", headers={header_name: value})
    assert response.code == 400
    assert response.text_body.startswith("ERR_INVALID_CONCAT: ")
    assert _count(server) == 1


@pytest_twisted.ensureDeferred
async def test_final_of_non_partial(server):
    plain = await create(server, 5, b"hello")
    response = await final(server, f"final;{plain}")
    assert response.code == 400
    assert response.text_body.startswith("ERR_INVALID_CONCAT: ")
    assert _count(server) == 1


@pytest_twisted.ensureDeferred
async def test_final_of_final(server):
    a = await partial(server, b"hello")
    first = header(await final(server, f"final;{a}"), "location")
    response = await final(server, f"final;{first}")
    assert response.code == 400
    assert response.text_body.startswith("ERR_INVALID_CONCAT: ")


@pytest_twisted.ensureDeferred
async def test_final_of_unknown_upload(server):
    a = await partial(server, b"hello")
    response = await final(server, f"final;{a} /files/0123456789abcdef")
    assert response.code == 404
    assert response.text_body.startswith("ERR_UPLOAD_NOT_FOUND: ")
    assert _count(server) == 1


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("url", ["/elsewhere/{id}", "/files/..%2f{id}", "/files/../files/{id}",
                                 "/files/{id}/extra", "/files/", "{id}"])
async def test_final_of_foreign_url(server, url):
    a = await partial(server, b"hello")
    response = await final(server, "final;" + url.format(id=upload_id(a)))
    assert response.code == 400, response.text_body
    assert response.text_body.startswith("ERR_INVALID_CONCAT: ")
    assert _count(server) == 1


@pytest_twisted.ensureDeferred
async def test_concatenation_disabled(server_factory):
    server = await server_factory(disable_concatenation=True)
    response = await treq.post(server.url, headers={**TUS, "Upload-Concat": "partial", "Upload-Length": "5"})
    await expect_error(response, 400, "ERR_CONCATENATION_UNSUPPORTED")
    plain = await create(server, 5, b"hello")
    response = await final(server, f"final;{plain}")
    assert response.code == 400
    assert response.text_body.startswith("ERR_CONCATENATION_UNSUPPORTED: ")
    assert _count(server) == 1


@pytest_twisted.ensureDeferred
async def test_nested_base_path(server_factory):
    server = await server_factory(base_path="api/v1/uploads")
    assert server.url.endswith("/api/v1/uploads/")
    a = await partial(server, b"hello")
    assert a.startswith(server.url)
    response = await final(server, f"final;/api/v1/uploads/{upload_id(a)} {a}")
    assert response.code == 201, response.text_body
    location = header(response, "location")
    assert location.startswith(server.url)
    assert header(await head(location), "upload-concat") == f"final;{a} {a}"
    assert stored(server, location) == b"hellohello"
    response = await final(server, f"final;/files/{upload_id(a)}")
    assert response.code == 400


@pytest_twisted.ensureDeferred
async def test_absolute_base_path(server_factory):
    server = await server_factory(base_path="https://buy.art/files/")
    a = await partial(server, b"hello")
    assert a.startswith("https://buy.art/files/")
    response = await final(server, f"final;{a} /files/{upload_id(a)}")
    assert response.code == 201, response.text_body
    location = header(response, "location")
    assert location.startswith("https://buy.art/files/")
    local = server.url + upload_id(location)
    assert header(await head(local), "upload-concat") == f"final;{a} {a}"
    assert stored(server, location) == b"hellohello"


@pytest_twisted.ensureDeferred
async def test_final_never_built_from_an_unverified_checksummed_chunk(server):
    """
    Issue 11: a final created while a partial's checksummed PATCH has sent
    all its bytes (the last-chunk marker held back) must not be completed
    from those unverified bytes; once the digest fails (460) the final is
    still waiting, and GET on it returns nothing of them.
    """
    import base64
    import hashlib

    from tushttp import connect, wait_for

    location = await partial(server, b"", length=5)
    wrong = "sha1 " + base64.b64encode(hashlib.sha1(b"other").digest()).decode()
    connection = await connect(server)
    connection.write(request_bytes("PATCH", "/" + location.split("/", 3)[3], {
        **TUS, "Upload-Offset": "0", "Content-Type": OCTET, "Upload-Checksum": wrong,
        "Transfer-Encoding": "chunked"}, b"5\r\nhello\r\n"))

    async def received():
        # Wherever the store keeps them, the 5 bytes have arrived.
        return sum(os.path.getsize(os.path.join(server.store.path, name))
                   for name in os.listdir(server.store.path) if not name.endswith(".info")) == 5

    await wait_for(received)
    assert stored(server, location) == b""
    response = await final(server, "final;" + location)
    assert response.code == 201
    final_location = header(response, "location")
    connection.write(b"0\r\n\r\n")
    answer = await connection.response()
    assert answer.status == 460
    status = await head(final_location)
    assert status.code == 200 and header(status, "upload-offset") is None
    download = await treq.get(final_location)
    assert await download.content() == b""
    assert stored(server, final_location) == b""
