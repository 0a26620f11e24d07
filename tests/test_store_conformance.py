"""
One conformance suite for every shipped store: what the server relies on
from IDataStore, IUpload, IChunkWriter and the extensions.
"""

from __future__ import annotations

import json
import os

import pytest
import pytest_twisted
from zope.interface import implementer
from twisted.internet.interfaces import IConsumer

from txtus import StoreComposer, errors
from txtus.stores.file import FileChunkWriter, FileStore
from txtus.info import UploadInfo
from txtus.interfaces import (
    IChunkStager, IChunkWriter, IDataStore, ILengthAwareChunkWriter, IStagedChunkWriter, IUpload, IUploadIdValidator,
)
from txtus.stores.memory import MemoryStore
from tests.s3servers import make_s3_store


@pytest.fixture(params=["file", "memory", "s3-moto", "s3-rclone", "s3-moto-pipe", "s3-rclone-pipe", "s3-moto-spool",
                        "s3-rclone-spool"])
def store(request, tmp_path):
    if request.param == "file":
        yield FileStore(str(tmp_path / "store"))
        return
    if request.param == "memory":
        yield MemoryStore()
        return
    name, _, mode = request.param[3:].partition("-")
    server = request.getfixturevalue("s3_servers")(name)
    if mode == "spool":  # buffer mode, parts spooled to disk (--s3-spool-dir)
        (tmp_path / "spool").mkdir()
        store = make_s3_store(server, spool_dir=str(tmp_path / "spool"))
    else:
        store = make_s3_store(server, part_mode=mode or "buffer")
    yield store
    pytest_twisted.blockon(store.client.close())


@implementer(IConsumer)
class Collector:
    """A consumer that drives a pull producer to the end."""

    def __init__(self):
        self.data = b""
        self.producer = None

    def registerProducer(self, producer, streaming):
        self.producer = producer
        if not streaming:
            while self.producer is not None:
                producer.resumeProducing()

    def unregisterProducer(self):
        self.producer = None

    def write(self, data):
        self.data += data


async def write_chunk(upload, offset: int, *pieces: bytes) -> int:
    writer = await upload.open_chunk(offset)
    assert IChunkWriter.providedBy(writer)
    if ILengthAwareChunkWriter.providedBy(writer):
        writer.expect_length(sum(len(p) for p in pieces))  # as the server does with Content-Length
    for piece in pieces:
        writer.write(piece)
    return await writer.commit()


async def read_all(store, upload, start=0, length=None) -> bytes:
    info = await upload.get_info()
    collector = Collector()
    await store.send_content(upload, collector, start, info.offset - start if length is None else length)
    return collector.data


def test_use_in_fills_every_slot(store):
    composer = StoreComposer()
    store.use_in(composer)
    for slot in ("core", "terminater", "concater", "length_deferrer", "reader", "lister", "expiry_renewer"):
        assert getattr(composer, slot) is store
    # Staging is a capability: declared (and then used) or not at all.
    assert composer.stager is (store if IChunkStager.providedBy(store) else None)


def stager(store):
    """The store's IChunkStager, or skip: the store does not declare one."""
    if not IChunkStager.providedBy(store):
        pytest.skip(f"{type(store).__name__} does not stage chunks (no IChunkStager)")
    return store


@pytest_twisted.ensureDeferred
async def test_renewed_expiry_is_kept(store):
    upload = await store.new_upload(UploadInfo(size=10, expires=1_700_000_000.0))
    await write_chunk(upload, 0, b"hello")
    await store.renew_expiry(upload, 1_700_000_100.5)
    info = await (await store.get_upload(upload.id)).get_info()
    assert (info.expires, info.offset, info.size) == (1_700_000_100.5, 5, 10)
    await store.terminate(upload)
    with pytest.raises(errors.UploadNotFound):
        await store.renew_expiry(upload, 1_700_000_200.0)


def test_composer_refuses_what_does_not_provide_the_interface():
    composer = StoreComposer()
    with pytest.raises(TypeError, match="IDataStore"):
        composer.use_core(object())
    with pytest.raises(TypeError, match="ILocker"):
        composer.use_locker(MemoryStore())


