"""
CORS, after tusd's cors_test.go: headers only for requests with an
C{Origin}, the allow lists on preflights, the expose list on the rest, 403
for an origin that is not allowed, nothing at all when CORS is off.
"""

import os

import pytest
import pytest_twisted
import treq

from txtus.config import CorsConfig

from tushttp import OCTET, TUS, create, expect_error, header, text

TUSD_ALLOW_HEADERS = [
    "Authorization", "Origin", "X-Requested-With", "X-Request-ID", "X-HTTP-Method-Override",
    "Content-Type", "Upload-Length", "Upload-Offset", "Tus-Resumable", "Upload-Metadata",
    "Upload-Defer-Length", "Upload-Concat", "Upload-Incomplete", "Upload-Complete",
    "Upload-Draft-Interop-Version",
]
TUSD_EXPOSE_HEADERS = [
    "Upload-Offset", "Location", "Upload-Length", "Tus-Version", "Tus-Resumable", "Tus-Max-Size",
    "Tus-Extension", "Upload-Metadata", "Upload-Defer-Length", "Upload-Concat", "Upload-Incomplete",
    "Upload-Complete", "Upload-Draft-Interop-Version",
]
PREFLIGHT_ONLY = ["access-control-allow-methods", "access-control-allow-headers", "access-control-max-age"]


def listed(response, name):
    value = header(response, name)
    assert value is not None, name
    items = [item.strip() for item in value.split(",")]
    assert len(items) == len({item.lower() for item in items}), items
    return items


def cors_headers(response):
    return [name for name, _ in response.headers.getAllRawHeaders()
            if name.lower().startswith(b"access-control-")]


async def preflight(server, origin="https://tus.io"):
    response = await treq.request("OPTIONS", server.url, headers={
        "Origin": origin, "Access-Control-Request-Method": "PATCH",
        "Access-Control-Request-Headers": "Tus-Resumable, Upload-Offset, Content-Type"})
    await response.content()
    return response


@pytest_twisted.ensureDeferred
async def test_default_preflight(server):
    response = await preflight(server)
    assert response.code == 200
    assert header(response, "access-control-allow-origin") == "https://tus.io"
    assert header(response, "vary") == "Origin"
    assert listed(response, "access-control-allow-methods") == ["POST", "HEAD", "PATCH", "OPTIONS", "GET", "DELETE"]
    allowed = {name.lower() for name in listed(response, "access-control-allow-headers")}
    assert {name.lower() for name in TUSD_ALLOW_HEADERS} <= allowed
    assert header(response, "access-control-max-age") == "86400"
    assert header(response, "access-control-allow-credentials") is None
    assert header(response, "access-control-expose-headers") is None
    # Still a tus discovery response.
    assert header(response, "tus-version") == "1.0.0"


@pytest_twisted.ensureDeferred
async def test_default_actual_request(server):
    response = await treq.post(server.url, headers={"Origin": "https://tus.io", "Upload-Length": "5"})
    await expect_error(response, 412, "ERR_UNSUPPORTED_VERSION")
    assert header(response, "access-control-allow-origin") == "https://tus.io"
    assert header(response, "vary") == "Origin"
    exposed = {name.lower() for name in listed(response, "access-control-expose-headers")}
    assert {name.lower() for name in TUSD_EXPOSE_HEADERS} <= exposed
    for name in PREFLIGHT_ONLY + ["access-control-allow-credentials"]:
        assert header(response, name) is None, name


@pytest_twisted.ensureDeferred
async def test_successful_requests_expose_headers(server):
    origin = {"Origin": "http://app.example"}
    response = await treq.post(server.url, b"he", headers={
        **TUS, **origin, "Upload-Length": "5", "Content-Type": OCTET})
    await response.content()
    assert response.code == 201
    assert header(response, "access-control-allow-origin") == "http://app.example"
    exposed = {name.lower() for name in listed(response, "access-control-expose-headers")}
    assert {"location", "upload-offset"} <= exposed
    location = header(response, "location")
    for method, headers in [("HEAD", TUS), ("PATCH", {**TUS, "Upload-Offset": "2", "Content-Type": OCTET}),
                            ("GET", {}), ("DELETE", TUS)]:
        response = await treq.request(method, location, headers={**headers, **origin},
                                      data=b"llo" if method == "PATCH" else None)
        await response.content()
        assert response.code in (200, 204), (method, response.code)
        assert header(response, "access-control-allow-origin") == "http://app.example", method
        assert header(response, "access-control-expose-headers") is not None, method
        assert header(response, "access-control-allow-methods") is None, method


