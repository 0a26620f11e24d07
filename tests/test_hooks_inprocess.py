"""
Hooks in process (an embedder's L{HookFunctions} in C{TusConfig.hooks}),
over real HTTP on loopback: what each event sees and what its answer does,
the three kinds of return value, and each way a hook can fail.
"""

import os

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater

from txtus.hooks.events import ALL_EVENTS, HookRequest, HookResponse, HTTPResponse
from txtus.hooks.inprocess import HookFunctions
from tushttp import TUS, create, expect_error, head, header, patch, stored, text, upload_id, wait_for

ALL = frozenset(ALL_EVENTS)


def recorder(seen, answer=None):
    def hook(request: HookRequest):
        seen.append(request)
        return answer(request) if answer is not None else None
    return hook


@pytest_twisted.ensureDeferred
async def test_lifecycle_events_in_order(server_factory):
    seen = []
    hooks = HookFunctions(**{name.replace("-", "_"): recorder(seen) for name in ALL_EVENTS})
    server = await server_factory(hooks=hooks, hook_events=ALL)
    location = await create(server, 5, headers={"Upload-Metadata": "name bmFtZQ=="})
    response = await patch(location, 0, b"hello")
    assert response.code == 204
    response = await treq.delete(location, headers=TUS)
    await response.content()
    assert response.code == 204

    async def all_arrived():
        return [r.type for r in seen].count("post-terminate") == 1
    await wait_for(all_arrived)
    types = [r.type for r in seen]
    # post-* events are not waited for, so only the pre-* order is fixed.
    assert [t for t in types if t.startswith("pre-")] == [
        "pre-request", "pre-create", "pre-request", "pre-finish", "pre-request", "pre-terminate"]
    assert sorted(t for t in types if t.startswith("post-")) == [
        "post-create", "post-finish", "post-receive", "post-terminate"]
    create_event = next(r for r in seen if r.type == "pre-create")
    assert create_event.upload.id == "" and create_event.upload.metadata == {"name": "name"}
    assert create_event.http_request.method == "POST"
    assert create_event.http_request.header["Upload-Length"] == ["5"]
    finish = next(r for r in seen if r.type == "post-finish")
    assert finish.upload.offset == 5 and finish.upload.id == upload_id(location)
    assert finish.http_request.method == "PATCH"


@pytest_twisted.ensureDeferred
async def test_pre_create_rejects_with_its_response(server_factory):
    def pre_create(request):
        return {"RejectUpload": True,
                "HTTPResponse": {"StatusCode": 403, "Body": "over quota", "Header": {"X-Quota": "0"}}}
    server = await server_factory(hooks=HookFunctions(pre_create=pre_create))
    response = await treq.post(server.url, headers={**TUS, "Upload-Length": "5"})
    assert response.code == 403
    assert await text(response) == "over quota"
    assert header(response, "x-quota") == "0"
    assert os.listdir(server.store.path) == []


@pytest_twisted.ensureDeferred
async def test_pre_create_rejection_without_response_is_tusds_error(server_factory):
    server = await server_factory(hooks=HookFunctions(pre_create=lambda r: HookResponse(reject_upload=True)))
    response = await treq.post(server.url, headers={**TUS, "Upload-Length": "5"})
    await expect_error(response, 400, "ERR_UPLOAD_REJECTED")


@pytest_twisted.ensureDeferred
async def test_pre_create_changes_id_metadata_and_response(server_factory):
    def pre_create(request):
        return {"ChangeFileInfo": {"ID": "chosen-by-hook", "MetaData": {"owner": "alice"}},
                "HTTPResponse": {"Header": {"X-Upload-Owner": "alice"}}}
    server = await server_factory(hooks=HookFunctions(pre_create=pre_create))
    response = await treq.post(server.url, headers={**TUS, "Upload-Length": "5",
                                                    "Upload-Metadata": "filename eC5iaW4="})
    await response.content()
    assert response.code == 201
    location = header(response, "location")
    assert location.endswith("/chosen-by-hook")
    assert header(response, "x-upload-owner") == "alice"
    status = await head(location)
    assert header(status, "upload-metadata") == "owner YWxpY2U="


@pytest_twisted.ensureDeferred
async def test_pre_create_invalid_id_is_a_hook_error(server_factory):
    server = await server_factory(hooks=HookFunctions(pre_create=lambda r: {"ChangeFileInfo": {"ID": "../x"}}))
    response = await treq.post(server.url, headers={**TUS, "Upload-Length": "5"})
    await expect_error(response, 500, "ERR_HOOK_INVALID_RESPONSE")
    assert os.listdir(server.store.path) == []


