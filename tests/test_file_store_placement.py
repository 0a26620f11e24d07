"""
The file store places an upload where a pre-create hook asked
(C{ChangeFileInfo.Storage.Path}, L{IUploadPlacer}): relative to its
directory, never outside it, never over an existing file; and every later
operation (in another store object, as after a restart) finds the bytes
through the C{.info}.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import pytest_twisted

from txtus import errors
from txtus.composer import StoreComposer
from txtus.info import UploadInfo
from txtus.interfaces import IUploadPlacer
from txtus.stores.file import FileStore
from txtus.stores.memory import MemoryStore


def placed(path: str, **fields) -> UploadInfo:
    return UploadInfo(storage={"Path": path}, **fields)


def test_the_file_store_declares_it_can_place_uploads(tmp_path: Path) -> None:
    assert IUploadPlacer.providedBy(FileStore(str(tmp_path)))
    assert not IUploadPlacer.providedBy(MemoryStore())


@pytest.mark.parametrize("path", [
    "/etc/passwd", "../outside", "a/../../outside", "a/./b", "a//b", "a/", ".hidden", "a/.b",
    "x.info", "x.lock", "x.tmp", "x.staged", "x.commit", "a\x00b", "a\nb", "n" * 256, "a/" * 600,
])
def test_paths_that_could_leave_or_confuse_the_directory_are_refused(tmp_path: Path, path: str) -> None:
    store = FileStore(str(tmp_path))
    with pytest.raises(errors.InvalidStorage):
        store.check_placement({"Path": path})


def test_only_the_path_is_placed(tmp_path: Path) -> None:
    store = FileStore(str(tmp_path))
    assert store.check_placement({"Path": "a/b.pdf", "Type": "filestore"}) == {"Path": "a/b.pdf"}
    assert store.check_placement({"Type": "filestore"}) == {}
    for wrong in ({"Key": "a/b"}, {"Type": "s3store", "Path": "a"}, {"InfoPath": "x.info"}):
        with pytest.raises(errors.InvalidStorage):
            store.check_placement(wrong)


def test_the_composer_refuses_a_placement_for_a_store_that_cannot_place() -> None:
    composer = StoreComposer()
    MemoryStore().use_in(composer)
    assert composer.check_placement({}) == {}
    with pytest.raises(errors.InvalidStorage):
        composer.check_placement({"Path": "a"})


@pytest_twisted.ensureDeferred
async def test_a_placed_upload_lives_where_asked_and_is_found_again(tmp_path: Path) -> None:
    store = FileStore(str(tmp_path))
    upload = await store.new_upload(placed("project/7/report.pdf", size=10))
    target = tmp_path / "project" / "7" / "report.pdf"
    assert target.exists() and not (tmp_path / upload.id).exists()
    recorded = json.loads((tmp_path / f"{upload.id}.info").read_text())["Storage"]
    assert recorded == {"Type": "filestore", "Path": str(target), "InfoPath": str(tmp_path / f"{upload.id}.info")}

    writer = await upload.open_chunk(0)
    writer.write(b"hello")
    assert await writer.commit() == 5

    # A fresh store object: what a restarted process sees.
    again = FileStore(str(tmp_path))
    found = await again.get_upload(upload.id)
    assert (await found.get_info()).offset == 5
    stager = await again.open_staged_chunk(found, 5)
    stager.write(b"world")
    assert await stager.commit() == 10
    await found.finish()
    assert target.read_bytes() == b"helloworld"
    assert await again.list_upload_ids() == [upload.id]

    await again.terminate(found)
    assert not target.exists() and not (tmp_path / "project").exists()
    assert not (tmp_path / f"{upload.id}.info").exists()


@pytest_twisted.ensureDeferred
async def test_concatenation_and_downloads_use_the_placed_files(tmp_path: Path) -> None:
    from twisted.internet.defer import Deferred
    store = FileStore(str(tmp_path))
    parts = []
    for name, data in (("p/one", b"abc"), ("p/two", b"def")):
        upload = await store.new_upload(placed(name, size=3, is_partial=True))
        writer = await upload.open_chunk(0)
        writer.write(data)
        await writer.commit()
        parts.append(await store.get_upload(upload.id))
    final = await store.new_upload(placed("final/all.bin", size=6, is_final=True))
    await store.concat_uploads(final, parts)
    assert (tmp_path / "final" / "all.bin").read_bytes() == b"abcdef"

    received = []

    class Consumer:
        def registerProducer(self, producer, streaming):
            self.producer = producer

        def unregisterProducer(self):
            pass

        def write(self, data):
            received.append(data)

    consumer = Consumer()
    done: Deferred = store.send_content(final, consumer, 1, 4)
    while not done.called:
        consumer.producer.resumeProducing()
    await done
    assert b"".join(received) == b"bcde"


@pytest_twisted.ensureDeferred
async def test_an_existing_file_is_never_overwritten(tmp_path: Path) -> None:
    store = FileStore(str(tmp_path))
    (tmp_path / "taken").write_bytes(b"precious")
    with pytest.raises(errors.StorageTaken):
        await store.new_upload(placed("taken", size=1))
    assert (tmp_path / "taken").read_bytes() == b"precious"
    first = await store.new_upload(placed("dir/a", size=1))
    with pytest.raises(errors.StorageTaken):
        await store.new_upload(placed("dir/a", size=1))
    # A file where a folder is needed.
    with pytest.raises(errors.StorageTaken):
        await store.new_upload(placed("taken/b", size=1))
    # The ID is claimed too: a hook choosing an existing ID.
    with pytest.raises(errors.StorageTaken):
        await store.new_upload(placed("dir/other", id=first.id, size=1))
    with pytest.raises(errors.StorageTaken):
        await store.new_upload(UploadInfo(id=first.id, size=1))
    assert not (tmp_path / "dir" / "other").exists()
    assert await store.list_upload_ids() == [first.id]


@pytest_twisted.ensureDeferred
async def test_a_symlink_on_the_way_is_never_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    store = FileStore(str(tmp_path / "uploads"))
    os.symlink(outside, tmp_path / "uploads" / "link")
    with pytest.raises(errors.StorageTaken):
        await store.new_upload(placed("link/evil", size=1))
    assert list(outside.iterdir()) == []

    # A folder swapped for a symlink after the upload was placed.
    upload = await store.new_upload(placed("real/file", size=1))
    (tmp_path / "uploads" / "real" / "file").rename(outside / "file")
    (tmp_path / "uploads" / "real").rmdir()
    os.symlink(outside, tmp_path / "uploads" / "real")
    with pytest.raises(errors.UploadInfoCorrupt):
        await FileStore(str(tmp_path / "uploads")).get_upload(upload.id)


@pytest_twisted.ensureDeferred
async def test_an_info_file_pointing_outside_is_refused(tmp_path: Path) -> None:
    store = FileStore(str(tmp_path / "uploads"))
    upload = await store.new_upload(UploadInfo(size=1))
    info_file = tmp_path / "uploads" / f"{upload.id}.info"
    document = json.loads(info_file.read_text())
    document["Storage"]["Path"] = str(tmp_path / "elsewhere")
    info_file.write_text(json.dumps(document))
    with pytest.raises(errors.UploadInfoCorrupt):
        await FileStore(str(tmp_path / "uploads")).get_upload(upload.id)


@pytest_twisted.ensureDeferred
async def test_a_moved_directory_keeps_its_placed_uploads(tmp_path: Path) -> None:
    store = FileStore(str(tmp_path / "old"))
    upload = await store.new_upload(placed("a/b", size=2))
    writer = await upload.open_chunk(0)
    writer.write(b"hi")
    await writer.commit()
    (tmp_path / "old").rename(tmp_path / "new")
    moved = FileStore(str(tmp_path / "new"))
    found = await moved.get_upload(upload.id)
    assert found.path == str(tmp_path / "new" / "a" / "b")
    assert (await found.get_info()).offset == 2


@pytest_twisted.ensureDeferred
async def test_placed_folders_get_the_stores_folder_mode(tmp_path: Path) -> None:
    store = FileStore(str(tmp_path), dir_mode=0o750)
    previous = os.umask(0)
    try:
        await store.new_upload(placed("a/b/c", size=1))
    finally:
        os.umask(previous)
    for folder in (tmp_path / "a", tmp_path / "a" / "b"):
        assert folder.stat().st_mode & 0o7777 == 0o750


class _Consumer:
    def __init__(self) -> None:
        self.received: list[bytes] = []

    def registerProducer(self, producer, streaming) -> None:
        self.producer = producer

    def unregisterProducer(self) -> None:
        pass

    def write(self, data: bytes) -> None:
        self.received.append(data)


@pytest_twisted.ensureDeferred
async def test_a_folder_swapped_for_a_symlink_after_the_check_is_not_followed(tmp_path: Path) -> None:
    """
    C{placed_path} checks the folders once per request; every later open,
    stat and unlink walks them again without following a symlink, so a
    folder swapped in between is refused, never followed out of the
    directory.
    """
    outside = tmp_path / "outside"
    store = FileStore(str(tmp_path / "uploads"))
    upload = await store.new_upload(placed("real/deeper/file", size=10))
    writer = await upload.open_chunk(0)
    writer.write(b"abc")
    assert await writer.commit() == 3
    # Found (and checked) before the swap, used after it: a request in flight.
    found = await store.get_upload(upload.id)
    early = await found.open_chunk(3)
    (tmp_path / "uploads" / "real").rename(outside)
    os.symlink(outside, tmp_path / "uploads" / "real")
    victim = outside / "deeper" / "file"

    early.write(b"evil")
    with pytest.raises(errors.TusError):
        await early.commit()
    with pytest.raises(errors.TusError):
        await found.get_info()
    with pytest.raises(errors.TusError):
        await found.open_chunk(3)
    with pytest.raises(errors.TusError):
        await store.open_staged_chunk(found, 3)
    consumer = _Consumer()
    with pytest.raises(errors.TusError):
        await store.send_content(found, consumer, 0, 3)
    assert consumer.received == []
    with pytest.raises(errors.TusError):
        await found.finish()
    with pytest.raises(errors.TusError):
        await store.terminate(found)
    assert victim.read_bytes() == b"abc"
    assert (outside / "deeper").is_dir()
