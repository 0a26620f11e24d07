"""
End to end: C{twist tus --hooks-http} against a real tusd-style hook
receiver (twisted.web, on loopback, in this process): every event in
tusd's JSON shape and what each answer does, and each way the receiver
can fail (5xx, hanging, garbage, too large, unreachable), which gives the
client a clear 500 with a stable code, is logged with the upload ID, and
leaves the upload's data intact.
"""

from __future__ import annotations

import base64

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.web.server import Site

from faultkit import TwistProcess, wait_until
from hookkit import HANG, Address, Answer, Receiver, answer, receiver, twist, wait_for_events  # noqa: F401 (fixtures)
from tushttp import OCTET, TUS, connect, expect_error, header, text, wait_for

UPLOAD_KEYS = {"ID", "Size", "SizeIsDeferred", "Offset", "MetaData", "IsPartial", "IsFinal",
               "PartialUploads", "Storage"}


def start(twist, receiver, *args):
    return twist("--hooks-http", receiver.url, "--hooks-http-backoff", "0.05s", *args)


async def post(server, headers=None, body=None):
    all_headers = {**TUS, "Upload-Length": "5", **(headers or {})}
    if body is not None:
        all_headers["Content-Type"] = OCTET
    response = await treq.post(server.url, body, headers=all_headers)
    response.text_body = await text(response)
    return response


async def patch(location, offset, body, headers=None):
    response = await treq.patch(location, body, headers={**TUS, "Upload-Offset": str(offset),
                                                         "Content-Type": OCTET, **(headers or {})})
    response.text_body = await text(response)
    return response


@pytest_twisted.ensureDeferred
async def test_every_event_in_tusds_shape(twist, receiver):
    server = start(twist, receiver, "--hooks-enabled-events", "", "--progress-hooks-interval", "0.1s")
    response = await post(server, {"Upload-Metadata": "filename ZmlsZS50eHQ="})
    location = header(response, "location")
    upload_id = location.rsplit("/", 1)[1]
    assert (await patch(location, 0, b"hel")).code == 204
    assert (await patch(location, 3, b"lo")).code == 204
    response = await treq.delete(location, headers=TUS)
    await response.content()
    assert response.code == 204
    await wait_for_events(receiver, "post-terminate")
    await wait_for_events(receiver, "post-finish")

    async def progress_reported():
        return any(e["Event"]["Upload"]["Offset"] == 5 for e in receiver.of_type("post-receive"))
    # The second PATCH came within the interval: its progress follows later.
    await wait_for(progress_reported)
    types = [event["Type"] for event in receiver.events]
    assert set(types) == {"pre-request", "pre-create", "post-create", "post-receive", "pre-finish",
                          "post-finish", "pre-terminate", "post-terminate"}
    for event in receiver.events:
        assert set(event) == {"Type", "Event"}
        assert set(event["Event"]) == {"Upload", "HTTPRequest"}
        assert set(event["Event"]["Upload"]) == UPLOAD_KEYS
        assert set(event["Event"]["HTTPRequest"]) == {"Method", "URI", "RemoteAddr", "Header"}
        assert event["Event"]["HTTPRequest"]["RemoteAddr"].startswith("127.0.0.1:")
    pre_create = receiver.of_type("pre-create")[0]["Event"]
    assert pre_create["Upload"]["ID"] == "" and pre_create["Upload"]["Size"] == 5
    assert pre_create["Upload"]["MetaData"] == {"filename": "file.txt"}
    assert pre_create["HTTPRequest"]["Method"] == "POST"
    assert pre_create["HTTPRequest"]["URI"] == "/files/"
    assert pre_create["HTTPRequest"]["Header"]["Upload-Length"] == ["5"]
    assert pre_create["HTTPRequest"]["Header"]["Host"]
    post_create = receiver.of_type("post-create")[0]["Event"]["Upload"]
    assert post_create["ID"] == upload_id and post_create["Storage"]["Type"] == "filestore"
    finish = receiver.of_type("pre-finish")[0]["Event"]
    assert finish["Upload"]["Offset"] == 5 and finish["HTTPRequest"]["Method"] == "PATCH"
    progress = [e["Event"]["Upload"]["Offset"] for e in receiver.of_type("post-receive")]
    assert progress and progress[-1] == 5 and progress == sorted(progress)
    pre_request = [(e["Event"]["HTTPRequest"]["Method"], e["Event"]["Upload"]["ID"], e["Event"]["Upload"]["Offset"])
                   for e in receiver.of_type("pre-request")]
    assert pre_request == [("POST", "", 0), ("PATCH", upload_id, 0), ("PATCH", upload_id, 3),
                           ("DELETE", upload_id, 5)]
    assert all(h.getRawHeaders(b"content-type") == [b"application/json"] for h in receiver.headers)


