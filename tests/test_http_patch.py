"""
PATCH, after tusd's patch_test.go and its end-to-end tests, against a real
server: chunk rules, deferred lengths, bodies that overflow or are cut off,
and a PATCH interrupted by a request for the same upload.
"""

import os

import pytest
import pytest_twisted
import treq

from tushttp import (
    OCTET, TUS, chunked, connect, create, expect_error, head, header, patch, raw_request,
    request_bytes, stored, upload_id, wait_for,
)


def _path(url):
    return "/" + url.split("/", 3)[3]


@pytest_twisted.ensureDeferred
async def test_upload_chunks(server):
    location = await create(server, 10)
    first = await patch(location, 0, b"hello")
    assert (first.code, first.text_body) == (204, "")
    assert header(first, "upload-offset") == "5"
    second = await patch(location, 5, b"world")
    assert (second.code, second.text_body) == (204, "")
    assert header(second, "upload-offset") == "10"
    assert stored(server, location) == b"helloworld"
    response = await treq.get(location)
    assert await response.content() == b"helloworld"


@pytest_twisted.ensureDeferred
async def test_large_chunk(server):
    data = os.urandom(3 * 1024 * 1024 + 17)
    location = await create(server, len(data))
    response = await patch(location, 0, data)
    assert response.code == 204
    assert header(response, "upload-offset") == str(len(data))
    assert stored(server, location) == data


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("method", ["POST", "PUT", "GET"])
async def test_method_override(server, method):
    location = await create(server, 5)
    response = await treq.request(method, location, data=b"hello", headers={
        **TUS, "X-HTTP-Method-Override": "PATCH", "Upload-Offset": "0", "Content-Type": OCTET})
    assert await response.content() == b""
    assert response.code == 204
    assert header(response, "upload-offset") == "5"
    assert stored(server, location) == b"hello"


@pytest_twisted.ensureDeferred
async def test_chunk_to_finished_upload(server):
    location = await create(server, 20, b"x" * 20)
    response = await patch(location, 20, b"")
    assert response.code == 204
    assert header(response, "upload-offset") == "20"
    assert stored(server, location) == b"x" * 20


@pytest_twisted.ensureDeferred
async def test_upload_not_found(server):
    response = await treq.patch(server.url + "0123456789abcdef", b"hello", headers={
        **TUS, "Upload-Offset": "0", "Content-Type": OCTET})
    await expect_error(response, 404, "ERR_UPLOAD_NOT_FOUND")
    assert os.listdir(server.store.path) == []


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("offset", [4, 6, 0, 100])
async def test_mismatching_offset(server, offset):
    location = await create(server, 20, b"hello")
    response = await treq.patch(location, b"world", headers={
        **TUS, "Upload-Offset": str(offset), "Content-Type": OCTET})
    await expect_error(response, 409, "ERR_MISMATCHED_OFFSET")
    assert stored(server, location) == b"hello"
    assert header(await head(location), "upload-offset") == "5"


@pytest_twisted.ensureDeferred
async def test_exceeding_upload_length(server):
    location = await create(server, 10, b"hello")
    response = await treq.patch(location, b"world!", headers={
        **TUS, "Upload-Offset": "5", "Content-Type": OCTET})
    await expect_error(response, 413, "ERR_UPLOAD_SIZE_EXCEEDED")
    assert header(await head(location), "upload-offset") == "5"
    assert stored(server, location) == b"hello"


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("content_type", [None, "application/fail", "application/octet-stream",
                                          "text/plain", "application/offset+octet-streamx"])
async def test_invalid_content_type(server, content_type):
    """The spec asks for 415 here (tusd answers 400)."""
    location = await create(server, 10)
    headers = {**TUS, "Upload-Offset": "0"}
    if content_type is not None:
        headers["Content-Type"] = content_type
    response = await treq.patch(location, b"hello", headers=headers)
    await expect_error(response, 415, "ERR_INVALID_CONTENT_TYPE")
    assert stored(server, location) == b""


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("offset", [None, "-5", "abc", "", "1.0", "0x0", "+0"])
async def test_invalid_offset(server, offset):
    location = await create(server, 10)
    headers = {**TUS, "Content-Type": OCTET}
    if offset is not None:
        headers["Upload-Offset"] = offset
    response = await treq.patch(location, b"hello", headers=headers)
    await expect_error(response, 400, "ERR_INVALID_OFFSET")
    assert stored(server, location) == b""


