"""
tus-js-client, a real client of the IETF draft, against a real txtus server:
its C{ietf-draft-03} (interop version 5) and C{ietf-draft-05} (version 6)
protocols, uploading a Buffer in one or several requests.

tus-js-client is installed with npm once per test session into a temporary
directory; the tests are skipped, saying why, without Node or npm or when
the install fails (no network).
"""

from __future__ import annotations

import os

import pytest
import pytest_twisted
import treq

from tushttp import header, stored
from tusjs import run_upload, tusjs  # noqa: F401  (fixture)


@pytest.fixture
def draft_tusjs(tusjs):
    upload_source = tusjs[1] / "node_modules" / "tus-js-client" / "lib" / "upload.js"
    source = upload_source.read_text() if upload_source.exists() else ""
    if "ietf-draft-05" not in source:
        pytest.skip("the installed tus-js-client has no ietf-draft-05 protocol option")
    return tusjs


async def _run_upload(tusjs, server, tmp_path, protocol, size, chunk_size, during):
    data = os.urandom(size)
    source = tmp_path / "data.bin"
    source.write_bytes(data)
    url = await run_upload(tusjs, server.url, source, protocol=protocol,
                           chunkSize="all" if chunk_size == "all" else int(chunk_size),
                           uploadDataDuringCreation=during)
    assert stored(server, url) == data
    return url


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("protocol", ["ietf-draft-03", "ietf-draft-05"])
@pytest.mark.parametrize("chunk_size,during", [("all", False), ("100000", False), ("100000", True)])
async def test_tusjs_draft_upload(draft_tusjs, server, tmp_path, protocol, chunk_size, during):
    url = await _run_upload(draft_tusjs, server, tmp_path, protocol, 250_000, chunk_size, during)
    state = await treq.head(url, headers={"Upload-Draft-Interop-Version": "8"})
    await state.content()
    assert header(state, "upload-complete") == "?1"
    assert header(state, "upload-length") == "250000"
    # The metadata tus-js-client sent as Upload-Metadata was kept.
    tus_state = await treq.head(url, headers={"Tus-Resumable": "1.0.0"})
    await tus_state.content()
    assert "filename ZGF0YS5iaW4=" in header(tus_state, "upload-metadata")
