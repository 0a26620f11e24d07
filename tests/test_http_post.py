"""
POST (creation, creation-defer-length, creation-with-upload), after tusd's
post_test.go, against a real server; where tusd is lenient with
Upload-Metadata, txtus follows the spec and refuses it.
"""

import os
import re

import pytest
import pytest_twisted
import treq

from tushttp import (
    OCTET, TUS, connect, create, expect_error, head, header, raw_request, request_bytes, stored, text, upload_id,
    wait_for,
)


def upload_ids(server):
    return sorted(name for name in os.listdir(server.store.path) if not name.endswith(".info"))


@pytest_twisted.ensureDeferred
async def test_create(server):
    response = await treq.post(server.url, headers={
        **TUS, "Upload-Length": "300", "Upload-Metadata": "foo aGVsbG8=, bar d29ybGQ=, empty"})
    assert await response.content() == b""
    assert response.code == 201
    location = header(response, "location")
    assert re.fullmatch(rf"http://127\.0\.0\.1:{server.port_number}/files/[A-Za-z0-9_-]+", location)
    assert header(response, "upload-offset") is None
    assert upload_ids(server) == [upload_id(location)]
    info = server.store.read_info(upload_id(location))
    assert info.size == 300
    assert info.offset == 0
    assert info.metadata == {"foo": "hello", "bar": "world", "empty": ""}
    status = await head(location)
    assert status.code == 200
    assert header(status, "upload-length") == "300"
    assert header(status, "upload-offset") == "0"


@pytest_twisted.ensureDeferred
async def test_ids_are_unique(server):
    locations = {await create(server, 1) for _ in range(5)}
    assert len(locations) == 5


@pytest_twisted.ensureDeferred
async def test_location_uses_host_header(server):
    raw = await raw_request(server, request_bytes(
        "POST", "/files/", {**TUS, "Upload-Length": "3", "Content-Length": "0"}, host="tus.io"))
    assert raw.status == 201
    assert re.fullmatch(r"http://tus\.io/files/[A-Za-z0-9_-]+", raw.header("location"))


@pytest_twisted.ensureDeferred
async def test_location_with_absolute_base_path(server_factory):
    server = await server_factory(base_path="https://buy.art/files/")
    response = await treq.post(server.url, headers={**TUS, "Upload-Length": "3"})
    await response.content()
    assert response.code == 201
    location = header(response, "location")
    assert re.fullmatch(r"https://buy\.art/files/[A-Za-z0-9_-]+", location)
    assert upload_ids(server) == [upload_id(location)]


@pytest_twisted.ensureDeferred
async def test_create_empty_upload(server):
    location = await create(server, 0)
    info = server.store.read_info(upload_id(location))
    assert info.size == 0 and info.offset == 0
    status = await head(location)
    assert header(status, "upload-offset") == "0"
    assert header(status, "upload-length") == "0"
    # Complete at once: nothing more may be written.
    response = await treq.get(location)
    assert await response.content() == b""
    assert response.code == 204


@pytest_twisted.ensureDeferred
async def test_create_deferred_length(server):
    location = await create(server, None)
    status = await head(location)
    assert header(status, "upload-defer-length") == "1"
    assert header(status, "upload-length") is None
    assert server.store.read_info(upload_id(location)).size is None


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("max_size, length", [(400, 500), (400, 401), (1, 2)])
async def test_exceeding_max_size(server_factory, max_size, length):
    server = await server_factory(max_size=max_size)
    response = await treq.post(server.url, headers={**TUS, "Upload-Length": str(length)})
    await expect_error(response, 413, "ERR_MAX_SIZE_EXCEEDED")
    assert upload_ids(server) == []


@pytest_twisted.ensureDeferred
async def test_exactly_max_size(server_factory):
    server = await server_factory(max_size=400)
    await create(server, 400)


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("length", ["-5", "abc", "1.5", "0x10", "+5", "1e3", "", "9223372036854775808",
                                    "99999999999999999999999"])