@pytest_twisted.ensureDeferred
async def test_default_events_are_tusds(twist, receiver):
    server = start(twist, receiver)
    response = await post(server, body=b"hello")
    assert response.code == 201
    response = await treq.delete(header(response, "location"), headers=TUS)
    await response.content()
    await wait_for_events(receiver, "post-terminate")
    await wait_for_events(receiver, "post-finish")
    assert {e["Type"] for e in receiver.events} == {"pre-create", "post-create", "post-receive", "post-finish",
                                                   "post-terminate"}


@pytest_twisted.ensureDeferred
async def test_pre_create_rejects_and_changes(twist, receiver):
    def policy(event):
        metadata = event["Event"]["Upload"]["MetaData"]
        if "reject" in metadata:
            return {"RejectUpload": True, "HTTPResponse": {"StatusCode": 403, "Body": "no thanks",
                                                           "Header": {"X-Reason": "policy"}}}
        return {"ChangeFileInfo": {"ID": "named-by-hook", "MetaData": {"kept": "yes"}},
                "HTTPResponse": {"Header": {"X-Hooked": "1"}}}
    receiver.policy = policy
    server = start(twist, receiver)
    response = await post(server, {"Upload-Metadata": "reject"})
    assert (response.code, response.text_body, header(response, "x-reason")) == (403, "no thanks", "policy")
    response = await post(server, {"Upload-Metadata": "name eA=="})
    assert response.code == 201 and header(response, "x-hooked") == "1"
    assert header(response, "location").endswith("/files/named-by-hook")
    info = (server.path / "named-by-hook.info").read_text()
    assert '"kept": "yes"' in info and '"name"' not in info
    assert sorted(p.name for p in server.path.iterdir()) == ["named-by-hook", "named-by-hook.info"]


@pytest_twisted.ensureDeferred
async def test_pre_request_refuses_per_upload(twist, receiver):
    def policy(event):
        if event["Type"] != "pre-request":
            return None
        request = event["Event"]["HTTPRequest"]
        if request["Header"].get("Authorization") != ["Bearer ok"]:
            return {"RejectRequest": True, "HTTPResponse": {"StatusCode": 401, "Body": "who are you?"}}
        return None
    receiver.policy = policy
    server = start(twist, receiver, "--hooks-enabled-events", "pre-request")
    response = await post(server)
    assert (response.code, response.text_body) == (401, "who are you?")
    response = await post(server, {"Authorization": "Bearer ok"}, body=b"he")
    location = header(response, "location")
    response = await patch(location, 2, b"llo")
    assert response.code == 401
    assert (server.path / location.rsplit("/", 1)[1]).read_bytes() == b"he"
    response = await patch(location, 2, b"llo", {"Authorization": "Bearer ok"})
    assert response.code == 204


