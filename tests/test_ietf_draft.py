"""
The IETF resumable-uploads draft (txtus.protocol.ietf) over real HTTP, for every
interop version we speak (3 to 8): creation (complete, incomplete with a
deferred length, with Upload-Length), the 104 interim response, offset
retrieval, append, mismatches, media types, cancellation, limits, and
resumption of a creation cut off mid-body.
"""

from __future__ import annotations

import json
import os

import pytest
import pytest_twisted
import treq
from twisted.internet.task import Clock

from tushttp import chunked, connect, header, request_bytes, stored, upload_id
from txtus.protocol import headers as h

VERSIONS = [3, 4, 5, 6, 7, 8]
PARTIAL = "application/partial-upload"


def draft(version: int, complete: bool | None = None, **extra: str) -> dict[str, str]:
    """Draft request headers; C{complete} becomes Upload-Complete (or Upload-Incomplete for 3)."""
    result = {"Upload-Draft-Interop-Version": str(version)}
    if complete is not None:
        if version == 3:
            result["Upload-Incomplete"] = "?0" if complete else "?1"
        else:
            result["Upload-Complete"] = "?1" if complete else "?0"
    result.update({k.replace("_", "-"): v for k, v in extra.items()})
    return result


def is_complete(response, version: int) -> bool:
    """The completeness a draft response states (and that it states one)."""
    if version == 3:
        value = header(response, "upload-incomplete")
        assert value in ("?0", "?1"), value
        assert header(response, "upload-complete") is None
        return value == "?0"
    value = header(response, "upload-complete")
    assert value in ("?0", "?1"), value
    return value == "?1"


def append_headers(version: int, offset: int, complete: bool) -> dict[str, str]:
    result = draft(version, complete, Upload_Offset=str(offset))
    if version >= 6:
        result["Content-Type"] = PARTIAL
    return result


def assert_draft_response(response, version: int) -> None:
    assert response.headers.getRawHeaders("tus-resumable") is None
    assert header(response, "upload-draft-interop-version") == str(version)


def limits(response) -> dict:
    raw = header(response, "upload-limit")
    assert raw is not None
    return {key: value for key, (value, params) in h.parse_sf_dictionary(raw.encode()).items()}


async def read(response) -> bytes:
    return await response.content()


async def create(server, version: int, body: bytes = b"", complete: bool = True, **extra: str):
    response = await treq.post(server.url, body, headers=draft(version, complete, **extra))
    response.body = await read(response)
    return response


async def head(url: str, version: int):
    response = await treq.head(url, headers=draft(version))
    await read(response)
    return response


async def append(url: str, version: int, offset: int, body: bytes, complete: bool, **extra):
    response = await treq.patch(url, body, headers={**append_headers(version, offset, complete), **extra})
    response.body = await read(response)
    return response


def problem(response, status: int, kind: str) -> dict:
    assert response.code == status, (response.code, response.body)
    assert header(response, "content-type") == "application/problem+json"
    document = json.loads(response.body)
    assert document["type"] == "https://iana.org/assignments/http-problem-types#" + kind
    assert document["title"]
    return document


