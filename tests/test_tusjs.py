"""
tus-js-client (tus 1.0) against a real txtus server: plain uploads in one or
several PATCHes, creation-with-upload, and parallelUploads, which splits the
file into partial uploads and concatenates them (the concatenation
extension).
"""

from __future__ import annotations

import os

import pytest
import pytest_twisted
import treq

from tushttp import header, stored
from tusjs import run_upload, tusjs  # noqa: F401  (fixture)

TUS = {"Tus-Resumable": "1.0.0"}


def source_file(tmp_path, size: int):
    data = os.urandom(size)
    path = tmp_path / "data.bin"
    path.write_bytes(data)
    return path, data


@pytest.mark.parametrize("options", [
    {"chunkSize": "all"},
    {"chunkSize": 65536},
    {"chunkSize": 100000, "uploadDataDuringCreation": True},
], ids=["one-patch", "chunked", "with-creation"])
@pytest_twisted.ensureDeferred
async def test_tusjs_upload(tusjs, server, tmp_path, options):
    path, data = source_file(tmp_path, 300_000)
    url = await run_upload(tusjs, server.url, path, **options)
    assert stored(server, url) == data
    state = await treq.head(url, headers=TUS)
    await state.content()
    assert header(state, "upload-offset") == "300000"
    assert "filename ZGF0YS5iaW4=" in header(state, "upload-metadata")


@pytest.mark.parametrize("parts", [2, 4])
@pytest_twisted.ensureDeferred
async def test_tusjs_parallel_uploads_use_concatenation(tusjs, server, tmp_path, parts):
    path, data = source_file(tmp_path, 1_000_003)
    url = await run_upload(tusjs, server.url, path, parallelUploads=parts)
    assert stored(server, url) == data
    state = await treq.head(url, headers=TUS)
    await state.content()
    concat = header(state, "upload-concat")
    assert concat.startswith("final;") and len(concat[len("final;"):].split()) == parts
    assert header(state, "upload-offset") == header(state, "upload-length") == "1000003"
    # The metadata belongs to the final upload.
    assert "filename ZGF0YS5iaW4=" in header(state, "upload-metadata")