@pytest_twisted.ensureDeferred
async def test_patch_on_creation_url(server):
    response = await treq.patch(server.url, b"hello", headers={
        **TUS, "Upload-Offset": "0", "Content-Type": OCTET})
    await expect_error(response, 405, "ERR_METHOD_NOT_ALLOWED")


@pytest_twisted.ensureDeferred
async def test_overflow_without_length(server):
    """
    A chunked body longer than the rest of the upload: the chunks that fit
    are stored; the chunk whose size line says it cannot fit is refused
    with 413 before a byte of it is stored (issue 11).
    """
    location = await create(server, 20, b"01234")
    body = b"abcdefghijklmnopqrstuvwxyz"
    raw = await raw_request(server, request_bytes("PATCH", _path(location), {
        **TUS, "Upload-Offset": "5", "Content-Type": OCTET, "Transfer-Encoding": "chunked"},
        chunked(body[:9], body[9:18], body[18:])))
    assert raw.status == 413
    assert raw.text == "ERR_UPLOAD_SIZE_EXCEEDED: upload's size exceeded\n"
    assert stored(server, location) == b"01234" + body[:9]
    status = await head(location)
    assert header(status, "upload-offset") == "14"
    response = await treq.get(location)
    assert await response.content() == b"01234abcdefghi"


@pytest_twisted.ensureDeferred
async def test_chunked_body(server):
    location = await create(server, 26)
    body = b"abcdefghijklmnopqrstuvwxyz"
    raw = await raw_request(server, request_bytes("PATCH", _path(location), {
        **TUS, "Upload-Offset": "0", "Content-Type": OCTET, "Transfer-Encoding": "chunked"},
        chunked(body[:1], body[1:20], body[20:])))
    assert raw.status == 204
    assert raw.header("upload-offset") == "26"
    assert stored(server, location) == body


# Deferred length -----------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_declare_length_on_final_chunk(server):
    location = await create(server, None, b"01234")
    response = await patch(location, 5, b"x" * 15, headers={"Upload-Length": "20"})
    assert response.code == 204
    assert header(response, "upload-offset") == "20"
    status = await head(location)
    assert header(status, "upload-length") == "20"
    assert header(status, "upload-defer-length") is None
    assert stored(server, location) == b"01234" + b"x" * 15


@pytest_twisted.ensureDeferred
async def test_declare_length_after_final_chunk(server):
    location = await create(server, None, b"x" * 20)
    response = await patch(location, 20, b"", headers={"Upload-Length": "20"})
    assert response.code == 204
    assert header(response, "upload-offset") == "20"
    status = await head(location)
    assert header(status, "upload-length") == "20"
    assert server.store.read_info(upload_id(location)).size == 20


@pytest_twisted.ensureDeferred
async def test_declare_length_on_non_final_chunk(server):
    location = await create(server, None)
    response = await patch(location, 0, b"hello", headers={"Upload-Length": "20"})
    assert response.code == 204
    assert header(response, "upload-offset") == "5"
    assert header(await head(location), "upload-length") == "20"
    response = await patch(location, 5, b"y" * 15)
    assert header(response, "upload-offset") == "20"
    status = await head(location)
    assert header(status, "upload-offset") == header(status, "upload-length") == "20"


@pytest_twisted.ensureDeferred
async def test_length_cannot_change(server):
    location = await create(server, None)
    assert (await patch(location, 0, b"he", headers={"Upload-Length": "20"})).code == 204
    response = await patch(location, 2, b"llo", headers={"Upload-Length": "30"})
    assert response.code == 400, response.text_body
    assert response.text_body.startswith("ERR_INVALID_UPLOAD_LENGTH: ")
    assert header(await head(location), "upload-length") == "20"
    assert stored(server, location) == b"he"


