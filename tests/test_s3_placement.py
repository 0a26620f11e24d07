"""
The S3 store places an upload's final object where a pre-create hook asked
(C{ChangeFileInfo.Storage.Key}, relative to the prefix): the multipart
upload, parts, GET, concatenation and termination all use that key, found
again from the C{.info} by a fresh store (another process); keys that step
out of the prefix or look like the store's own objects are refused, and a
finished object is never overwritten.  Against moto and rclone, then end to
end through C{twist tus --hooks-http}.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest
import pytest_twisted

from hookkit import receiver, twist  # noqa: F401  (fixtures)
from tests.s3servers import make_s3_store
from txtus import errors
from txtus.info import UploadInfo
from txtus.stores.s3.store import MIN_PART_SIZE


def placed(store, key: str, **fields) -> UploadInfo:
    return UploadInfo(storage=store.check_placement({"Key": key}), **fields)


@pytest.mark.parametrize("key", ["/abs", "a//b", "a/../b", "./a", "..", "x.info", "x.part", "a.staged.1/b",
                                 "a\x00b", "a\nb", "k" * 1100, ""])
def test_keys_out_of_the_rules_are_refused(moto_server, key: str) -> None:
    store = make_s3_store(moto_server)
    with pytest.raises(errors.InvalidStorage):
        store.check_placement({"Key": key} if key else {"Key": key, "Type": "s3store", "Path": "x"})


def test_only_the_key_is_placed(moto_server) -> None:
    store = make_s3_store(moto_server, prefix="up/")
    assert store.check_placement({"Key": "a/b.pdf", "Type": "s3store", "Bucket": moto_server.bucket}) == {
        "Key": "up/a/b.pdf"}
    assert store.check_placement({"Type": "s3store"}) == {}
    for wrong in ({"Path": "a"}, {"Key": "a", "Bucket": "another"}, {"Key": "a", "Type": "filestore"}):
        with pytest.raises(errors.InvalidStorage):
            store.check_placement(wrong)


@pytest_twisted.ensureDeferred
async def test_a_placed_upload_uses_its_key_everywhere(s3_server) -> None:
    store = make_s3_store(s3_server)
    size = MIN_PART_SIZE + 1000
    data = bytes(range(256)) * (size // 256 + 1)
    data = data[:size]
    upload = await store.new_upload(placed(store, "users/7/video.bin", size=size, metadata={"filetype": "video/mp4"}))
    key = store.prefix + "users/7/video.bin"
    assert upload.key == key
    info = json.loads(await store.client.get_object(store.info_key(upload.id)))
    assert info["Storage"] == {"Type": "s3store", "Bucket": s3_server.bucket, "Key": key}

    writer = await upload.open_chunk(0)
    writer.write(data[:1000])
    assert await writer.commit() == 1000

    # A fresh store: another process, or this one restarted.
    again = make_s3_store(s3_server, prefix=store.prefix)
    found = await again.get_upload(upload.id)
    assert found.key == key and (await found.get_info()).offset == 1000
    staged = await again.open_staged_chunk(found, 1000)
    staged.write(data[1000:])
    assert await staged.commit() == size
    await found.finish()
    assert await again.client.get_object(key) == data
    assert await again.client.head_object(store.key(upload.id)) is None
    assert await again.list_upload_ids() == [upload.id]

    with pytest.raises(errors.StorageTaken):
        await again.new_upload(placed(again, "users/7/video.bin", size=1))

    await again.terminate(found)
    assert await again.client.head_object(key) is None
    assert await again.client.list_objects(store.prefix) == []


@pytest_twisted.ensureDeferred
async def test_a_key_shaped_like_an_upload_s_own_object_key_is_refused(s3_server) -> None:
    """Upload URLs show object IDs: a key equal to one would write over (and delete) that upload's object."""
    store = make_s3_store(s3_server)
    other = await store.new_upload(UploadInfo(size=1))
    object_id = other.id.split("+", 1)[0]
    for key in (object_id, "0123abcd", "report_2026-q4"):
        with pytest.raises(errors.StorageTaken):
            await store.new_upload(placed(store, key, size=1))
    for key in (f"users/{object_id}", "report.csv"):
        assert (await store.new_upload(placed(store, key, size=1))).key == store.prefix + key


async def _complete(upload, data: bytes) -> None:
    writer = await upload.open_chunk(0)
    writer.write(data)
    assert await writer.commit() == len(data)
    await upload.finish()