# Creation ---------------------------------------------------------------------


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("version", VERSIONS)
async def test_create_complete(server, version):
    data = os.urandom(70_000)
    response = await create(server, version, data, complete=True)
    assert response.code == 201, response.body
    assert_draft_response(response, version)
    location = header(response, "location")
    assert location.startswith(server.url)
    assert header(response, "upload-offset") == str(len(data))
    assert is_complete(response, version)
    assert limits(response) == {"min-size": 0}
    assert stored(server, location) == data

    state = await head(location, version)
    assert state.code == 204
    assert_draft_response(state, version)
    assert header(state, "upload-offset") == str(len(data))
    assert header(state, "upload-length") == str(len(data))
    assert header(state, "cache-control") == "no-store"
    assert is_complete(state, version)
    assert limits(state) == {"min-size": 0}


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("version", VERSIONS)
async def test_create_incomplete_then_append(server, version):
    response = await create(server, version, b"hello ", complete=False)
    assert response.code == 201, response.body
    location = header(response, "location")
    assert header(response, "upload-offset") == "6"
    assert not is_complete(response, version)

    state = await head(location, version)
    assert (header(state, "upload-offset"), header(state, "upload-length")) == ("6", None)
    assert not is_complete(state, version)

    middle = await append(location, version, 6, b"resumable ", complete=False)
    assert middle.code == 204, middle.body
    assert_draft_response(middle, version)
    assert header(middle, "upload-offset") == "16"
    assert not is_complete(middle, version)

    last = await append(location, version, 16, b"world", complete=True)
    assert last.code == 204, last.body
    assert header(last, "upload-offset") == "21"
    assert is_complete(last, version)
    assert stored(server, location) == b"hello resumable world"

    state = await head(location, version)
    assert (header(state, "upload-offset"), header(state, "upload-length")) == ("21", "21")
    assert is_complete(state, version)


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("version", VERSIONS)
async def test_create_empty_with_upload_length(server, version):
    response = await create(server, version, complete=False, Upload_Length="10")
    assert response.code == 201, response.body
    location = header(response, "location")
    assert header(response, "upload-offset") == "0"
    assert not is_complete(response, version)
    state = await head(location, version)
    assert (header(state, "upload-offset"), header(state, "upload-length")) == ("0", "10")

    first = await append(location, version, 0, b"01234", complete=False)
    assert (first.code, header(first, "upload-offset")) == (204, "5")
    assert not is_complete(first, version)
    last = await append(location, version, 5, b"56789", complete=True)
    assert (last.code, header(last, "upload-offset")) == (204, "10")
    assert is_complete(last, version)
    assert stored(server, location) == b"0123456789"


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("version", [3, 8])
async def test_empty_complete_upload(server, version):
    response = await create(server, version, b"", complete=True)
    assert response.code == 201, response.body
    assert header(response, "upload-offset") == "0"
    assert is_complete(response, version)
    state = await head(header(response, "location"), version)
    assert header(state, "upload-length") == "0"
    assert is_complete(state, version)


@pytest_twisted.ensureDeferred
async def test_put_creates_and_metadata_comes_from_representation_headers(server):
    response = await treq.put(server.url, b"<svg/>", headers={
        **draft(8, True), "Content-Type": "image/png",
        "Content-Disposition": "inline; filename=\"a b.png\"; filename*=UTF-8''%C3%A4%20b.png"})
    assert response.code == 201, await read(response)
    location = header(response, "location")
    # The tus view of the same upload shows the metadata.
    tus_head = await treq.head(location, headers={"Tus-Resumable": "1.0.0"})
    assert h.parse_metadata(header(tus_head, "upload-metadata").encode()) == {
        "filetype": "image/png", "filename": "ä b.png"}
    download = await treq.get(location)
    assert await read(download) == b"<svg/>"
    assert header(download, "content-type") == "image/png"


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("version", VERSIONS)
async def test_inconsistent_length_on_creation(server, version):
    response = await create(server, version, b"12345", complete=True, Upload_Length="6")
    document = problem(response, 400, "inconsistent-upload-length")
    assert document["code"] == "ERR_INCONSISTENT_UPLOAD_LENGTH"
    assert_draft_response(response, version)
    # Content longer than the announced length of an incomplete upload.
    response = await create(server, version, b"12345", complete=False, Upload_Length="4")
    problem(response, 400, "inconsistent-upload-length")


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("value", ["true", "?2", "1", "?1, ?0", "?1;", ""])
async def test_malformed_upload_complete_is_400(server, value):
    response = await treq.post(server.url, b"x", headers={
        "Upload-Draft-Interop-Version": "8", "Upload-Complete": value})
    body = await read(response)
    assert response.code == 400, body
    assert body.startswith(b"ERR_INVALID_REQUEST: invalid Upload-Complete header"), body
    assert response.headers.getRawHeaders("tus-resumable") is None