@pytest_twisted.ensureDeferred
async def test_create_and_get(store):
    upload = await store.new_upload(UploadInfo(size=10, metadata={"name": "x", "empty": "", "odd": "\udcff"}))
    assert IUpload.providedBy(upload)
    object_id = upload.id.split("+", 1)[0]  # S3: tusd's <objectid>+<multipartid>
    assert len(object_id) == 32 and int(object_id, 16) >= 0
    again = await store.get_upload(upload.id)
    info = await again.get_info()
    assert (info.id, info.size, info.offset) == (upload.id, 10, 0)
    assert info.metadata == {"name": "x", "empty": "", "odd": "\udcff"}
    assert upload.id in await store.list_upload_ids()
    # The server accepts, in a URL, every ID the store makes.
    composer = StoreComposer()
    store.use_in(composer)
    assert composer.is_valid_upload_id(upload.id)


@pytest_twisted.ensureDeferred
async def test_unknown_and_malformed_ids_are_not_found(store):
    for upload_id in ("0" * 32, "../etc/passwd", "", "a/b", "x\x00"):
        with pytest.raises(errors.UploadNotFound):
            await store.get_upload(upload_id)


@pytest_twisted.ensureDeferred
async def test_chunks_append_and_commit_reports_offset(store):
    upload = await store.new_upload(UploadInfo(size=11))
    assert await write_chunk(upload, 0, b"hel", b"lo") == 5
    assert await write_chunk(upload, 5, b" world") == 11
    assert (await upload.get_info()).offset == 11
    await upload.finish()  # the server's next step (S3 assembles its parts here)
    assert await read_all(store, upload) == b"hello world"
    assert await read_all(store, upload, 6, 3) == b"wor"


@pytest_twisted.ensureDeferred
async def test_rollback_discards_the_whole_chunk(store):
    upload = await store.new_upload(UploadInfo(size=20))
    await write_chunk(upload, 0, b"keep")
    writer = await stager(store).open_staged_chunk(upload, 4)
    assert IStagedChunkWriter.providedBy(writer)
    writer.write(b"discard")
    writer.write(b" me")
    assert await writer.rollback() == 4
    assert (await upload.get_info()).offset == 4
    with pytest.raises(RuntimeError):
        await writer.commit()
    assert await write_chunk(upload, 4, b"-the rest, 16 b") == 19
    assert await write_chunk(upload, 19, b"!") == 20
    await upload.finish()
    assert await read_all(store, upload) == b"keep-the rest, 16 b!"


@pytest_twisted.ensureDeferred
async def test_chunk_at_wrong_offset_is_refused(store):
    upload = await store.new_upload(UploadInfo(size=20))
    await write_chunk(upload, 0, b"abc")
    with pytest.raises(errors.MismatchedOffset):
        await upload.open_chunk(1)


@pytest_twisted.ensureDeferred
async def test_terminate(store):
    upload = await store.new_upload(UploadInfo(size=3))
    await write_chunk(upload, 0, b"abc")
    await store.terminate(upload)
    with pytest.raises(errors.UploadNotFound):
        await store.get_upload(upload.id)
    assert upload.id not in await store.list_upload_ids()


@pytest_twisted.ensureDeferred
async def test_declare_length(store):
    upload = await store.new_upload(UploadInfo(size=None))
    assert (await upload.get_info()).size_is_deferred
    await store.declare_length(upload, 42)
    info = await (await store.get_upload(upload.id)).get_info()
    assert info.size == 42 and not info.size_is_deferred


@pytest_twisted.ensureDeferred
async def test_concat(store):
    a = await store.new_upload(UploadInfo(size=3, is_partial=True))
    b = await store.new_upload(UploadInfo(size=4, is_partial=True))
    await write_chunk(a, 0, b"abc")
    await write_chunk(b, 0, b"defg")
    final = await store.new_upload(UploadInfo(size=10, is_final=True, partial_uploads=[a.id, b.id, a.id]))
    await store.concat_uploads(final, [a, b, a])
    info = await final.get_info()
    assert info.offset == 10 and info.is_complete and info.partial_uploads == [a.id, b.id, a.id]
    await final.finish()  # as the server does after concatenating
    assert await read_all(store, final) == b"abcdefgabc"