async def test_invalid_upload_length(server, length):
    response = await treq.post(server.url, headers={**TUS, "Upload-Length": length})
    await expect_error(response, 400, "ERR_INVALID_UPLOAD_LENGTH")
    assert upload_ids(server) == []


@pytest_twisted.ensureDeferred
async def test_upload_length_and_defer_length(server):
    response = await treq.post(server.url, headers={**TUS, "Upload-Length": "10", "Upload-Defer-Length": "1"})
    await expect_error(response, 400, "ERR_AMBIGUOUS_UPLOAD_LENGTH")
    assert upload_ids(server) == []


@pytest_twisted.ensureDeferred
async def test_neither_upload_length_nor_defer_length(server):
    response = await treq.post(server.url, headers=TUS)
    await expect_error(response, 400, "ERR_AMBIGUOUS_UPLOAD_LENGTH")
    assert upload_ids(server) == []


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("value", ["bad", "0", "2", "true"])
async def test_invalid_defer_length(server, value):
    response = await treq.post(server.url, headers={**TUS, "Upload-Defer-Length": value})
    await expect_error(response, 400, "ERR_INVALID_UPLOAD_LENGTH_DEFER")
    assert upload_ids(server) == []


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("metadata", [
    "foo aGVsbG8=, hah INVALID",      # tusd drops the pair silently
    "foo aGVsbG8=,foo d29ybGQ=",      # tusd keeps the last one
    "foo aGVsbG8",                     # bad padding
    "foo aGVs bG8=",                   # two spaces
    "f\u00f6o aGVsbG8=",               # not ASCII
])
async def test_invalid_metadata(server, metadata):
    response = await treq.post(server.url, headers={
        **TUS, "Upload-Length": "5", "Upload-Metadata": metadata.encode("utf-8")})
    await expect_error(response, 400, "ERR_INVALID_METADATA")
    assert upload_ids(server) == []


@pytest_twisted.ensureDeferred
async def test_post_to_an_upload_url(server):
    location = await create(server, 5)
    response = await treq.post(location, headers={**TUS, "Upload-Length": "5"})
    await expect_error(response, 405, "ERR_METHOD_NOT_ALLOWED")
    assert upload_ids(server) == [upload_id(location)]


# Proxies -------------------------------------------------------------------

async def _location(server_factory, headers, behind_proxy=True):
    server = await server_factory(behind_proxy=behind_proxy)
    raw = await raw_request(server, request_bytes(
        "POST", "/files/", {**TUS, "Upload-Length": "3", "Content-Length": "0", **headers}, host="tus.io"))
    assert raw.status == 201
    location = raw.header("location")
    prefix, _, name = location.rpartition("/")
    assert re.fullmatch(r"[A-Za-z0-9_-]+", name)
    return prefix + "/"


@pytest_twisted.ensureDeferred
async def test_forwarded_headers_ignored_by_default(server_factory):
    assert await _location(server_factory, {
        "X-Forwarded-Host": "foo.com", "X-Forwarded-Proto": "https",
        "Forwarded": "proto=https;host=bar.com"}, behind_proxy=False) == "http://tus.io/files/"


@pytest_twisted.ensureDeferred
async def test_respect_x_forwarded(server_factory):
    assert await _location(server_factory, {
        "X-Forwarded-Host": "foo.com", "X-Forwarded-Proto": "https"}) == "https://foo.com/files/"


@pytest_twisted.ensureDeferred
async def test_forwarded_wins_over_x_forwarded(server_factory):
    assert await _location(server_factory, {
        "X-Forwarded-Host": "foo.com", "X-Forwarded-Proto": "http",
        "Forwarded": "for=192.168.10.112;host=upload.example.tld;proto=https;proto-version="}) == \
        "https://upload.example.tld/files/"