@pytest_twisted.ensureDeferred
async def test_upload_complete_with_parameters_is_accepted(server):
    response = await treq.post(server.url, b"x", headers={
        "Upload-Draft-Interop-Version": "8", "Upload-Complete": "?1;foo=bar"})
    await read(response)
    assert (response.code, header(response, "upload-complete")) == (201, "?1")


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("version", [4, 8])
async def test_missing_upload_complete_is_400(server, version):
    response = await treq.post(server.url, b"x", headers=draft(version))
    body = await read(response)
    assert (response.code, body) == (400, b"ERR_INVALID_REQUEST: missing Upload-Complete header\n")


@pytest_twisted.ensureDeferred
async def test_interop_3_without_upload_incomplete_means_complete(server):
    response = await treq.post(server.url, b"abc", headers=draft(3))
    await read(response)
    assert response.code == 201
    assert header(response, "upload-incomplete") == "?0"


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("version", [3, 6, 8])
async def test_max_size(server_factory, version):
    server = await server_factory(max_size=10)
    response = await create(server, version, b"x" * 11, complete=True)
    assert response.code == 413, response.body
    assert limits(response) == {"min-size": 0, "max-size": 10}
    ok = await create(server, version, b"x" * 10, complete=True)
    assert ok.code == 201
    assert limits(ok) == {"min-size": 0, "max-size": 10}


# 104 Upload Resumption Supported ------------------------------------------------


def _interim_and_final(data: bytes) -> tuple[list[tuple[int, dict[str, str]]], bytes]:
    """Split raw response bytes into the interim responses and the rest."""
    interim = []
    while data.startswith(b"HTTP/1.1 1"):
        head_end = data.index(b"\r\n\r\n")
        lines = data[:head_end].decode("latin-1").split("\r\n")
        fields = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
        interim.append((int(lines[0].split(" ")[1]), fields))
        data = data[head_end + 4:]
    return interim, data


async def _wait_received(connection, marker: bytes, timeout: float = 5.0) -> None:
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    for _ in range(int(timeout / 0.01)):
        if marker in connection.received or connection.is_closed:
            return
        await deferLater(reactor, 0.01, lambda: None)
    raise AssertionError(f"{marker!r} not received: {connection.received!r}")


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("version", VERSIONS)
async def test_104_arrives_before_the_body_is_sent(server, version):
    connection = await connect(server)
    try:
        path = "/" + server.url.split("/", 3)[3]
        connection.write(request_bytes("POST", path, {
            **draft(version, True), "Content-Length": "10", "Content-Type": "text/plain"},
            host=f"127.0.0.1:{server.port_number}"))
        # Nothing of the body has been sent: the interim response comes anyway.
        await _wait_received(connection, b"\r\n\r\n")
        interim, rest = _interim_and_final(connection.received)
        assert rest == b""
        assert [code for code, _ in interim] == [104]
        fields = interim[0][1]
        location = fields["location"]
        assert location.startswith(server.url)
        assert fields["upload-draft-interop-version"] == str(version)
        assert h.parse_sf_dictionary(fields["upload-limit"].encode()) == {"min-size": (0, {})}
        assert connection.received.startswith(b"HTTP/1.1 104 Upload Resumption Supported\r\n")

        connection.write(b"0123456789")
        final = await connection.response()
        assert final.status == 201
        assert final.interim == [104]
        assert final.header("location") == location
        assert final.header("upload-offset") == "10"
        assert final.header("tus-resumable") is None
        assert stored(server, location) == b"0123456789"
    finally:
        if not connection.is_closed:
            connection.close()
            await connection.wait_closed()


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("version", VERSIONS)
async def test_resume_a_creation_cut_off_mid_body(server, version):
    """The promise of the draft: the 104's Location lets a client resume."""
    data = os.urandom(200_000)
    connection = await connect(server)
    path = "/" + server.url.split("/", 3)[3]
    connection.write(request_bytes("POST", path, {
        **draft(version, True), "Content-Length": str(len(data))},
        host=f"127.0.0.1:{server.port_number}") + data[:120_000])
    await _wait_received(connection, b"\r\n\r\n")
    (code, fields), = _interim_and_final(connection.received)[0]
    assert code == 104
    location = fields["location"]
    connection.close()
    await connection.wait_closed()

    # HEAD takes the upload's lock, so it sees the offset the cut body left.
    state = await head(location, version)
    assert state.code == 204
    offset = int(header(state, "upload-offset"))
    assert 0 < offset <= 120_000
    assert not is_complete(state, version)
    # Creation said Upload-Complete: ?1 with a Content-Length: the length is known.
    assert header(state, "upload-length") == str(len(data))

    last = await append(location, version, offset, data[offset:], complete=True)
    assert last.code == 204, last.body
    assert is_complete(last, version)
    assert stored(server, location) == data