@pytest_twisted.ensureDeferred
async def test_declared_length_below_offset(server):
    location = await create(server, None, b"hello")
    response = await patch(location, 5, b"", headers={"Upload-Length": "3"})
    assert response.code == 400
    assert response.text_body.startswith("ERR_INVALID_UPLOAD_LENGTH: ")
    assert header(await head(location), "upload-defer-length") == "1"


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("length", ["-1", "abc", ""])
async def test_declared_length_invalid(server, length):
    location = await create(server, None)
    response = await patch(location, 0, b"he", headers={"Upload-Length": length})
    assert response.code == 400
    assert response.text_body.startswith("ERR_INVALID_UPLOAD_LENGTH: ")
    assert stored(server, location) == b""


@pytest_twisted.ensureDeferred
async def test_declared_length_above_max_size(server_factory):
    server = await server_factory(max_size=10)
    location = await create(server, None)
    response = await patch(location, 0, b"he", headers={"Upload-Length": "11"})
    assert response.code == 413
    assert response.text_body.startswith("ERR_MAX_SIZE_EXCEEDED: ")
    assert header(await head(location), "upload-defer-length") == "1"


@pytest_twisted.ensureDeferred
async def test_deferred_upload_limited_by_max_size(server_factory):
    server = await server_factory(max_size=10)
    location = await create(server, None, b"hello")
    response = await patch(location, 5, b"world!")
    assert response.code == 413
    assert response.text_body.startswith("ERR_UPLOAD_SIZE_EXCEEDED: ")
    assert header(await head(location), "upload-offset") == "5"
    response = await patch(location, 5, b"world")
    assert header(response, "upload-offset") == "10"


# Expect: 100-continue ------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_expect_continue(server):
    location = await create(server, 5)
    connection = await connect(server)
    try:
        connection.write(request_bytes("PATCH", _path(location), {
            **TUS, "Upload-Offset": "0", "Content-Type": OCTET, "Content-Length": "5",
            "Expect": "100-continue"}))
        await wait_for(_async(lambda: b"100 Continue" in connection.received))
        connection.write(b"hello")
        raw = await connection.response()
        assert raw.interim == [100]
        assert raw.status == 204
        assert raw.header("upload-offset") == "5"
    finally:
        connection.close()
        await connection.wait_closed()
    assert stored(server, location) == b"hello"


@pytest_twisted.ensureDeferred
async def test_expect_continue_refused(server):
    """A PATCH that will be refused gets its answer instead of a 100."""
    location = await create(server, 5)
    connection = await connect(server)
    try:
        connection.write(request_bytes("PATCH", _path(location), {
            **TUS, "Upload-Offset": "3", "Content-Type": OCTET, "Content-Length": "5",
            "Expect": "100-continue"}))
        raw = await connection.response()
        assert raw.interim == []
        assert raw.status == 409
    finally:
        connection.close()
        await connection.wait_closed()
    assert stored(server, location) == b""


def _async(predicate):
    async def check():
        return predicate()
    return check


# Interrupted bodies --------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_unexpected_close_keeps_received_bytes(server):
    location = await create(server, 10)
    connection = await connect(server)
    connection.write(request_bytes("PATCH", _path(location), {
        **TUS, "Upload-Offset": "0", "Content-Type": OCTET, "Content-Length": "10"}) + b"0123")
    await wait_for(_async(lambda: os.path.getsize(server.store.data_path(upload_id(location))) == 4))
    connection.close()
    await connection.wait_closed()

    async def offset_is_4():
        return header(await head(location), "upload-offset") == "4"
    await wait_for(offset_is_4)
    assert stored(server, location) == b"0123"
    response = await patch(location, 4, b"456789")
    assert header(response, "upload-offset") == "10"
    assert stored(server, location) == b"0123456789"