@pytest_twisted.ensureDeferred
async def test_terminating_a_placed_upload_leaves_the_object_another_upload_made_at_its_key(s3_server) -> None:
    """
    Two uploads placed at one key at once both complete to it, the last
    winning; terminating the other one (finished first, or never) leaves
    the winner's object, and the winner's termination deletes it.
    """
    store = make_s3_store(s3_server)
    first = await store.new_upload(placed(store, "shared/a.bin", size=5))
    unfinished = await store.new_upload(placed(store, "shared/a.bin", size=5))
    winner = await store.new_upload(placed(store, "shared/a.bin", size=5))
    await _complete(first, b"first")
    await _complete(winner, b"win!!")
    key = store.prefix + "shared/a.bin"
    # Another process: the recorded ETag comes from the .info.
    again = make_s3_store(s3_server, prefix=store.prefix)
    try:
        await again.terminate(await again.get_upload(first.id))
        await again.terminate(await again.get_upload(unfinished.id))
        assert await again.client.get_object(key) == b"win!!"
        await again.terminate(await again.get_upload(winner.id))
        assert await again.client.head_object(key) is None
        assert await again.client.list_objects(store.prefix) == []
    finally:
        await again.client.close()


@pytest_twisted.ensureDeferred
async def test_concatenation_into_a_placed_key(moto_server) -> None:
    store = make_s3_store(moto_server)
    partials = []
    for n, data in enumerate((b"abc", b"defg")):
        upload = await store.new_upload(placed(store, f"parts/{n}", size=len(data), is_partial=True))
        writer = await upload.open_chunk(0)
        writer.write(data)
        await writer.commit()
        await upload.finish()
        partials.append(await store.get_upload(upload.id))
    final = await store.new_upload(placed(store, "all/final.txt", size=7, is_final=True))
    await store.concat_uploads(final, partials)
    await final.finish()
    assert await store.client.get_object(store.prefix + "all/final.txt") == b"abcdefg"


@pytest_twisted.ensureDeferred
async def test_a_damaged_info_pointing_outside_the_prefix_is_refused(moto_server) -> None:
    store = make_s3_store(moto_server)
    upload = await store.new_upload(UploadInfo(size=3))
    info = json.loads(await store.client.get_object(store.info_key(upload.id)))
    info["Storage"]["Key"] = "someone-elses/object"
    await store.client.put_object(store.info_key(upload.id), json.dumps(info).encode())
    with pytest.raises(errors.UploadInfoCorrupt):
        await store.get_upload(upload.id)


# End to end ---------------------------------------------------------------

def _s3_args(server, prefix: str) -> tuple[list[str], dict[str, str]]:
    return (["--s3-bucket", server.bucket, "--s3-endpoint", server.endpoint, "--s3-region", server.region,
             "--s3-prefix", prefix],
            {"AWS_ACCESS_KEY_ID": server.credentials.access_key,
             "AWS_SECRET_ACCESS_KEY": server.credentials.secret_key,
             "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent"})


@pytest_twisted.ensureDeferred
async def test_twist_tus_places_uploads_where_the_http_hook_says(moto_server, receiver, tmp_path: Path) -> None:
    from faultkit import TwistProcess, call, head, patch, target
    from twisted.internet.threads import deferToThread

    def policy(event):
        place = event["Event"]["Upload"]["MetaData"].get("key")
        return {"ChangeFileInfo": {"Storage": {"Key": place}}} if place else None

    receiver.policy = policy
    prefix = f"e2e{secrets.token_hex(4)}/"
    args, env = _s3_args(moto_server, prefix)
    server = TwistProcess(tmp_path / "unused", tmp_path, *args, "--hooks-http", receiver.url,
                          "--hooks-enabled-events", "pre-create", env=env)

    def scenario() -> None:
        import base64
        meta = b"key " + base64.b64encode(b"reports/2026/q4.csv")
        reply = call(server.port, b"POST", b"/files/", {b"Upload-Length": b"11", b"Upload-Metadata": meta})
        assert reply.status == 201, reply
        upload_id = reply.header(b"location").rsplit(b"/", 1)[1].decode()
        assert patch(server.port, upload_id, 0, b"hello ").status == 204
        server.stop()
        server.restart()
        assert head(server.port, upload_id).offset == 6
        assert patch(server.port, upload_id, 6, b"world").status == 204
        assert call(server.port, b"GET", target(upload_id)).body == b"hello world"

        again = call(server.port, b"POST", b"/files/", {b"Upload-Length": b"1", b"Upload-Metadata": meta})
        assert again.status == 409 and b"ERR_STORAGE_TAKEN" in again.body
        bad = call(server.port, b"POST", b"/files/", {b"Upload-Length": b"1",
                                                      b"Upload-Metadata": b"key " + base64.b64encode(b"../x")})
        assert bad.status == 500 and b"ERR_INVALID_STORAGE" in bad.body
        assert call(server.port, b"DELETE", target(upload_id)).status == 204
        server.assert_clean_log()

    try:
        await deferToThread(scenario)
        store = make_s3_store(moto_server, prefix=prefix)
        assert await store.client.list_objects(prefix) == []
    finally:
        server.stop()