@pytest_twisted.ensureDeferred
async def test_no_104_for_an_empty_creation(server):
    connection = await connect(server)
    try:
        path = "/" + server.url.split("/", 3)[3]
        connection.write(request_bytes("POST", path, {**draft(8, False), "Content-Length": "0"}))
        final = await connection.response()
        assert (final.status, final.interim) == (201, [])
    finally:
        connection.close()
        await connection.wait_closed()


# Append -----------------------------------------------------------------------


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("version", VERSIONS)
async def test_offset_mismatch_is_409(server, version):
    created = await create(server, version, b"abc", complete=False)
    location = header(created, "location")
    response = await append(location, version, 1, b"zzz", complete=False)
    document = problem(response, 409, "mismatching-upload-offset")
    assert (document["expected-offset"], document["provided-offset"]) == (3, 1)
    assert header(response, "upload-offset") == "3"
    assert not is_complete(response, version)
    assert_draft_response(response, version)
    assert stored(server, location) == b"abc"


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("version", [v for v in VERSIONS if v >= 6])
@pytest.mark.parametrize("content_type", [None, "application/offset+octet-stream", "text/plain"])
async def test_append_needs_partial_upload_media_type(server, version, content_type):
    created = await create(server, version, b"abc", complete=False)
    location = header(created, "location")
    fields = draft(version, False, Upload_Offset="3")
    if content_type is not None:
        fields["Content-Type"] = content_type
    response = await treq.patch(location, b"def", headers=fields)
    body = await read(response)
    assert response.code == 415, body
    assert header(response, "accept-patch") == PARTIAL
    assert stored(server, location) == b"abc"


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("version", [3, 4, 5])
async def test_append_before_6_takes_any_media_type(server, version):
    created = await create(server, version, b"abc", complete=False)
    location = header(created, "location")
    response = await treq.patch(location, b"def", headers={
        **draft(version, True, Upload_Offset="3"), "Content-Type": "application/octet-stream"})
    await read(response)
    assert response.code == 204
    assert stored(server, location) == b"abcdef"


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("value", [None, "-1", "1.5", "abc", "?1"])
async def test_bad_upload_offset_is_400(server, value):
    created = await create(server, 8, b"abc", complete=False)
    fields = append_headers(8, 0, False)
    del fields["Upload-Offset"]
    if value is not None:
        fields["Upload-Offset"] = value
    response = await treq.patch(header(created, "location"), b"d", headers=fields)
    body = await read(response)
    assert response.code == 400 and body.startswith(b"ERR_INVALID_OFFSET"), body


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("version", [3, 8])
async def test_append_to_a_completed_upload(server, version):
    created = await create(server, version, b"abc", complete=True)
    location = header(created, "location")
    more = await append(location, version, 3, b"d", complete=True)
    problem(more, 400, "inconsistent-upload-length")
    empty_incomplete = await append(location, version, 3, b"", complete=False)
    problem(empty_incomplete, 400, "completed-upload")
    # Completing again (a retry whose first response was lost) succeeds.
    again = await append(location, version, 3, b"", complete=True)
    assert again.code == 204, again.body
    assert is_complete(again, version)
    assert stored(server, location) == b"abc"


@pytest_twisted.ensureDeferred
async def test_empty_completing_append_declares_the_length(server):
    created = await create(server, 8, b"abc", complete=False)
    location = header(created, "location")
    done = await append(location, 8, 3, b"", complete=True)
    assert done.code == 204, done.body
    assert is_complete(done, 8)
    state = await head(location, 8)
    assert header(state, "upload-length") == "3"
    assert is_complete(state, 8)


