"""
The file store's C{.info} cache (filled by reads and by its own writes) never
hides a change another process made to the same directory.
"""

from __future__ import annotations

from typing import Any

import pytest_twisted

from txtus.info import UploadInfo
from txtus.stores.file import FileStore


@pytest_twisted.ensureDeferred
async def test_a_write_by_another_process_is_seen_right_after_our_own(tmp_path: Any) -> None:
    ours, theirs = FileStore(str(tmp_path)), FileStore(str(tmp_path))
    upload = await ours.new_upload(UploadInfo(size=None, metadata={"filename": "a"}))
    assert (await (await ours.get_upload(upload.id)).get_info()).size is None
    await theirs.declare_length(await theirs.get_upload(upload.id), 42)
    info = await (await ours.get_upload(upload.id)).get_info()
    assert info.size == 42 and info.metadata == {"filename": "a"}


@pytest_twisted.ensureDeferred
async def test_what_is_read_back_is_what_was_written(tmp_path: Any) -> None:
    store = FileStore(str(tmp_path))
    written = UploadInfo(size=7, metadata={"filename": "x.bin", "filetype": "a/b"}, expires=1234.5)
    upload = await store.new_upload(written)
    cached = await (await store.get_upload(upload.id)).get_info()
    fresh = await (await FileStore(str(tmp_path)).get_upload(upload.id)).get_info()
    assert cached == fresh
    assert cached.metadata == written.metadata and cached.expires == 1234.5 and cached.size == 7