@pytest_twisted.ensureDeferred
async def test_get_info_returns_a_copy(store):
    upload = await store.new_upload(UploadInfo(size=5, metadata={"k": "v"}))
    info = await upload.get_info()
    info.metadata["k"] = "changed"
    info.size = 99
    fresh = await upload.get_info()
    assert fresh.metadata == {"k": "v"} and fresh.size == 5


# Issue 11 contracts: staged chunks, abort, idempotent finish ----------------

@pytest_twisted.ensureDeferred
async def test_staged_chunk_is_invisible_until_commit(store):
    a = await store.new_upload(UploadInfo(size=6, is_partial=True))
    await write_chunk(a, 0, b"abc")
    writer = await stager(store).open_staged_chunk(a, 3)
    writer.write(b"def")
    # By no path: offset, download, concatenation.
    assert (await a.get_info()).offset == 3
    shown = await read_unfinished(store, a)
    assert shown in (b"abc", None)
    if shown is not None:
        final = await store.new_upload(UploadInfo(size=3, is_final=True, partial_uploads=[a.id]))
        await store.concat_uploads(final, [a])
        assert await read_all(store, final) == b"abc"
    assert await writer.commit() == 6
    assert (await a.get_info()).offset == 6
    await a.finish()  # complete: the server's next step
    assert await read_all(store, a) == b"abcdef"


async def read_unfinished(store, upload) -> bytes | None:
    """
    A download of an unfinished upload; L{None} from stores that serve only
    finished ones (the S3 store, like tusd's: the bytes are in parts).
    """
    try:
        return await read_all(store, upload)
    except errors.IncompleteUpload:
        return None


@pytest_twisted.ensureDeferred
async def test_abort_discards_a_staged_chunk_and_never_raises(store):
    upload = await store.new_upload(UploadInfo(size=10))
    writer = await stager(store).open_staged_chunk(upload, 0)
    writer.write(b"unverified")
    assert await writer.abort() is None
    assert await writer.abort() is None  # again: a no-op
    assert (await upload.get_info()).offset == 0
    assert await write_chunk(upload, 0, b"0123456789") == 10


@pytest_twisted.ensureDeferred
async def test_abort_of_a_plain_chunk_keeps_a_counted_prefix(store):
    upload = await store.new_upload(UploadInfo(size=10))
    writer = await upload.open_chunk(0)
    writer.write(b"hello")
    assert await writer.abort() is None
    offset = (await upload.get_info()).offset
    assert offset in (0, 5)
    with pytest.raises(RuntimeError):
        await writer.commit()
    # The offset counts exactly what was kept: resuming from it gives the
    # whole upload back.
    rest = await upload.open_chunk(offset)
    rest.write(b"helloworld"[offset:])
    assert await rest.commit() == 10
    assert await rest.abort() is None  # after commit: a no-op
    await upload.finish()
    assert await read_all(store, upload) == b"helloworld"


@pytest_twisted.ensureDeferred
async def test_finish_is_recorded_and_idempotent(store):
    upload = await store.new_upload(UploadInfo(size=3))
    await write_chunk(upload, 0, b"abc")
    assert (await upload.get_info()).finished is False
    await upload.finish()
    await upload.finish()
    assert (await upload.get_info()).finished is True
    assert (await (await store.get_upload(upload.id)).get_info()).finished is True
    assert await read_all(store, upload) == b"abc"


def test_composer_uses_the_store_s_own_upload_id_rule():
    @implementer(IDataStore, IUploadIdValidator)
    class PlusIds:
        def new_upload(self, info): ...
        def get_upload(self, upload_id): ...
        def is_valid_upload_id(self, upload_id):
            return upload_id.replace("+", "").isalnum()

    composer = StoreComposer()
    composer.use_core(PlusIds())
    assert composer.is_valid_upload_id("abc+def")
    assert not composer.is_valid_upload_id("../etc")
    default = StoreComposer()
    default.use_core(MemoryStore())
    assert not default.is_valid_upload_id("abc+def") and default.is_valid_upload_id("abc-def")


# File-store specifics: tusd's layout, atomic .info writes -------------------