@pytest_twisted.ensureDeferred
async def test_lock_release_interrupts_silent_patch(server):
    """
    A HEAD for an upload whose PATCH is stalled sees the bytes stored so
    far; a PATCH resuming from there asks the stalled one to give the lock
    up, which it does once its client has been silent for
    C{lock_release_after}: it ends with ERR_UPLOAD_INTERRUPTED keeping its
    bytes, and the resuming PATCH completes the upload.
    """
    location = await create(server, 10)
    connection = await connect(server)
    try:
        connection.write(request_bytes("PATCH", _path(location), {
            **TUS, "Upload-Offset": "0", "Content-Type": OCTET, "Content-Length": "10"}) + b"abc")
        await wait_for(_async(lambda: os.path.getsize(server.store.data_path(upload_id(location))) == 3))
        status = await head(location)
        assert status.code == 200
        assert header(status, "upload-offset") == "3"
        response = await patch(location, 3, b"defghij")
        assert header(response, "upload-offset") == "10"
        raw = await connection.response()
        assert raw.status == 400
        assert raw.text.startswith("ERR_UPLOAD_INTERRUPTED: ")
    finally:
        connection.close()
        await connection.wait_closed()
    assert stored(server, location) == b"abcdefghij"


# Connection handling -------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_success_has_no_content_length(server):
    """RFC 9110 8.6: no Content-Length on a 204."""
    location = await create(server, 5)
    raw = await raw_request(server, request_bytes("PATCH", _path(location), {
        **TUS, "Upload-Offset": "0", "Content-Type": OCTET, "Content-Length": "5"}, b"hello"))
    assert raw.status == 204
    assert raw.header("upload-offset") == "5"
    assert raw.header("content-length") is None
    assert raw.header("tus-resumable") == "1.0.0"


@pytest_twisted.ensureDeferred
async def test_refused_small_body_keeps_connection(server):
    """
    A small body refused before it was read is drained, so the next request
    on the same connection is parsed from the right place.
    """
    location = await create(server, 10, b"01234")
    connection = await connect(server)
    try:
        connection.write(request_bytes("PATCH", _path(location), {
            **TUS, "Upload-Offset": "2", "Content-Type": OCTET, "Content-Length": "5"}, b"HEAD "))
        first = await connection.response()
        assert first.status == 409
        connection.write(request_bytes("PATCH", _path(location), {
            **TUS, "Upload-Offset": "5", "Content-Type": OCTET, "Content-Length": "5"}, b"56789"))
        second = await connection.response()
        assert second.status == 204
        assert second.header("upload-offset") == "10"
    finally:
        connection.close()
        await connection.wait_closed()
    assert stored(server, location) == b"0123456789"


@pytest_twisted.ensureDeferred
async def test_refused_large_body_closes_connection(server):
    """A large unread body is not drained: the answer closes the connection."""
    location = await create(server, 10 * 1024 * 1024)
    connection = await connect(server)
    try:
        connection.write(request_bytes("PATCH", _path(location), {
            **TUS, "Upload-Offset": "7", "Content-Type": OCTET, "Content-Length": str(10 * 1024 * 1024)},
            b"x" * 1024))
        raw = await connection.response()
        assert raw.status == 409
        assert raw.header("connection") == "close"
        await connection.wait_closed()
    finally:
        if not connection.is_closed:
            connection.close()
            await connection.wait_closed()
    assert stored(server, location) == b""


@pytest_twisted.ensureDeferred
async def test_query_string_is_ignored(server):
    location = await create(server, 5)
    response = await patch(location + "?token=abc", 0, b"hello")
    assert response.code == 204
    assert stored(server, location) == b"hello"


@pytest_twisted.ensureDeferred
async def test_lowercase_method_override(server):
    location = await create(server, 5)
    response = await treq.post(location, b"hello", headers={
        **TUS, "X-HTTP-Method-Override": "patch", "Upload-Offset": "0", "Content-Type": OCTET})
    await response.content()
    assert response.code == 204
    assert stored(server, location) == b"hello"


# Chunked framing (issue 11) -----------------------------------------------


@pytest_twisted.ensureDeferred
async def test_absurd_chunk_size_is_400_and_stores_nothing(server):
    """
    A chunk-size line of 24 hex digits (about 2**96): Twisted accepts the
    number and would stream what follows into the upload.  It must end the
    request with 400 before a byte of that chunk is stored.
    """
    location = await create(server, 100)
    raw = await raw_request(server, request_bytes("PATCH", _path(location), {
        **TUS, "Upload-Offset": "0", "Content-Type": OCTET, "Transfer-Encoding": "chunked"},
        b"ffffffffffffffffffffffff\r\nhello\r\n0\r\n\r\n"))
    assert raw.status == 400
    assert raw.text.startswith("ERR_INVALID_REQUEST: malformed chunked request body")
    assert stored(server, location) == b""
    assert header(await head(location), "upload-offset") == "0"


