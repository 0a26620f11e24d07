"""
tus-js-client, a real client of the IETF draft, against a real txtus server:
its C{ietf-draft-03} (interop version 5) and C{ietf-draft-05} (version 6)
protocols, uploading a Buffer in one or several requests.

tus-js-client is installed with npm once per test session into a temporary
directory; the tests are skipped, saying why, without Node or npm or when
the install fails (no network).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.utils import getProcessOutputAndValue

from tushttp import header, stored

INSTALL_TIMEOUT = 120
UPLOAD_TIMEOUT = 30

SCRIPT = r"""
const fs = require('fs');
const tus = require('tus-js-client');
const [endpoint, protocol, path, chunkSize, during] = process.argv.slice(2);
const data = fs.readFileSync(path);
const upload = new tus.Upload(data, {
  endpoint,
  protocol,
  chunkSize: chunkSize === 'all' ? Infinity : Number(chunkSize),
  uploadDataDuringCreation: during === 'yes',
  retryDelays: [],
  metadata: { filename: 'data.bin', filetype: 'application/octet-stream' },
  onError(error) { console.error(String(error)); process.exit(1); },
  onSuccess() { console.log(JSON.stringify({ url: upload.url })); process.exit(0); },
});
upload.start();
setTimeout(() => { console.error('timed out'); process.exit(2); }, 20000);
"""


@pytest.fixture(scope="module")
def tusjs(tmp_path_factory):
    """A directory with tus-js-client installed and the upload script."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are needed for the tus-js-client end-to-end tests")
    directory = tmp_path_factory.mktemp("tusjs")
    (directory / "package.json").write_text('{"name": "txtus-ietf-e2e", "private": true}')
    try:
        result = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--loglevel=error", "tus-js-client@^4"],
            cwd=directory, capture_output=True, text=True, timeout=INSTALL_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.skip(f"npm install tus-js-client took more than {INSTALL_TIMEOUT} s")
    if result.returncode != 0:
        pytest.skip(f"npm install tus-js-client failed: {result.stderr.strip()[-500:]}")
    upload_source = directory / "node_modules" / "tus-js-client" / "lib" / "upload.js"
    source = upload_source.read_text() if upload_source.exists() else ""
    if "ietf-draft-05" not in source:
        pytest.skip("the installed tus-js-client has no ietf-draft-05 protocol option")
    (directory / "upload.js").write_text(SCRIPT)
    return node, directory


async def _run_upload(tusjs, server, tmp_path, protocol, size, chunk_size, during):
    node, directory = tusjs
    data = os.urandom(size)
    source = tmp_path / "data.bin"
    source.write_bytes(data)
    run = getProcessOutputAndValue(
        node, [str(directory / "upload.js"), server.url, protocol, str(source), chunk_size,
               "yes" if during else "no"],
        env={"PATH": os.environ.get("PATH", "")}, path=str(directory), reactor=reactor)
    run.addTimeout(UPLOAD_TIMEOUT, reactor)
    out, err, code = await run
    assert code == 0, (out, err)
    url = json.loads(out.decode().strip().splitlines()[-1])["url"]
    assert stored(server, url) == data
    return url


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("protocol", ["ietf-draft-03", "ietf-draft-05"])
@pytest.mark.parametrize("chunk_size,during", [("all", False), ("100000", False), ("100000", True)])
async def test_tusjs_draft_upload(tusjs, server, tmp_path, protocol, chunk_size, during):
    url = await _run_upload(tusjs, server, tmp_path, protocol, 250_000, chunk_size, during)
    state = await treq.head(url, headers={"Upload-Draft-Interop-Version": "8"})
    await state.content()
    assert header(state, "upload-complete") == "?1"
    assert header(state, "upload-length") == "250000"
    # The metadata tus-js-client sent as Upload-Metadata was kept.
    tus_state = await treq.head(url, headers={"Tus-Resumable": "1.0.0"})
    await tus_state.content()
    assert "filename ZGF0YS5iaW4=" in header(tus_state, "upload-metadata")