@pytest_twisted.ensureDeferred
async def test_error_responses_have_cors_headers(server):
    response = await treq.head(server.url + "0123456789abcdef", headers={**TUS, "Origin": "https://tus.io"})
    await response.content()
    assert response.code == 404
    assert header(response, "access-control-allow-origin") == "https://tus.io"


@pytest_twisted.ensureDeferred
async def test_no_origin_no_cors(server):
    response = await treq.request("OPTIONS", server.url)
    await response.content()
    assert cors_headers(response) == []
    response = await treq.post(server.url, headers={**TUS, "Upload-Length": "5"})
    await response.content()
    assert response.code == 201
    assert cors_headers(response) == []


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("origin", ["http://tus.io", "https://tus.io"])
async def test_custom_allowed_origin(server_factory, origin):
    server = await server_factory(cors=CorsConfig(allow_origin=r"^https?://tus\.io$"))
    response = await preflight(server, origin)
    assert response.code == 200
    assert header(response, "access-control-allow-origin") == origin
    assert header(response, "access-control-max-age") == "86400"
    response = await treq.post(server.url, headers={"Origin": origin, "Upload-Length": "5"})
    await expect_error(response, 412, "ERR_UNSUPPORTED_VERSION")
    assert header(response, "access-control-allow-origin") == origin
    assert header(response, "access-control-expose-headers") is not None


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("origin", ["http://example.com", "http://tus.io.evil.com", "http://evil.com/http://tus.io",
                                    "null"])
async def test_custom_forbidden_origin(server_factory, origin):
    server = await server_factory(cors=CorsConfig(allow_origin=r"^https?://tus\.io$"))
    response = await treq.request("OPTIONS", server.url, headers={"Origin": origin})
    await expect_error(response, 403, "ERR_ORIGIN_NOT_ALLOWED")
    assert cors_headers(response) == []
    response = await treq.post(server.url, headers={**TUS, "Origin": origin, "Upload-Length": "5"})
    await expect_error(response, 403, "ERR_ORIGIN_NOT_ALLOWED")
    assert cors_headers(response) == []
    assert os.listdir(server.store.path) == []


@pytest_twisted.ensureDeferred
async def test_forbidden_origin_cannot_touch_uploads(server_factory):
    server = await server_factory(cors=CorsConfig(allow_origin=r"^https://tus\.io$"))
    location = await create(server, 5)
    response = await treq.delete(location, headers={**TUS, "Origin": "https://evil.example"})
    await expect_error(response, 403, "ERR_ORIGIN_NOT_ALLOWED")
    response = await treq.head(location, headers=TUS)
    await response.content()
    assert response.code == 200


@pytest_twisted.ensureDeferred
async def test_custom_config(server_factory):
    server = await server_factory(cors=CorsConfig(
        allow_credentials=True, extra_allow_methods=("PUT",), extra_allow_headers=("X-Custom",),
        extra_expose_headers=("X-Exposed",), max_age=10))
    response = await preflight(server)
    assert response.code == 200
    assert header(response, "access-control-allow-credentials") == "true"
    methods = listed(response, "access-control-allow-methods")
    assert methods[-1] == "PUT" and "PATCH" in methods
    allowed = listed(response, "access-control-allow-headers")
    assert allowed[-1] == "X-Custom" and "Tus-Resumable" in allowed
    assert header(response, "access-control-max-age") == "10"
    response = await treq.post(server.url, headers={"Origin": "https://tus.io", "Upload-Length": "5"})
    await response.content()
    assert response.code == 412
    assert header(response, "access-control-allow-credentials") == "true"
    exposed = listed(response, "access-control-expose-headers")
    assert exposed[-1] == "X-Exposed" and "Location" in exposed
    for name in PREFLIGHT_ONLY:
        assert header(response, name) is None, name


@pytest_twisted.ensureDeferred
async def test_disabled(server_factory):
    server = await server_factory(cors=CorsConfig(enabled=False, allow_origin=r"^nothing$"))
    response = await preflight(server, "http://example.com")
    assert response.code == 200
    assert cors_headers(response) == []
    assert header(response, "vary") is None
    response = await treq.post(server.url, headers={"Origin": "http://example.com", "Upload-Length": "5"})
    assert await text(response) != ""
    assert response.code == 412
    assert cors_headers(response) == []