@pytest_twisted.ensureDeferred
async def test_post_receive_reports_progress_and_may_stop_the_upload(twist, receiver):
    stop_at = 3000

    def policy(event):
        if event["Type"] == "post-receive" and event["Event"]["Upload"]["Offset"] >= stop_at:
            return {"StopUpload": True, "HTTPResponse": {"StatusCode": 402, "Body": "quota reached"}}
        return None
    receiver.policy = policy
    server = start(twist, receiver, "--progress-hooks-interval", "0.05s")
    response = await post(server, {"Upload-Length": "100000"})
    location = header(response, "location")
    upload_id = location.rsplit("/", 1)[1]
    connection = await connect(Address(server))
    connection.write(f"PATCH /files/{upload_id} HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\n"
                     f"Upload-Offset: 0\r\nContent-Type: {OCTET}\r\nContent-Length: 100000\r\n\r\n".encode())
    answered = connection.response(timeout=20)
    sent = 0
    while not answered.called and sent < 100000:
        connection.write(b"x" * 500)
        sent += 500
        await deferLater(reactor, 0.02, lambda: None)
    reply = await answered
    assert (reply.status, reply.body) == (402, b"quota reached")
    assert sent < 100000
    await connection.wait_closed()
    response = await treq.head(location, headers=TUS)
    await response.content()
    offset = int(header(response, "upload-offset"))
    assert stop_at <= offset < 100000
    assert (server.path / upload_id).read_bytes() == b"x" * offset
    offsets = [e["Event"]["Upload"]["Offset"] for e in receiver.of_type("post-receive")]
    assert len(offsets) >= 2 and offsets == sorted(offsets)
    assert f"upload {upload_id} stopped by its post-receive hook" in server.log_text()


@pytest_twisted.ensureDeferred
async def test_pre_finish_sets_response_and_pre_terminate_refuses(twist, receiver):
    def policy(event):
        if event["Type"] == "pre-finish":
            return {"HTTPResponse": {"StatusCode": 200, "Body": '{"ok": true}',
                                     "Header": {"Content-Type": "application/json"}}}
        if event["Type"] == "pre-terminate":
            return {"RejectTermination": True, "HTTPResponse": {"Body": "finished uploads stay"}}
        return None
    receiver.policy = policy
    server = start(twist, receiver, "--hooks-enabled-events", "pre-finish,pre-terminate,post-terminate")
    response = await post(server, body=b"hel")
    location = header(response, "location")
    response = await patch(location, 3, b"lo")
    assert (response.code, response.text_body) == (200, '{"ok": true}')
    assert header(response, "content-type") == "application/json"
    assert header(response, "upload-offset") == "5"
    response = await treq.delete(location, headers=TUS)
    assert (response.code, await text(response)) == (400, "finished uploads stay")
    assert (server.path / location.rsplit("/", 1)[1]).read_bytes() == b"hello"
    assert receiver.of_type("post-terminate") == []


# Failures ------------------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_5xx_is_retried_with_backoff(twist, receiver):
    attempts = []

    def policy(event):
        attempts.append(event["Type"])
        if len(attempts) < 3:
            return Answer(b"busy", status=503, content_type=b"text/plain")
        return {"RejectUpload": True, "HTTPResponse": {"StatusCode": 418}}
    receiver.policy = policy
    server = start(twist, receiver, "--hooks-enabled-events", "pre-create")
    response = await post(server)
    assert response.code == 418
    assert attempts == ["pre-create"] * 3


FAILURES = {
    # name: (policy, expected code)
    "5xx": (lambda e: Answer(b"down", status=500, content_type=b"text/plain"), "ERR_HOOK_FAILED"),
    "4xx": (lambda e: Answer(b"nope", status=404, content_type=b"text/plain"), "ERR_HOOK_FAILED"),
    "hangs": (lambda e: HANG, "ERR_HOOK_TIMEOUT"),
    "not-json": (lambda e: Answer(b"<html>hi</html>"), "ERR_HOOK_INVALID_RESPONSE"),
    "empty-body": (lambda e: Answer(b""), "ERR_HOOK_INVALID_RESPONSE"),
    "wrong-content-type": (lambda e: Answer(b"{}", content_type=b"text/html"), "ERR_HOOK_INVALID_RESPONSE"),
    "no-content-type": (lambda e: Answer(b"{}", content_type=b""), "ERR_HOOK_INVALID_RESPONSE"),
    "wrong-shape": (lambda e: answer({"RejectUpload": "yes"}), "ERR_HOOK_INVALID_RESPONSE"),
    "too-large": (lambda e: answer({"HTTPResponse": {"Body": "x" * 10000}}), "ERR_HOOK_INVALID_RESPONSE"),
}


