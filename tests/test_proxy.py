"""
Behind a reverse proxy (C{--behind-proxy}: C{Forwarded}, C{X-Forwarded-Host},
C{-Proto} and C{-Prefix}) and relative C{Location} URLs
(C{--relative-location}), over real HTTP: a real server on a loopback port,
a C{twist tus} process and the tuspy client.  Host and scheme alone are
covered in test_http_post.py.
"""

from __future__ import annotations

import io

import pytest
import pytest_twisted
import treq

from tests import faultkit
from tests.tushttp import TUS, raw_request, request_bytes

tusclient = pytest.importorskip("tusclient.client")

OCTET = "application/offset+octet-stream"


async def location(server, headers, path="/files/") -> str:
    raw = await raw_request(server, request_bytes(
        "POST", path, {**TUS, "Upload-Length": "3", "Content-Length": "0", **headers}, host="tus.io"))
    assert raw.status == 201
    return raw.header("location")


def prefix_of(url: str) -> str:
    return url.rpartition("/")[0] + "/"


@pytest_twisted.ensureDeferred
async def test_forwarded_prefix_goes_into_location(server_factory):
    server = await server_factory(behind_proxy=True)
    assert prefix_of(await location(server, {
        "X-Forwarded-Host": "up.example:443", "X-Forwarded-Proto": "https",
        "X-Forwarded-Prefix": "/tus/v1"})) == "https://up.example/tus/v1/files/"
    assert prefix_of(await location(server, {
        "Forwarded": "host=up.example;proto=http", "X-Forwarded-Prefix": "/tus/"})) == "http://up.example/tus/files/"


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("bad", ["tus", "/a/../b", "//evil.com", "/a b", "/a?x=1", "/%2e%2e", "http://x/"])
async def test_odd_forwarded_prefix_is_ignored(server_factory, bad):
    server = await server_factory(behind_proxy=True)
    assert prefix_of(await location(server, {"X-Forwarded-Prefix": bad})) == "http://tus.io/files/"


@pytest_twisted.ensureDeferred
async def test_forwarded_prefix_ignored_without_behind_proxy(server_factory):
    server = await server_factory()
    assert prefix_of(await location(server, {
        "X-Forwarded-Prefix": "/tus", "X-Forwarded-Host": "up.example"})) == "http://tus.io/files/"


@pytest_twisted.ensureDeferred
async def test_relative_location(server_factory):
    server = await server_factory(relative_location=True)
    url = await location(server, {"X-Forwarded-Host": "up.example", "X-Forwarded-Prefix": "/tus"})
    assert prefix_of(url) == "/files/"
    # The path works as is against the server.
    response = await treq.patch(f"http://127.0.0.1:{server.port_number}{url}", b"abc", headers={
        **TUS, "Upload-Offset": "0", "Content-Type": OCTET})
    assert response.code == 204


@pytest_twisted.ensureDeferred
async def test_relative_location_behind_proxy_keeps_the_prefix(server_factory):
    server = await server_factory(relative_location=True, behind_proxy=True)
    assert prefix_of(await location(server, {"X-Forwarded-Prefix": "/tus"})) == "/tus/files/"


@pytest_twisted.ensureDeferred
async def test_relative_location_with_an_absolute_base_path(server_factory):
    server = await server_factory(relative_location=True, base_path="https://cdn.example/up/files/")
    assert prefix_of(await location(server, {}, path="/up/files/")) == "/up/files/"


@pytest_twisted.ensureDeferred
async def test_concatenation_accepts_partials_as_the_proxy_client_knows_them(server_factory):
    server = await server_factory(behind_proxy=True)
    proxy = {"X-Forwarded-Host": "up.example", "X-Forwarded-Proto": "https", "X-Forwarded-Prefix": "/tus"}
    partials = []
    for piece in (b"abc", b"def"):
        response = await treq.post(server.url, piece, headers={
            **TUS, **proxy, "Upload-Length": "3", "Upload-Concat": "partial", "Content-Type": OCTET})
        assert response.code == 201
        url = response.headers.getRawHeaders("location")[0]
        assert url.startswith("https://up.example/tus/files/")
        partials.append(url)
    response = await treq.post(server.url, headers={
        **TUS, **proxy, "Upload-Concat": "final;" + " ".join(partials)})
    assert response.code == 201
    final = response.headers.getRawHeaders("location")[0]
    head = await treq.head(server.url + final.rpartition("/")[2], headers={**TUS, **proxy})
    assert head.headers.getRawHeaders("upload-offset") == ["6"]
    assert head.headers.getRawHeaders("upload-concat")[0] == "final;" + " ".join(partials)


def test_twist_tus_relative_location_with_tuspy(tmp_path):
    server = faultkit.TwistProcess(tmp_path / "uploads", tmp_path, "--relative-location", "--behind-proxy")
    try:
        reply = faultkit.call(server.port, b"POST", b"/files/", {b"Upload-Length": b"3",
                                                                 b"X-Forwarded-Prefix": b"/tus"})
        assert reply.header(b"location").startswith(b"/tus/files/")
        data = bytes(range(256)) * 300
        uploader = tusclient.TusClient(server.url).uploader(file_stream=io.BytesIO(data), chunk_size=20_000)
        uploader.upload()
        assert uploader.url.startswith(server.url)  # resolved against the creation URL
        assert server.stored(uploader.url.rsplit("/", 1)[1]) == data
        server.assert_clean_log()
    finally:
        server.stop()