@pytest_twisted.ensureDeferred
async def test_file_store_writes_tusd_info(tmp_path):
    store = FileStore(str(tmp_path))
    upload = await store.new_upload(UploadInfo(size=7, metadata={"filename": "a.txt"}, is_partial=True))
    with open(store.info_path(upload.id), "rb") as f:
        document = json.load(f)
    assert document["ID"] == upload.id
    assert document["Size"] == 7 and document["SizeIsDeferred"] is False
    assert document["MetaData"] == {"filename": "a.txt"}
    assert document["IsPartial"] is True and document["IsFinal"] is False
    assert document["Storage"]["Type"] == "filestore"
    assert sorted(os.listdir(tmp_path)) == sorted([upload.id, upload.id + ".info"])  # no temp files left


@pytest_twisted.ensureDeferred
async def test_file_store_reads_a_tusd_directory(tmp_path):
    upload_id = "3f1c9a0e5b7d4c2a8e6f0b1d2c3a4e5f"
    tusd_info = {
        "ID": upload_id, "Size": 11, "SizeIsDeferred": False, "Offset": 0,
        "MetaData": {"filename": "hello.txt", "filetype": "text/plain"},
        "IsPartial": False, "IsFinal": False, "PartialUploads": None,
        "Storage": {"Type": "filestore", "Path": f"/srv/tusd-data/{upload_id}",
                    "InfoPath": f"/srv/tusd-data/{upload_id}.info"},
    }
    (tmp_path / f"{upload_id}.info").write_text(json.dumps(tusd_info))
    (tmp_path / upload_id).write_bytes(b"hello")
    store = FileStore(str(tmp_path))
    upload = await store.get_upload(upload_id)
    info = await upload.get_info()
    # The offset is the data file's size, as in tusd, not the .info's.
    assert (info.size, info.offset, info.metadata["filename"]) == (11, 5, "hello.txt")
    assert await write_chunk(upload, 5, b" world") == 11
    assert (tmp_path / upload_id).read_bytes() == b"hello world"


@pytest_twisted.ensureDeferred
async def test_file_store_corrupt_info_is_an_error_not_a_crash(tmp_path):
    store = FileStore(str(tmp_path))
    upload = await store.new_upload(UploadInfo(size=3))
    (tmp_path / f"{upload.id}.info").write_text("{not json")
    with pytest.raises(errors.TusError) as caught:
        await store.get_upload(upload.id)
    assert caught.value.status == 500


def test_file_store_refuses_bad_options(tmp_path):
    with pytest.raises(ValueError):
        FileStore(str(tmp_path), fsync="sometimes")


@pytest_twisted.ensureDeferred
async def test_file_store_sees_info_replaced_by_another_process(tmp_path):
    """The .info cache is checked against the file on every read."""
    mine, theirs = FileStore(str(tmp_path)), FileStore(str(tmp_path))
    upload = await mine.new_upload(UploadInfo(size=None))
    assert (await (await mine.get_upload(upload.id)).get_info()).size is None  # now cached
    await theirs.declare_length(await theirs.get_upload(upload.id), 9)
    assert (await (await mine.get_upload(upload.id)).get_info()).size == 9
    await theirs.terminate(await theirs.get_upload(upload.id))
    with pytest.raises(errors.UploadNotFound):
        await mine.get_upload(upload.id)


def test_upload_info_copy_shares_nothing():
    info = UploadInfo(id="a", size=3, metadata={"k": "v"}, partial_uploads=["p"], storage={"s": "t"})
    clone = info.copy(offset=2)
    clone.metadata["k"] = "x"
    clone.partial_uploads.append("q")
    clone.storage["s"] = "u"
    assert (info.metadata, info.partial_uploads, info.storage, info.offset) == ({"k": "v"}, ["p"], {"s": "t"}, 0)
    assert clone.offset == 2 and clone.size == 3


# File-store crash safety (issue 11) ----------------------------------------

async def _staged_commit_cut_short(tmp_path, copied: bytes):
    """
    The state a crash leaves right after a staged chunk's commit marker was
    written, with C{copied} of its bytes already copied into place.
    """
    store = FileStore(str(tmp_path))
    upload = await store.new_upload(UploadInfo(size=10))
    await write_chunk(upload, 0, b"01234")
    staged = f"{upload.id}.00000000{'0' * 8}.staged"
    (tmp_path / staged).write_bytes(b"56789")
    (tmp_path / f"{upload.id}.commit").write_bytes(b"5 5 " + staged.encode())
    with open(store.data_path(upload.id), "ab") as f:
        f.write(copied)
    return upload.id