@pytest_twisted.ensureDeferred
async def test_forwarded_with_quotes_keeps_port(server_factory):
    assert await _location(server_factory, {
        "Forwarded": 'for=192.168.10.112;host="upload.example.tld:8443";proto=https'}) == \
        "https://upload.example.tld:8443/files/"


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("proto", ["aaa", "ftp", "javascript"])
async def test_filter_forwarded_protocol(server_factory, proto):
    assert await _location(server_factory, {"X-Forwarded-Proto": proto}) == "http://tus.io/files/"
    assert await _location(server_factory, {"Forwarded": f"proto={proto}"}) == "http://tus.io/files/"


@pytest_twisted.ensureDeferred
async def test_remove_default_ports(server_factory):
    assert await _location(server_factory, {
        "X-Forwarded-Host": "foo.com:443", "X-Forwarded-Proto": "https"}) == "https://foo.com/files/"
    assert await _location(server_factory, {
        "X-Forwarded-Host": "foo.com:80", "X-Forwarded-Proto": "http"}) == "http://foo.com/files/"
    assert await _location(server_factory, {
        "X-Forwarded-Host": "foo.com:80", "X-Forwarded-Proto": "https"}) == "https://foo.com:80/files/"


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("bad_host", ["evil.com/path", "evil.com\\x", "a b", "evil.com\"", "<script>"])
async def test_odd_forwarded_host_is_ignored(server_factory, bad_host):
    assert await _location(server_factory, {"X-Forwarded-Host": bad_host}) == "http://tus.io/files/"


# creation-with-upload ------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_create_with_upload(server):
    response = await treq.post(server.url, b"hello", headers={
        **TUS, "Upload-Length": "300", "Content-Type": OCTET})
    assert await response.content() == b""
    assert response.code == 201
    assert header(response, "upload-offset") == "5"
    location = header(response, "location")
    assert stored(server, location) == b"hello"
    assert header(await head(location), "upload-offset") == "5"


@pytest_twisted.ensureDeferred
async def test_create_with_complete_upload(server):
    location = await create(server, 5, b"hello")
    response = await treq.get(location)
    assert await response.content() == b"hello"
    status = await head(location)
    assert header(status, "upload-offset") == header(status, "upload-length") == "5"


@pytest_twisted.ensureDeferred
async def test_create_with_upload_deferred_length(server):
    location = await create(server, None, b"hello")
    status = await head(location)
    assert header(status, "upload-offset") == "5"
    assert header(status, "upload-defer-length") == "1"


@pytest_twisted.ensureDeferred
async def test_create_with_upload_exceeding_upload_size(server):
    response = await treq.post(server.url, b"x" * 400, headers={
        **TUS, "Upload-Length": "300", "Content-Type": OCTET})
    await expect_error(response, 413, "ERR_UPLOAD_SIZE_EXCEEDED")
    # Content-Length already tells: refused before anything is created.
    assert header(response, "location") is None
    assert upload_ids(server) == []


@pytest_twisted.ensureDeferred
async def test_create_with_upload_exceeding_max_size_when_deferred(server_factory):
    server = await server_factory(max_size=10)
    response = await treq.post(server.url, b"x" * 11, headers={
        **TUS, "Upload-Defer-Length": "1", "Content-Type": OCTET})
    await expect_error(response, 413, "ERR_UPLOAD_SIZE_EXCEEDED")


@pytest_twisted.ensureDeferred
async def test_create_with_upload_incorrect_content_type(server):
    """A body of another type is not upload data: ignored, no Upload-Offset."""
    response = await treq.post(server.url, b"hello", headers={
        **TUS, "Upload-Length": "300", "Content-Type": "application/false"})
    assert await text(response) == ""
    assert response.code == 201
    assert header(response, "upload-offset") is None
    location = header(response, "location")
    assert stored(server, location) == b""
    assert header(await head(location), "upload-offset") == "0"


