"""
The hook wire format (L{txtus.hooks.events}): requests in tusd v2's JSON
shape, tusd's response shape read as leniently as Go reads it where that is
harmless and refused where a wrong type would change what happens.
"""

import json

import pytest
from twisted.internet.address import IPv4Address
from twisted.web.test.requesthelper import DummyRequest

from txtus import errors
from txtus.hooks.events import (
    ALL_EVENTS,
    DEFAULT_EVENTS,
    HookRequest,
    HookResponse,
    HTTPRequest,
    HTTPResponse,
    canonical_header,
    parse_events,
)
from txtus.info import UploadInfo
from txtus.protocol.handler import Response


def test_request_json_has_tusd_shape():
    info = UploadInfo(id="abc", size=None, offset=5, metadata={"name": "ü.bin"}, storage={"Path": "/x"})
    http = HTTPRequest("PATCH", "/files/abc", "127.0.0.1:5000", {"Upload-Offset": ["0"]})
    document = json.loads(HookRequest("post-receive", info, http).to_json())
    assert document == {
        "Type": "post-receive",
        "Event": {
            "Upload": {"ID": "abc", "Size": 0, "SizeIsDeferred": True, "Offset": 5,
                       "MetaData": {"name": "ü.bin"}, "IsPartial": False, "IsFinal": False,
                       "PartialUploads": None, "Storage": {"Path": "/x"}},
            "HTTPRequest": {"Method": "PATCH", "URI": "/files/abc", "RemoteAddr": "127.0.0.1:5000",
                            "Header": {"Upload-Offset": ["0"]}},
        },
    }


def test_http_request_from_twisted_request():
    request = DummyRequest([b"abc"])
    request.method = b"HEAD"
    request.uri = b"/files/abc?x=1"
    request.client = IPv4Address("TCP", "10.0.0.1", 4321)
    request.requestHeaders.addRawHeader(b"x-custom-thing", b"a")
    request.requestHeaders.addRawHeader(b"X-Custom-Thing", b"b")
    http = HTTPRequest.from_request(request)
    assert (http.method, http.uri) == ("HEAD", "/files/abc?x=1")
    assert http.header["X-Custom-Thing"] == ["a", "b"]
    assert http.remote_addr == "10.0.0.1:4321"


def test_canonical_header():
    assert canonical_header("upload-LENGTH") == "Upload-Length"
    assert canonical_header("x-http-method-override") == "X-Http-Method-Override"


def test_response_in_tusd_shape():
    response = HookResponse.from_json(json.dumps({
        "HTTPResponse": {"StatusCode": 403, "Body": "no", "Header": {"X-Why": "quota"}},
        "RejectUpload": True,
        "ChangeFileInfo": {"ID": "new-id", "MetaData": {"a": "b"}, "Storage": {"Key": "k"}},
        "StopUpload": False,
    }).encode())
    assert response.http_response == HTTPResponse(403, "no", {"X-Why": "quota"})
    assert response.reject_upload and not response.stop_upload
    assert (response.change_file_info.id, response.change_file_info.metadata,
            response.change_file_info.storage) == ("new-id", {"a": "b"}, {"Key": "k"})


@pytest.mark.parametrize("raw", [b"", b"{}", b"null", b'{"HTTPResponse": null, "Unknown": 1}'])
def test_empty_answers_change_nothing(raw):
    if raw == b"":
        with pytest.raises(errors.HookInvalidResponse):
            HookResponse.from_json(raw)
        return
    assert HookResponse.from_json(raw) == HookResponse()


def test_field_names_match_without_case_like_go():
    response = HookResponse.from_dict({"rejectupload": True, "httpResponse": {"statusCode": 401}})
    assert response.reject_upload and response.http_response.status_code == 401


@pytest.mark.parametrize("document", [
    [], "yes", {"RejectUpload": "true"}, {"RejectUpload": 1}, {"HTTPResponse": {"StatusCode": "403"}},
    {"HTTPResponse": {"StatusCode": True}}, {"HTTPResponse": {"StatusCode": 1000}},
    {"HTTPResponse": {"Header": {"X": 1}}}, {"HTTPResponse": {"Header": {"X": "a\r\nSet-Cookie: x"}}},
    {"HTTPResponse": {"Header": {"Bad Name": "a"}}}, {"HTTPResponse": []},
    {"ChangeFileInfo": {"MetaData": ["a"]}}, {"ChangeFileInfo": {"MaxSize": -1}},
    {"ChangeFileInfo": {"MaxSize": 1.5}},
])
def test_garbage_is_an_invalid_response(document):
    with pytest.raises(errors.HookInvalidResponse):
        HookResponse.from_dict(document)


def test_not_json_is_an_invalid_response():
    with pytest.raises(errors.HookInvalidResponse) as caught:
        HookResponse.from_json(b"<html>oops</html>")
    assert caught.value.status == 500 and caught.value.code == "ERR_HOOK_INVALID_RESPONSE"


def test_enabled_events():
    assert parse_events("pre-create, post-finish") == {"pre-create", "post-finish"}
    assert parse_events("") == set(ALL_EVENTS)
    assert DEFAULT_EVENTS == {"pre-create", "post-create", "post-receive", "post-terminate", "post-finish"}
    with pytest.raises(ValueError, match="pre-upload"):
        parse_events("pre-create,pre-upload")


def test_rejection_takes_the_hooks_status_body_and_headers():
    error = HTTPResponse(402, "pay first", {"X-Pay": "here"}).apply_to(errors.UploadRejected())
    assert (error.status, error.body(), error.headers) == (402, b"pay first", {"X-Pay": "here"})
    assert error.code == "ERR_UPLOAD_REJECTED"
    plain = HTTPResponse().apply_to(errors.UploadRejected())
    assert (plain.status, plain.body()) == (400, b"ERR_UPLOAD_REJECTED: upload creation has been rejected by server\n")


def test_merge_into_a_response():
    response = Response(201, {b"location": b"/files/x"})
    HTTPResponse(0, "", {"X-Id": "7"}).merge_into(response)
    assert (response.status, response.headers) == (201, {b"location": b"/files/x", b"x-id": b"7"})
    HTTPResponse(200, "done").merge_into(response)
    assert (response.status, response.body) == (200, b"done")
