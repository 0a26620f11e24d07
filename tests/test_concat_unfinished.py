"""
concatenation-unfinished: a final upload created while its partials are
still uploading completes when the last partial does; until then HEAD
shows no Upload-Offset.
"""

from __future__ import annotations

import pytest_twisted
import treq

from txtus.testing import start_server

TUS = {"Tus-Resumable": "1.0.0"}
OCTETS = "application/offset+octet-stream"


async def create(url: str, **headers: str) -> str:
    response = await treq.post(url, headers={**TUS, **headers})
    assert response.code == 201, await response.text()
    return response.headers.getRawHeaders("location")[0]


async def patch(location: str, offset: int, data: bytes) -> int:
    response = await treq.patch(location, data, headers={**TUS, "Upload-Offset": str(offset), "Content-Type": OCTETS})
    await response.content()
    return response.code


async def head(location: str):
    response = await treq.head(location, headers=TUS)
    return response.code, response.headers


@pytest_twisted.ensureDeferred
async def test_final_completes_when_last_partial_finishes(server):
    response = await treq.request("OPTIONS", server.url)
    assert "concatenation-unfinished" in response.headers.getRawHeaders("tus-extension")[0].split(",")
    a = await create(server.url, **{"Upload-Length": "5", "Upload-Concat": "partial"})
    b = await create(server.url, **{"Upload-Length": "6", "Upload-Concat": "partial"})
    assert await patch(a, 0, b"hello") == 204
    relative_b = b.split(str(server.port_number), 1)[1]
    final = await create(server.url, **{"Upload-Concat": f"final;{a} {relative_b}",
                                        "Upload-Metadata": "filename YWIudHh0"})
    code, headers = await head(final)
    assert code == 200
    assert headers.getRawHeaders("upload-offset") is None
    assert headers.getRawHeaders("upload-length") == ["11"]
    assert headers.getRawHeaders("upload-concat")[0].startswith("final;")
    assert await patch(final, 0, b"x") == 403

    assert await patch(b, 0, b" world") == 204
    code, headers = await head(final)
    assert headers.getRawHeaders("upload-offset") == ["11"]
    final_id = final.rsplit("/", 1)[1]
    with open(server.store.data_path(final_id), "rb") as f:
        assert f.read() == b"hello world"
    response = await treq.get(final)
    assert await response.content() == b"hello world"


@pytest_twisted.ensureDeferred
async def test_pending_final_completes_after_restart(server_factory, upload_dir):
    first = await server_factory()
    a = await create(first.url, **{"Upload-Length": "3", "Upload-Concat": "partial"})
    final = await create(first.url, **{"Upload-Concat": f"final;{a}"})
    path_a = a.split(str(first.port_number), 1)[1]
    path_final = final.split(str(first.port_number), 1)[1]
    await first.stop()
    # A new process knows nothing of the waiting final...
    second = await server_factory()
    base = f"http://127.0.0.1:{second.port_number}"
    assert await patch(base + path_a, 0, b"abc") == 204
    # ...and completes it when the final is looked at.
    code, headers = await head(base + path_final)
    assert headers.getRawHeaders("upload-offset") == ["3"]


@pytest_twisted.ensureDeferred
async def test_final_needs_partials_of_known_length(server):
    a = await create(server.url, **{"Upload-Defer-Length": "1", "Upload-Concat": "partial"})
    response = await treq.post(server.url, headers={**TUS, "Upload-Concat": f"final;{a}"})
    assert response.code == 400
    assert (await response.text()).startswith("ERR_INVALID_CONCAT")


@pytest_twisted.ensureDeferred
async def test_final_of_non_partial_is_refused(server):
    plain = await create(server.url, **{"Upload-Length": "3"})
    response = await treq.post(server.url, headers={**TUS, "Upload-Concat": f"final;{plain}"})
    assert response.code == 400


# Issue 11: locks, removed partials, finish retried ---------------------------