@pytest_twisted.ensureDeferred
async def test_create_with_empty_upload_body(server):
    response = await treq.post(server.url, b"", headers={
        **TUS, "Upload-Length": "5", "Content-Type": OCTET})
    await response.content()
    assert response.code == 201
    assert header(await head(header(response, "location")), "upload-offset") == "0"


@pytest_twisted.ensureDeferred
async def test_create_with_upload_content_type_parameters(server):
    response = await treq.post(server.url, b"hello", headers={
        **TUS, "Upload-Length": "5", "Content-Type": "Application/Offset+Octet-Stream; foo=bar"})
    await response.content()
    assert response.code == 201
    assert header(response, "upload-offset") == "5"


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("host", [None, "evil.com/path", "evil.com\"x", "a@b"])
async def test_location_without_usable_host(server, host):
    """No Host (HTTP/1.0) or an odd one: the listening address is used."""
    headers = {**TUS, "Upload-Length": "3", "Content-Length": "0", "Connection": "close"}
    lines = ["POST /files/ HTTP/1.0"] + ([] if host is None else [f"Host: {host}"])
    lines += [f"{name}: {value}" for name, value in headers.items()]
    raw = await raw_request(server, ("\r\n".join(lines) + "\r\n\r\n").encode())
    assert raw.status == 201
    assert re.fullmatch(rf"http://127\.0\.0\.1:{server.port_number}/files/[A-Za-z0-9_-]+", raw.header("location"))


@pytest_twisted.ensureDeferred
async def test_create_with_upload_expect_continue_refused(server_factory):
    """A creation that is refused is answered without a 100 Continue."""
    server = await server_factory(max_size=10)
    connection = await connect(server)
    try:
        connection.write(request_bytes("POST", "/files/", {
            **TUS, "Upload-Length": "11", "Content-Type": OCTET, "Content-Length": "11",
            "Expect": "100-continue"}))
        raw = await connection.response()
        assert raw.interim == []
        assert raw.status == 413
        assert raw.text.startswith("ERR_MAX_SIZE_EXCEEDED: ")
    finally:
        connection.close()
        await connection.wait_closed()
    assert upload_ids(server) == []


@pytest_twisted.ensureDeferred
async def test_create_with_upload_over_raw_connection(server):
    """Body and a second request on one keep-alive connection."""
    connection = await connect(server)
    try:
        connection.write(request_bytes("POST", "/files/", {
            **TUS, "Upload-Length": "5", "Content-Type": OCTET, "Content-Length": "3"}, b"hel"))
        created = await connection.response()
        assert created.status == 201
        assert created.header("upload-offset") == "3"
        path = "/" + created.header("location").split("/", 3)[3]
        connection.write(request_bytes("HEAD", path, TUS))
        status = await connection.response(no_body=True)
        assert status.status == 200
        assert status.header("upload-offset") == "3"
    finally:
        connection.close()
        await connection.wait_closed()


@pytest_twisted.ensureDeferred
async def test_create_with_upload_cut_off_keeps_bytes(server):
    """The client goes away mid-body: the upload exists and keeps the bytes."""
    connection = await connect(server)
    connection.write(request_bytes("POST", "/files/", {
        **TUS, "Upload-Length": "10", "Content-Type": OCTET, "Content-Length": "10"}, b"0123"))

    async def four_bytes_stored():
        ids = upload_ids(server)
        return len(ids) == 1 and os.path.getsize(server.store.data_path(ids[0])) == 4
    await wait_for(four_bytes_stored)
    connection.close()
    await connection.wait_closed()
    location = server.url + upload_ids(server)[0]

    async def offset_is_4():
        return header(await head(location), "upload-offset") == "4"
    await wait_for(offset_is_4)
    response = await treq.patch(location, b"456789", headers={
        **TUS, "Upload-Offset": "4", "Content-Type": OCTET})
    await response.content()
    assert header(response, "upload-offset") == "10"
    assert stored(server, location) == b"0123456789"