@pytest_twisted.ensureDeferred
async def test_append_inconsistent_with_known_length(server):
    created = await create(server, 8, b"", complete=False, Upload_Length="5")
    location = header(created, "location")
    # Completing with fewer bytes than announced, or overrunning the length.
    short = await append(location, 8, 0, b"abc", complete=True)
    problem(short, 400, "inconsistent-upload-length")
    long = await append(location, 8, 0, b"abcdef", complete=False)
    problem(long, 400, "inconsistent-upload-length")
    other = await append(location, 8, 0, b"ab", complete=False, **{"Upload-Length": "6"})
    problem(other, 400, "inconsistent-upload-length")
    state = await head(location, 8)
    assert header(state, "upload-offset") == "0"


@pytest_twisted.ensureDeferred
async def test_chunked_completing_append_of_unknown_length(server):
    created = await create(server, 8, b"ab", complete=False)
    location = header(created, "location")

    connection = await connect(server)
    try:
        connection.write(request_bytes("PATCH", "/" + location.split("/", 3)[3], {
            **append_headers(8, 2, True), "Transfer-Encoding": "chunked"},
            host=f"127.0.0.1:{server.port_number}") + chunked(b"cd", b"ef"))
        response = await connection.response(no_body=True)
    finally:
        connection.close()
        await connection.wait_closed()
    assert response.status == 204, response.text
    assert response.header("upload-offset") == "6"
    assert response.header("upload-complete") == "?1"
    assert header(await head(location, 8), "upload-length") == "6"
    assert stored(server, location) == b"abcdef"


# Cancellation, OPTIONS, routing --------------------------------------------------


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("version", VERSIONS)
async def test_cancellation(server, version):
    created = await create(server, version, b"abc", complete=False)
    location = header(created, "location")
    response = await treq.delete(location, headers=draft(version))
    await read(response)
    assert response.code == 204
    assert_draft_response(response, version)
    gone = await head(location, version)
    assert gone.code == 404
    assert not os.path.exists(server.store.data_path(upload_id(location)))


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("version", VERSIONS)
async def test_options_upload_limit(server_factory, version):
    server = await server_factory(max_size=1000, expire_after=3600)
    response = await treq.request("OPTIONS", server.url, headers=draft(version))
    await read(response)
    assert response.code == 200
    assert_draft_response(response, version)
    age = "expires" if version == 6 else "max-age"
    assert limits(response) == {"min-size": 0, "max-size": 1000, age: 3600}
    assert header(response, "accept-patch") == PARTIAL


@pytest_twisted.ensureDeferred
async def test_options_without_limits(server):
    response = await treq.request("OPTIONS", server.url, headers=draft(8))
    await read(response)
    assert limits(response) == {"min-size": 0}


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("version", [6, 7, 8])
async def test_max_age_counts_down_and_expired_uploads_are_gone(server_factory, version):
    clock = Clock()
    clock.advance(1_000_000)
    server = await server_factory(expire_after=100, clock=clock)
    created = await create(server, version, b"abc", complete=False)
    age = "expires" if version == 6 else "max-age"
    assert limits(created)[age] == 100
    location = header(created, "location")
    clock.advance(30.5)
    assert limits(await head(location, version))[age] == 69
    clock.advance(70)
    expired = await head(location, version)
    assert expired.code == 410


@pytest_twisted.ensureDeferred
async def test_completed_upload_has_no_max_age(server_factory):
    server = await server_factory(expire_after=100)
    created = await create(server, 8, b"abc", complete=True)
    assert limits(created) == {"min-size": 0}


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("value", ["2", "9", "abc", "8.0", "-8"])
async def test_unsupported_interop_versions_are_tus(server, value):
    response = await treq.post(server.url, b"x", headers={
        "Upload-Draft-Interop-Version": value, "Upload-Complete": "?1"})
    await read(response)
    # Handled as tus 1.0, which wants Tus-Resumable.
    assert response.code == 412
    assert header(response, "tus-resumable") == "1.0.0"