@pytest_twisted.ensureDeferred
async def test_pre_create_size_limit_per_upload(server_factory):
    server = await server_factory(hooks=HookFunctions(pre_create=lambda r: {"ChangeFileInfo": {"MaxSize": 4}}))
    response = await treq.post(server.url, headers={**TUS, "Upload-Length": "5"})
    await expect_error(response, 413, "ERR_MAX_SIZE_EXCEEDED")
    location = await create(server, None)
    response = await patch(location, 0, b"hello")
    assert response.code == 413 and response.text_body.startswith("ERR_UPLOAD_SIZE_EXCEEDED")
    response = await patch(location, 0, b"hell", {"Upload-Length": "5"})
    assert response.code == 413 and response.text_body.startswith("ERR_MAX_SIZE_EXCEEDED")
    response = await patch(location, 0, b"hell", {"Upload-Length": "4"})
    assert response.code == 204
    assert stored(server, location) == b"hell"


@pytest_twisted.ensureDeferred
async def test_pre_finish_sets_the_final_response(server_factory):
    def pre_finish(request):
        return HookResponse(http_response=HTTPResponse(200, "thanks", {"X-Done": request.upload.id}))
    server = await server_factory(hooks=HookFunctions(pre_finish=pre_finish), hook_events={"pre-finish"})
    location = await create(server, 5)
    response = await patch(location, 0, b"hel")
    assert response.code == 204 and header(response, "x-done") is None
    response = await patch(location, 3, b"lo")
    assert (response.code, response.text_body) == (200, "thanks")
    assert header(response, "x-done") == upload_id(location)
    assert header(response, "upload-offset") == "5"


@pytest_twisted.ensureDeferred
async def test_pre_terminate_refuses(server_factory):
    hooks = HookFunctions(pre_terminate=lambda r: {"RejectTermination": True})
    server = await server_factory(hooks=hooks, hook_events={"pre-terminate"})
    location = await create(server, 5, b"hello")
    response = await treq.delete(location, headers=TUS)
    await expect_error(response, 400, "ERR_UPLOAD_TERMINATION_REJECTED")
    assert stored(server, location) == b"hello"


@pytest_twisted.ensureDeferred
async def test_pre_request_authorises_each_request(server_factory):
    seen = []

    def pre_request(request):
        seen.append((request.http_request.method, request.upload.id, request.upload.offset))
        owner = request.upload.metadata.get("owner") if request.upload.id else "creator"
        if request.http_request.header.get("Authorization") != [f"Bearer {owner}"]:
            return {"RejectRequest": True, "HTTPResponse": {"StatusCode": 401, "Header": {"WWW-Authenticate": "Bearer"}}}
        return None
    server = await server_factory(hooks=HookFunctions(pre_request=pre_request), hook_events={"pre-request"})
    response = await treq.post(server.url, headers={**TUS, "Upload-Length": "5"})
    await expect_error(response, 401, "ERR_REQUEST_REJECTED")
    assert header(response, "www-authenticate") == "Bearer"
    assert os.listdir(server.store.path) == []

    response = await treq.post(server.url, headers={**TUS, "Upload-Length": "5", "Authorization": "Bearer creator",
                                                    "Upload-Metadata": "owner Ym9i"})
    await response.content()
    location = header(response, "location")
    bob = {"Authorization": "Bearer bob"}
    response = await patch(location, 0, b"hello", {"Authorization": "Bearer eve"})
    assert response.code == 401
    assert stored(server, location) == b""
    for method in ("HEAD", "GET", "DELETE"):
        response = await treq.request(method, location, headers=TUS)
        await response.content()
        assert response.code == 401, method
    response = await patch(location, 0, b"hello", bob)
    assert response.code == 204
    response = await treq.request("OPTIONS", server.url)
    await response.content()
    assert response.code == 200
    assert ("PATCH", upload_id(location), 0) in seen and ("HEAD", upload_id(location), 0) in seen
    assert all(method != "OPTIONS" for method, _, _ in seen)
    response = await treq.get(location, headers=bob)
    assert await response.content() == b"hello"


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("kind", ["plain", "deferred", "coroutine"])
async def test_answers_may_be_plain_deferred_or_coroutine(server_factory, kind):
    answer = {"RejectUpload": True, "HTTPResponse": {"StatusCode": 409, "Body": kind}}

    def plain(request):
        return answer

    def deferred(request):
        return deferLater(reactor, 0.01, lambda: answer)

    async def coroutine(request):
        await deferLater(reactor, 0.01, lambda: None)
        return answer
    hook = {"plain": plain, "deferred": deferred, "coroutine": coroutine}[kind]
    server = await server_factory(hooks=HookFunctions(pre_create=hook))
    response = await treq.post(server.url, headers={**TUS, "Upload-Length": "5"})
    assert (response.code, await text(response)) == (409, kind)


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("failure", ["raises", "hangs", "garbage"])
async def test_failing_blocking_hook_is_a_clear_500_and_keeps_the_data(server_factory, failure):
    def raises(request):
        raise RuntimeError("boom")

    def hangs(request):
        return Deferred()

    def garbage(request):
        return ["not", "a", "response"]
    code = {"raises": "ERR_HOOK_FAILED", "hangs": "ERR_HOOK_TIMEOUT", "garbage": "ERR_HOOK_INVALID_RESPONSE"}[failure]
    hook = {"raises": raises, "hangs": hangs, "garbage": garbage}[failure]
    server = await server_factory(hooks=HookFunctions(pre_finish=hook, pre_create=hook),
                                  hook_events={"pre-finish"}, hook_timeout=0.2)
    location = await create(server, 5)
    response = await patch(location, 0, b"hello")
    assert response.code == 500 and response.text_body.startswith(code + ": "), response.text_body
    assert stored(server, location) == b"hello"
    assert header(await head(location), "upload-offset") == "5"
    other = await server_factory(hooks=HookFunctions(pre_create=hook), hook_timeout=0.2)
    response = await treq.post(other.url, headers={**TUS, "Upload-Length": "5"})
    await expect_error(response, 500, code)


