"""
HEAD (offset discovery), after tusd's head_test.go, plus the rule that
upload IDs that are not well formed are a 404 for every verb, decided before
any store or lock is asked.
"""

import os
import shutil

import pytest
import pytest_twisted
import treq
from twisted.internet.defer import ensureDeferred

from tushttp import (
    OCTET, TUS, create, head, header, patch, raw_request, request_bytes, stored, text, upload_id,
)


@pytest_twisted.ensureDeferred
async def test_status(server):
    location = await create(server, 44, headers={"Upload-Metadata": "name bHVucmpzLnBuZw==,empty"})
    assert (await patch(location, 0, b"hello world")).code == 204
    response = await treq.head(location, headers=TUS)
    assert await response.content() == b""
    assert response.code == 200
    assert header(response, "upload-offset") == "11"
    assert header(response, "upload-length") == "44"
    assert header(response, "cache-control") == "no-store"
    assert header(response, "upload-defer-length") is None
    assert header(response, "upload-concat") is None
    pairs = {pair.strip() for pair in header(response, "upload-metadata").split(",")}
    assert pairs == {"name bHVucmpzLnBuZw==", "empty"}


@pytest_twisted.ensureDeferred
async def test_status_of_finished_upload(server):
    location = await create(server, 5, b"hello")
    response = await head(location)
    assert response.code == 200
    assert header(response, "upload-offset") == header(response, "upload-length") == "5"
    assert header(response, "upload-metadata") is None


@pytest_twisted.ensureDeferred
async def test_upload_not_found(server):
    response = await treq.head(server.url + "0123456789abcdef0123456789abcdef", headers=TUS)
    assert await response.content() == b""
    assert response.code == 404
    assert header(response, "upload-offset") is None
    assert header(response, "tus-resumable") == "1.0.0"


@pytest_twisted.ensureDeferred
async def test_deferred_length(server):
    location = await create(server, None)
    response = await head(location)
    assert header(response, "upload-defer-length") == "1"
    assert header(response, "upload-length") is None
    assert header(response, "upload-offset") == "0"


@pytest_twisted.ensureDeferred
async def test_no_deferred_length_header_once_known(server):
    location = await create(server, None)
    assert (await patch(location, 0, b"abc", headers={"Upload-Length": "3"})).code == 204
    response = await head(location)
    assert header(response, "upload-defer-length") is None
    assert header(response, "upload-length") == "3"


@pytest_twisted.ensureDeferred
async def test_head_needs_tus_resumable(server):
    """Unlike tusd, HEAD is versioned like the other tus requests."""
    location = await create(server, 5)
    response = await treq.head(location)
    await response.content()
    assert response.code == 412
    assert header(response, "tus-version") == "1.0.0"
    assert header(response, "upload-offset") is None


@pytest_twisted.ensureDeferred
async def test_head_on_creation_url(server):
    response = await treq.head(server.url, headers=TUS)
    await response.content()
    assert response.code == 405
    assert header(response, "allow") is not None


@pytest_twisted.ensureDeferred
async def test_head_by_method_override(server):
    location = await create(server, 5, b"he", headers={"Content-Type": OCTET})
    response = await treq.post(location, headers={**TUS, "X-HTTP-Method-Override": "HEAD"})
    assert await text(response) == ""
    assert response.code == 200
    assert header(response, "upload-offset") == "2"


# Malformed upload IDs ------------------------------------------------------

MALFORMED = [
    "..",
    "%2e%2e",
    "%2E%2e",
    "..%2fvictim",
    "%2e%2e%2fvictim",
    "../victim",
    "a/b",
    "a%2fb",
    "victim%00",
    "%00",
    "victim.info",
    "victim%2einfo",
    ".victim",
    "vic%20tim",
    "x" * 129,
    "x" * 2000,
]


@pytest.fixture
def victim(server, upload_dir):
    """An upload moved next to (outside) the upload directory."""
    location = pytest_twisted.blockon(ensureDeferred(create(server, 5, b"he")))
    name = upload_id(location)
    outside = upload_dir.parent
    for suffix in ("", ".info"):
        shutil.move(str(upload_dir / (name + suffix)), str(outside / ("victim" + suffix)))
    shutil.copy(str(outside / "victim"), str(upload_dir / ".victim"))
    return outside


def _spy_store(server):
    calls = []
    store = server.config.composer.core
    original = store.get_upload

    def get_upload(upload_id):
        calls.append(upload_id)
        return original(upload_id)
    store.get_upload = get_upload
    return calls


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("target", MALFORMED)
@pytest.mark.parametrize("method", ["HEAD", "GET", "PATCH", "DELETE", "POST"])
async def test_malformed_upload_id(server, victim, upload_dir, method, target):
    calls = _spy_store(server)
    before = sorted(os.listdir(victim)), sorted(os.listdir(upload_dir))
    headers = {**TUS, "Content-Length": "3", "Upload-Offset": "2", "Content-Type": OCTET, "Upload-Length": "5"}
    raw = await raw_request(server, request_bytes(method, "/files/" + target, headers, b"llo"),
                            no_body=method == "HEAD")
    assert raw.status == 404, (raw.status, raw.text)
    if method != "HEAD":
        assert raw.text == "ERR_UPLOAD_NOT_FOUND: upload not found\n"
    assert raw.header("upload-offset") is None
    assert raw.header("tus-resumable") == "1.0.0"
    assert calls == []
    assert (sorted(os.listdir(victim)), sorted(os.listdir(upload_dir))) == before
    assert (victim / "victim").read_bytes() == b"he"
    # The server is still fine.
    response = await treq.request("OPTIONS", server.url)
    await response.content()
    assert response.code == 200


@pytest_twisted.ensureDeferred
async def test_well_formed_but_unknown_id_reaches_the_store(server):
    """The counterpart of the above: the spy does see ordinary IDs."""
    calls = _spy_store(server)
    response = await treq.head(server.url + "unknown_ID-1", headers=TUS)
    await response.content()
    assert response.code == 404
    assert calls == ["unknown_ID-1"]


@pytest_twisted.ensureDeferred
async def test_trailing_slash_on_upload_url(server):
    location = await create(server, 5, b"hel")
    response = await head(location + "/")
    assert response.code == 200
    assert header(response, "upload-offset") == "3"
    assert stored(server, location) == b"hel"