@pytest_twisted.ensureDeferred
async def test_draft_can_be_disabled(server_factory):
    server = await server_factory(enable_ietf_draft=False)
    response = await create(server, 8, b"x", complete=True)
    assert response.code == 412
    assert header(response, "tus-resumable") == "1.0.0"


@pytest_twisted.ensureDeferred
async def test_tus_requests_are_unchanged(server):
    response = await treq.post(server.url, headers={"Tus-Resumable": "1.0.0", "Upload-Length": "3"})
    await read(response)
    assert response.code == 201
    assert header(response, "tus-resumable") == "1.0.0"
    assert header(response, "upload-draft-interop-version") is None


@pytest_twisted.ensureDeferred
async def test_a_tus_upload_can_be_finished_with_the_draft(server):
    response = await treq.post(server.url, b"abc", headers={
        "Tus-Resumable": "1.0.0", "Upload-Length": "6", "Content-Type": "application/offset+octet-stream"})
    await read(response)
    location = header(response, "location")
    state = await head(location, 8)
    assert (header(state, "upload-offset"), header(state, "upload-length")) == ("3", "6")
    last = await append(location, 8, 3, b"def", complete=True)
    assert last.code == 204 and is_complete(last, 8)
    assert stored(server, location) == b"abcdef"


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("method", ["POST", "PUT"])
async def test_creation_methods_on_an_upload_url_are_405(server, method):
    created = await create(server, 8, b"abc", complete=False)
    response = await treq.request(method, header(created, "location"), data=b"x", headers=draft(8, True))
    await read(response)
    assert response.code == 405


@pytest_twisted.ensureDeferred
async def test_head_of_unknown_upload_is_404(server):
    response = await head(server.url + "0" * 32, 8)
    assert response.code == 404
    assert_draft_response(response, 8)


@pytest_twisted.ensureDeferred
async def test_104_then_100_continue(server):
    """A 104 does not replace 100 Continue: both come, the 104 first."""
    connection = await connect(server)
    try:
        path = "/" + server.url.split("/", 3)[3]
        connection.write(request_bytes("POST", path, {
            **draft(8, True), "Content-Length": "5", "Expect": "100-continue"},
            host=f"127.0.0.1:{server.port_number}"))
        await _wait_received(connection, b"100 Continue\r\n\r\n")
        interim, rest = _interim_and_final(connection.received)
        assert [code for code, _ in interim] == [104, 100]
        assert rest == b""
        connection.write(b"hello")
        final = await connection.response()
        assert final.status == 201
        assert final.header("location") == interim[0][1]["location"]
        assert stored(server, final.header("location")) == b"hello"
    finally:
        if not connection.is_closed:
            connection.close()
            await connection.wait_closed()


@pytest_twisted.ensureDeferred
async def test_plain_site_speaks_the_draft_without_104(upload_dir):
    """Mounted in a stock Site the body is buffered: no 104, the rest works."""
    from twisted.internet import reactor
    from twisted.internet.endpoints import TCP4ServerEndpoint
    from twisted.web.resource import Resource
    from twisted.web.server import Site

    from txtus import FileStore, MemoryLocker, StoreComposer, TusConfig, TusResource

    composer = StoreComposer()
    store = FileStore(str(upload_dir))
    store.use_in(composer)
    MemoryLocker(reactor=reactor).use_in(composer)
    root = Resource()
    root.putChild(b"files", TusResource(TusConfig(composer=composer, reactor=reactor)))
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Site(root))
    try:
        number = port.getHost().port

        class Plain:
            port_number = number
        connection = await connect(Plain)
        try:
            connection.write(request_bytes("PUT", "/files/", {**draft(7, False), "Content-Length": "3"},
                                           host=f"127.0.0.1:{number}") + b"abc")
            created = await connection.response()
        finally:
            connection.close()
            await connection.wait_closed()
        assert (created.status, created.interim) == (201, [])
        location = created.header("location")
        last = await append(location, 7, 3, b"def", complete=True)
        assert last.code == 204 and is_complete(last, 7)
        with open(store.data_path(upload_id(location)), "rb") as f:
            assert f.read() == b"abcdef"
    finally:
        await port.stopListening()