@pytest_twisted.ensureDeferred
async def test_concatenation_holds_the_partials_locks(server):
    """
    The final is copied from its partials while holding their locks: a
    request holding a partial's lock is asked to let go, and the copy waits
    for it.
    """
    from twisted.internet.defer import Deferred

    from tushttp import wait_for

    a = await create(server.url, **{"Upload-Length": "5", "Upload-Concat": "partial"})
    assert await patch(a, 0, b"hello") == 204
    partial_id = a.rsplit("/", 1)[1]
    asked: list[bool] = []
    held = await server.config.composer.locker.lock(partial_id, lambda: asked.append(True))
    posting: Deferred = treq.post(server.url, headers={**TUS, "Upload-Concat": f"final;{a}"})
    answered: list = []
    posting.addBoth(lambda result: answered.append(result) or result)

    async def release_was_requested():
        return bool(asked)

    await wait_for(release_was_requested)
    assert not answered  # the copy waits for the partial's lock
    await held.unlock()
    response = await posting
    assert response.code == 201
    code, headers = await head(response.headers.getRawHeaders("location")[0])
    assert headers.getRawHeaders("upload-offset") == ["5"]


@pytest_twisted.ensureDeferred
async def test_final_whose_partial_was_deleted_answers_410(server):
    a = await create(server.url, **{"Upload-Length": "5", "Upload-Concat": "partial"})
    final = await create(server.url, **{"Upload-Concat": f"final;{a}"})
    waiting = server.site.resource.children[b"files"].handler.concatenation._waiting
    assert waiting != {}
    response = await treq.delete(a, headers=TUS)
    assert response.code == 204
    code, _ = await head(final)
    assert code == 410
    response = await treq.get(final)
    assert response.code == 410
    assert b"ERR_INVALID_CONCAT" in await response.content()
    assert waiting == {}  # nothing left waiting for ever


class _FailingFinish:
    """Wraps a store so that the first C{finish} of each upload fails."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.failed: set[str] = set()
        self.calls = 0

    def use_in(self, composer) -> None:
        from zope.interface import directlyProvides, providedBy

        self.inner.use_in(composer)
        directlyProvides(self, *providedBy(self.inner))
        composer.use_core(self)

    def new_upload(self, info):
        return self.inner.new_upload(info).addCallback(self._wrap)

    def get_upload(self, upload_id):
        return self.inner.get_upload(upload_id).addCallback(self._wrap)

    def _wrap(self, upload):
        original = upload.finish

        def finish():
            from twisted.internet.defer import fail

            from txtus import errors

            self.calls += 1
            if upload.id not in self.failed:
                self.failed.add(upload.id)
                return fail(errors.InternalServerError("storage hiccup while finishing"))
            return original()

        upload.finish = finish
        return upload

    def __getattr__(self, name):
        return getattr(self.inner, name)


@pytest_twisted.ensureDeferred
async def test_failed_finish_is_retried_on_the_next_request(server_factory, upload_dir):
    from txtus import FileStore

    store = _FailingFinish(FileStore(str(upload_dir)))
    server = await server_factory(store=store)
    location = await create(server.url, **{"Upload-Length": "5"})
    assert await patch(location, 0, b"hello") == 500  # finish failed
    assert store.calls == 1
    upload_id = location.rsplit("/", 1)[1]
    code, headers = await head(location)  # finishing is retried here
    assert code == 200 and headers.getRawHeaders("upload-offset") == ["5"]
    assert store.calls == 2
    assert getattr(await (await store.inner.get_upload(upload_id)).get_info(), "finished", None) is True
    await head(location)
    assert store.calls == 2  # recorded: not finished again


@pytest_twisted.ensureDeferred
async def test_upload_complete_before_a_crash_is_finished_on_next_look(server, upload_dir):
    """The process died between the last commit and finish(): .info says nothing of it."""
    import json

    location = await create(server.url, **{"Upload-Length": "5"})
    upload_id = location.rsplit("/", 1)[1]
    (upload_dir / upload_id).write_bytes(b"hello")  # the commit, then the crash
    code, headers = await head(location)
    assert headers.getRawHeaders("upload-offset") == ["5"]
    assert json.loads((upload_dir / f"{upload_id}.info").read_text())["Finished"] is True
