"""
OPTIONS (discovery) and the rules every request shares: the version check,
the headers on every response, method routing (after tusd's options_test.go,
plus the spec rules where txtus follows the spec rather than tusd).
"""

import os

import pytest
import pytest_twisted
import treq

from tushttp import TUS, OCTET, create, expect_error, header, raw_request, request_bytes, text

# What a file store offers (other extensions, such as checksum, may follow).
BASE_EXTENSIONS = ["creation", "creation-with-upload", "termination", "concatenation", "creation-defer-length"]


def extensions(response):
    names = header(response, "tus-extension").split(",")
    assert len(names) == len(set(names)), names
    assert all(name and name.strip() == name for name in names), names
    return names


def assert_all_extensions(response):
    names = extensions(response)
    assert names[:2] == ["creation", "creation-with-upload"]
    assert set(BASE_EXTENSIONS) <= set(names), names


@pytest_twisted.ensureDeferred
async def test_discovery(server_factory):
    server = await server_factory(max_size=400)
    response = await treq.request("OPTIONS", server.url)
    assert await text(response) == ""
    assert response.code == 200
    assert header(response, "tus-version") == "1.0.0"
    assert header(response, "tus-resumable") == "1.0.0"
    assert_all_extensions(response)
    assert header(response, "tus-max-size") == "400"
    assert header(response, "x-content-type-options") == "nosniff"


@pytest_twisted.ensureDeferred
async def test_no_max_size_no_header(server):
    response = await treq.request("OPTIONS", server.url)
    await response.content()
    assert response.code == 200
    assert header(response, "tus-max-size") is None


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("version", [None, "1.0.0", "0.2.2", "foo"])
async def test_options_ignores_tus_resumable(server, version):
    """The spec: the server MUST ignore Tus-Resumable on OPTIONS."""
    headers = {} if version is None else {"Tus-Resumable": version}
    response = await treq.request("OPTIONS", server.url, headers=headers)
    await response.content()
    assert response.code == 200
    assert header(response, "tus-version") == "1.0.0"


@pytest_twisted.ensureDeferred
async def test_options_on_an_upload_url(server):
    location = await create(server, 5)
    response = await treq.request("OPTIONS", location)
    await response.content()
    assert response.code == 200
    assert_all_extensions(response)


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("flag, missing", [
    ("disable_concatenation", "concatenation"),
    ("disable_termination", "termination"),
])
async def test_disabled_extension_not_advertised(server_factory, flag, missing):
    server = await server_factory(**{flag: True})
    response = await treq.request("OPTIONS", server.url)
    await response.content()
    names = extensions(response)
    assert missing not in names
    assert set(BASE_EXTENSIONS) - {missing} <= set(names)


@pytest_twisted.ensureDeferred
async def test_invalid_version(server):
    response = await treq.post(server.url, headers={"Tus-Resumable": "foo", "Upload-Length": "5"})
    await expect_error(response, 412, "ERR_UNSUPPORTED_VERSION")
    # Unlike tusd, the 412 names the versions we do speak, as the spec asks.
    assert header(response, "tus-version") == "1.0.0"
    assert header(response, "x-content-type-options") == "nosniff"
    assert os.listdir(server.store.path) == []


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("method", ["POST", "HEAD", "PATCH", "DELETE"])
@pytest.mark.parametrize("version", [None, "1.0", "v1.0.0", "1.0.0,2.0.0", "2.0.0"])
async def test_version_required(server, method, version):
    """Every method but GET and OPTIONS needs exactly Tus-Resumable: 1.0.0."""
    location = await create(server, 5)
    url = server.url if method == "POST" else location
    headers = {"Upload-Length": "5", "Upload-Offset": "0", "Content-Type": OCTET}
    target = url.split("/", 3)[3]
    if version is not None:
        headers["Tus-Resumable"] = version
    raw = await raw_request(server, request_bytes(method, "/" + target, headers), no_body=method == "HEAD")
    assert raw.status == 412
    assert raw.header("tus-version") == "1.0.0"
    assert raw.header("tus-resumable") == "1.0.0"
    # The request was not processed.
    response = await treq.head(location, headers=TUS)
    await response.content()
    assert response.code == 200
    assert header(response, "upload-offset") == "0"


@pytest_twisted.ensureDeferred
async def test_get_needs_no_version(server):
    location = await create(server, 5, b"hello")
    response = await treq.get(location)
    assert await response.content() == b"hello"
    assert response.code == 200


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("method", ["PUT", "TRACE", "FOO"])
async def test_unknown_method(server, method):
    location = await create(server, 5)
    response = await treq.request(method, location, headers=TUS)
    await expect_error(response, 405, "ERR_METHOD_NOT_ALLOWED")
    assert header(response, "allow") is not None


@pytest_twisted.ensureDeferred
async def test_method_override_to_options(server):
    """X-HTTP-Method-Override works on every method, not just POST."""
    response = await treq.get(server.url, headers={"X-HTTP-Method-Override": "OPTIONS"})
    await response.content()
    assert response.code == 200
    assert header(response, "tus-version") == "1.0.0"
    assert_all_extensions(response)


@pytest_twisted.ensureDeferred
async def test_unknown_override_is_ignored(server):
    response = await treq.request("OPTIONS", server.url, headers={"X-HTTP-Method-Override": "BREW"})
    await response.content()
    assert response.code == 200
    assert header(response, "tus-version") == "1.0.0"


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("method, path, headers", [
    ("OPTIONS", "", {}),
    ("POST", "", {**TUS, "Upload-Length": "3"}),
    ("POST", "", {**TUS}),
    ("POST", "", {"Upload-Length": "3"}),
    ("HEAD", "upload", {**TUS}),
    ("HEAD", "0123456789abcdef", {**TUS}),
    ("GET", "upload", {}),
    ("PATCH", "upload", {**TUS, "Upload-Offset": "0", "Content-Type": OCTET}),
    ("PATCH", "upload", {**TUS, "Upload-Offset": "9", "Content-Type": OCTET}),
    ("DELETE", "upload", {**TUS}),
    ("GET", "", {}),
    ("PUT", "", {**TUS}),
])
async def test_every_response_has_common_headers(server, method, path, headers):
    url = server.url
    if path == "upload":
        url = await create(server, 3)
    elif path:
        url += path
    response = await treq.request(method, url, headers=headers, data=b"abc" if method == "PATCH" else None)
    await response.content()
    assert header(response, "tus-resumable") == "1.0.0"
    assert header(response, "x-content-type-options") == "nosniff"