@pytest_twisted.ensureDeferred
async def test_failing_post_hooks_do_not_fail_the_request(server_factory):
    def raises(request):
        raise RuntimeError("boom")
    hooks = HookFunctions(post_create=raises, post_receive=raises, post_finish=raises, post_terminate=raises)
    server = await server_factory(hooks=hooks, hook_events=ALL)
    location = await create(server, 5, b"hello")
    response = await treq.delete(location, headers=TUS)
    await response.content()
    assert response.code == 204


@pytest_twisted.ensureDeferred
async def test_a_hook_may_answer_with_any_tus_error(server_factory):
    from txtus import errors

    from txtus.metrics import PrometheusMetrics

    def pre_create(request):
        raise errors.UploadRejected("uploads are closed for maintenance")
    metrics = PrometheusMetrics()
    server = await server_factory(hooks=HookFunctions(pre_create=pre_create), metrics=metrics)
    response = await treq.post(server.url, headers={**TUS, "Upload-Length": "5"})
    body = await expect_error(response, 400, "ERR_UPLOAD_REJECTED")
    assert "maintenance" in body
    # An answer, not a failure of the hook.
    assert metrics.registry.get_sample_value("txtus_hook_calls_total", {"event": "pre-create"}) == 1
    assert metrics.registry.get_sample_value("txtus_hook_failures_total", {"event": "pre-create"}) is None


def test_hook_functions_know_their_events():
    hooks = HookFunctions(pre_request=print, post_finish=print)
    assert hooks.events == {"pre-request", "post-finish"}
    with pytest.raises(TypeError):
        HookFunctions(pre_upload=print)


@pytest_twisted.ensureDeferred
async def test_draft_requests_have_the_same_hooks(server_factory):
    seen = []

    def pre_create(request):
        seen.append(request)
        if request.upload.metadata:
            return {"RejectUpload": True, "HTTPResponse": {"StatusCode": 403}}
        return None
    hooks = HookFunctions(pre_create=pre_create, pre_request=recorder(seen), post_finish=recorder(seen))
    server = await server_factory(hooks=hooks, hook_events={"pre-create", "pre-request", "post-finish"})
    draft = {"Upload-Draft-Interop-Version": "6", "Upload-Complete": "?1"}
    response = await treq.post(server.url, b"hello", headers=draft)
    await response.content()
    assert response.code == 201
    await wait_for(lambda: deferLater(reactor, 0, lambda: any(r.type == "post-finish" for r in seen)))
    assert [r.type for r in seen][:2] == ["pre-request", "pre-create"]
    assert next(r for r in seen if r.type == "post-finish").upload.offset == 5
    response = await treq.post(server.url, b"hello", headers={**draft, "Upload-Metadata": "a Yg=="})
    await response.content()
    assert response.code == 403