@pytest_twisted.ensureDeferred
async def test_chunk_larger_than_the_upload_can_take_is_413_and_stores_nothing(server):
    location = await create(server, 10)
    raw = await raw_request(server, request_bytes("PATCH", _path(location), {
        **TUS, "Upload-Offset": "0", "Content-Type": OCTET, "Transfer-Encoding": "chunked"},
        b"4\r\nabcd\r\nffffffff\r\nhello\r\n0\r\n\r\n"))
    assert raw.status == 413
    assert stored(server, location) == b"abcd"
    assert header(await head(location), "upload-offset") == "4"


@pytest_twisted.ensureDeferred
async def test_chunk_extensions_never_reach_the_data(server):
    location = await create(server, 10)
    raw = await raw_request(server, request_bytes("PATCH", _path(location), {
        **TUS, "Upload-Offset": "0", "Content-Type": OCTET, "Transfer-Encoding": "chunked"},
        b"5;name=value;other\r\nhello\r\n0000000000000000005\r\nworld\r\n0;last\r\n\r\n"))
    assert raw.status == 204
    assert stored(server, location) == b"helloworld"


@pytest_twisted.ensureDeferred
async def test_chunked_body_cut_inside_a_chunk_keeps_what_arrived(server):
    location = await create(server, 20)
    connection = await connect(server)
    connection.write(request_bytes("PATCH", _path(location), {
        **TUS, "Upload-Offset": "0", "Content-Type": OCTET, "Transfer-Encoding": "chunked"},
        b"a\r\nhello"))

    async def arrived():
        return stored(server, location) == b"hello"

    async def offset_kept():
        return header(await head(location), "upload-offset") == "5"

    await wait_for(arrived)
    connection.close()
    await connection.wait_closed()
    await wait_for(offset_kept)


@pytest.mark.parametrize("method", ["POST", "PATCH"])
@pytest_twisted.ensureDeferred
async def test_duplicate_content_type_is_refused(server, method):
    """
    Issue 11: one reader took the first Content-Type, another the last.
    Two of them are ambiguous: 400, and nothing is created or stored.
    """
    location = await create(server, 10)
    target = _path(location) if method == "PATCH" else _path(server.url)
    specific = {"Upload-Offset": "0"} if method == "PATCH" else {"Upload-Length": "10"}
    data = request_bytes(method, target, {**TUS, **specific, "Content-Type": OCTET, "Content-Length": "5"}, b"")
    # request_bytes takes a dict: add the second Content-Type by hand.
    data = data.replace(b"\r\n\r\n", b"\r\nContent-Type: text/plain\r\n\r\n", 1) + b"hello"
    raw = await raw_request(server, data)
    assert raw.status == 400
    assert raw.text.startswith("ERR_INVALID_REQUEST")
    assert stored(server, location) == b""
    assert len([n for n in os.listdir(server.store.path) if n.endswith(".info")]) == 1


@pytest_twisted.ensureDeferred
async def test_failed_unlock_after_a_successful_patch_is_logged_not_500(server_factory):
    """Issue 11: the PATCH stored its bytes; a locker failing to let go is logged."""
    from twisted.internet.defer import fail
    from zope.interface import implementer

    from txtus.interfaces import ILock, ILocker
    from txtus.lockers.memory import MemoryLocker

    @implementer(ILock)
    class StuckLock:
        def __init__(self, inner):
            self.inner = inner

        def unlock(self):
            self.inner.unlock()
            return fail(OSError("lock file vanished"))

    @implementer(ILocker)
    class StuckLocker:
        def __init__(self):
            self.inner = MemoryLocker()

        def use_in(self, composer):
            composer.use_locker(self)

        def lock(self, upload_id, release_requested):
            return self.inner.lock(upload_id, release_requested).addCallback(StuckLock)

    server = await server_factory(locker=StuckLocker())
    location = await create(server, 10)
    response = await patch(location, 0, b"hello")
    assert response.code == 204
    assert header(response, "upload-offset") == "5"
    assert stored(server, location) == b"hello"