@pytest.mark.parametrize("copied", [b"", b"56", b"56789"])
@pytest_twisted.ensureDeferred
async def test_file_store_finishes_a_staged_commit_a_crash_cut_short(tmp_path, copied):
    upload_id = await _staged_commit_cut_short(tmp_path, copied)
    restarted = FileStore(str(tmp_path))  # its start-up sweep does it
    upload = await restarted.get_upload(upload_id)
    assert (await upload.get_info()).offset == 10
    assert (tmp_path / upload_id).read_bytes() == b"0123456789"
    assert sorted(os.listdir(tmp_path)) == sorted([upload_id, upload_id + ".info"])


@pytest_twisted.ensureDeferred
async def test_file_store_recovers_a_commit_before_counting_the_offset(tmp_path):
    store = FileStore(str(tmp_path))
    upload_id = await _staged_commit_cut_short(tmp_path, b"567")
    # A process that was already running (no start-up sweep) sees it too.
    upload = await store.get_upload(upload_id)
    assert (await upload.get_info()).offset == 10
    assert await write_chunk(upload, 10, b"") == 10


@pytest_twisted.ensureDeferred
async def test_file_store_drops_a_partial_copy_whose_staging_file_is_lost(tmp_path):
    upload_id = await _staged_commit_cut_short(tmp_path, b"56")
    for name in os.listdir(tmp_path):
        if name.endswith(".staged"):
            os.unlink(tmp_path / name)
    upload = await FileStore(str(tmp_path)).get_upload(upload_id)
    assert (await upload.get_info()).offset == 5  # none of the chunk, never a part
    assert (tmp_path / upload_id).read_bytes() == b"01234"


@pytest_twisted.ensureDeferred
async def test_file_store_sweeps_stale_crash_leftovers_only(tmp_path):
    store = FileStore(str(tmp_path))
    upload = await store.new_upload(UploadInfo(size=10))
    writer = await stager(store).open_staged_chunk(upload, 0)
    writer.write(b"abc")
    old = [f"{upload.id}.0123456789abcdef.staged", f"{upload.id}.info.0badf00d.tmp"]
    for name in old:
        (tmp_path / name).write_bytes(b"left by a crash")
        os.utime(tmp_path / name, (1, 1))
    live = set(os.listdir(tmp_path)) - set(old)
    FileStore(str(tmp_path))
    assert set(os.listdir(tmp_path)) == live  # the live staging file stays
    assert (await upload.get_info()).offset == 0
    assert await writer.commit() == 3
    (tmp_path / old[0]).write_bytes(b"again")
    os.utime(tmp_path / old[0], (1, 1))
    await store.list_upload_ids()  # the cleaner's listing sweeps too
    assert not (tmp_path / old[0]).exists()


@pytest_twisted.ensureDeferred
async def test_file_store_does_not_follow_symlinks(tmp_path):
    secret = tmp_path / "secret"
    secret.write_bytes(b"not an upload")
    store = FileStore(str(tmp_path / "store"))
    upload = await store.new_upload(UploadInfo(size=100))
    os.unlink(store.data_path(upload.id))
    os.symlink(secret, store.data_path(upload.id))
    with pytest.raises(errors.TusError) as caught:
        await upload.get_info()
    assert caught.value.status == 500
    with pytest.raises(errors.TusError):
        await store.send_content(upload, Collector(), 0, 5)
    writer = FileChunkWriter(store.data_path(upload.id), 0, False)
    writer.write(b"overwrite")
    with pytest.raises(errors.TusError):
        await writer.commit()
    assert secret.read_bytes() == b"not an upload"
    info_link = tmp_path / "store" / "linked.info"
    os.symlink(store.info_path(upload.id), info_link)
    with pytest.raises(errors.TusError):
        await store.get_upload("linked")


@pytest_twisted.ensureDeferred
async def test_file_store_removes_stale_temporary_info_files(tmp_path):
    """A crash between writing and renaming a .info left a *.tmp for ever."""
    store = FileStore(str(tmp_path))
    upload = await store.new_upload(UploadInfo(size=1))
    leftover = tmp_path / f"{upload.id}.info.0badf00d.tmp"
    leftover.write_bytes(b"{}")
    os.utime(leftover, (1, 1))
    FileStore(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == sorted([upload.id, upload.id + ".info"])