@pytest.fixture(scope="module")
def failing(tmp_path_factory):
    """One receiver failing pre-finish as each upload's C{mode} metadata says, and its server."""
    hooks = Receiver()
    port = reactor.listenTCP(0, Site(hooks), interface="127.0.0.1")
    hooks.url = f"http://127.0.0.1:{port.getHost().port}/hooks"
    hooks.policy = lambda event: FAILURES[event["Event"]["Upload"]["MetaData"]["mode"]][0](event)
    base = tmp_path_factory.mktemp("failing")
    server = TwistProcess(base / "uploads", base, "--hooks-http", hooks.url, "--hooks-enabled-events", "pre-finish",
                          "--hooks-http-retry", "1", "--hooks-http-timeout", "1s", "--hooks-http-backoff", "0.05s")
    yield server
    server.stop()
    hooks.stop_hanging()
    port.stopListening()


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("failure", sorted(FAILURES))
async def test_failing_receiver_is_a_clear_500_that_keeps_the_data(failing, failure):
    server, code = failing, FAILURES[failure][1]
    mode = base64.b64encode(failure.encode()).decode()
    response = await post(server, {"Upload-Metadata": f"mode {mode}"}, body=b"hel")
    location = header(response, "location")
    upload_id = location.rsplit("/", 1)[1]
    response = await patch(location, 3, b"lo")
    assert response.code == 500 and response.text_body.startswith(code + ": "), response.text_body
    assert (server.path / upload_id).read_bytes() == b"hello"
    response = await treq.head(location, headers=TUS)
    await response.content()
    assert header(response, "upload-offset") == "5"
    wait_until(lambda: f"pre-finish hook for upload {upload_id} failed: {code}" in server.log_text(),
               "the failure to be logged")
    server.assert_clean_log()


@pytest_twisted.ensureDeferred
async def test_hanging_past_the_hooks_timeout(twist, receiver):
    receiver.policy = lambda event: HANG
    server = start(twist, receiver, "--hooks-timeout", "0.5s")
    response = await post(server)
    await expect_error(response, 500, "ERR_HOOK_TIMEOUT")
    assert list(server.path.iterdir()) == []
    assert len(receiver.events) == 1  # given up, not retried


@pytest_twisted.ensureDeferred
async def test_unreachable_receiver(twist, tmp_path):
    server = twist("--hooks-http", "http://127.0.0.1:9/hooks", "--hooks-http-retry", "1",
                   "--hooks-http-backoff", "0.05s")
    response = await post(server)
    await expect_error(response, 500, "ERR_HOOK_FAILED")
    assert list(server.path.iterdir()) == []


@pytest_twisted.ensureDeferred
async def test_failing_post_hooks_never_fail_the_request(twist, receiver):
    receiver.policy = lambda event: Answer(b"down", status=500, content_type=b"text/plain")
    server = start(twist, receiver, "--hooks-enabled-events", "post-create,post-receive,post-finish",
                   "--hooks-http-retry", "0")
    response = await post(server, body=b"hello")
    assert response.code == 201 and header(response, "upload-offset") == "5"
    await wait_for_events(receiver, "post-finish")


@pytest_twisted.ensureDeferred
async def test_forwarded_headers(twist, receiver):
    server = start(twist, receiver, "--hooks-http-forward-headers", "authorization, X-Tenant",
                   "--hooks-enabled-events", "pre-create")
    await post(server, {"Authorization": "Bearer t", "X-Tenant": "acme", "X-Other": "no"})
    sent = receiver.headers[0]
    assert sent.getRawHeaders(b"authorization") == [b"Bearer t"]
    assert sent.getRawHeaders(b"x-tenant") == [b"acme"]
    assert sent.getRawHeaders(b"x-other") is None