@pytest.mark.parametrize("checksum", [False, True])
@pytest_twisted.ensureDeferred
async def test_writer_is_aborted_when_an_error_strikes_before_commit(server_factory, upload_dir, checksum):
    """
    Issue 11: an exception between opening a chunk and committing or
    rolling it back must end the writer (abort), so a store holding parts
    or staging files releases them.
    """
    import base64
    import hashlib

    from twisted.internet.defer import fail
    from zope.interface import directlyProvides, providedBy

    from txtus import FileStore

    aborted: list[str] = []

    def sabotage(writer):
        original_abort = getattr(writer, "abort", None)

        def commit():
            return fail(RuntimeError("the store broke mid-commit"))

        def abort():
            aborted.append(type(writer).__name__)
            return original_abort()

        writer.commit = commit
        writer.abort = abort
        return writer

    class Sabotaged:
        def __init__(self):
            self.inner = FileStore(str(upload_dir))
            self.broken = True

        def use_in(self, composer):
            self.inner.use_in(composer)
            directlyProvides(self, *providedBy(self.inner))
            composer.use_core(self)
            composer.use_stager(self)

        def new_upload(self, info):
            return self.inner.new_upload(info)

        def get_upload(self, upload_id):
            def wrap(upload):
                open_chunk = upload.open_chunk
                upload.open_chunk = lambda offset: open_chunk(offset).addCallback(
                    lambda w: sabotage(w) if self.broken else w)
                return upload
            return self.inner.get_upload(upload_id).addCallback(wrap)

        def open_staged_chunk(self, upload, offset):
            d = self.inner.open_staged_chunk(upload, offset)
            return d.addCallback(lambda w: sabotage(w) if self.broken else w)

        def __getattr__(self, name):
            return getattr(self.inner, name)

    store = Sabotaged()
    server = await server_factory(store=store)
    location = await create(server, 10)
    extra = {"Upload-Checksum": "sha1 " + base64.b64encode(hashlib.sha1(b"hello").digest()).decode()} if checksum else {}
    response = await patch(location, 0, b"hello", headers=extra)
    assert response.code == 500
    assert len(aborted) == 1
    assert not [n for n in os.listdir(upload_dir) if n.endswith(".staged")]  # released
    store.broken = False
    offset = int(header(await head(location), "upload-offset"))
    assert offset == (0 if checksum else 5)
    response = await patch(location, offset, b"helloworld"[offset:])
    assert (response.code, header(response, "upload-offset")) == (204, "10")


@pytest_twisted.ensureDeferred
async def test_reads_shrink_again_for_the_next_header_block(server):
    """
    A body streams in large reads; the next request's header block is read
    in small ones, because twisted.web copies the rest of a read once per
    header line it splits off (three extra copies of each byte of a 1 MiB
    upload with 256 KiB reads).  Both requests share one connection.
    """
    from txtus.web.streaming import HEADER_READ_SIZE, UPLOAD_READ_SIZE

    data = os.urandom(UPLOAD_READ_SIZE)
    location = await create(server, 2 * len(data))
    connection = await connect(server)
    connection.write(request_bytes("OPTIONS", _path(location)))
    assert (await connection.response()).status == 200
    # The site's protocols wrap twisted.web's HTTP/1.1 channel (_channel).
    (channel,) = [p._channel for p in server.site.connections
                  if p._channel.transport.getPeer().port == connection.transport.getHost().port]
    assert channel.transport.bufferSize == HEADER_READ_SIZE  # from the first read on
    headers = {**TUS, "Upload-Offset": "0", "Content-Type": OCTET, "Content-Length": str(len(data))}
    connection.write(request_bytes("PATCH", _path(location), headers, data))
    assert (await connection.response()).status == 204
    assert channel.transport.bufferSize == HEADER_READ_SIZE
    headers["Upload-Offset"] = str(len(data))
    connection.write(request_bytes("PATCH", _path(location), headers, data))
    assert (await connection.response()).status == 204
    assert channel.transport.bufferSize == HEADER_READ_SIZE
    assert stored(server, location) == data * 2
    connection.close()
    await connection.wait_closed()
