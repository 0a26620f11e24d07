"""
tus-js-client, a real tus client, driven from the tests through Node.

It is installed with npm once per test session into a temporary directory.
Tests that use the C{tusjs} fixture are skipped, saying why, when Node or
npm are missing or the install fails (no registry).  C{run_upload} uploads
a file with any tus-js-client options and returns the upload URL.
"""

from __future__ import annotations

import json
import os

import pytest
from twisted.internet import reactor
from twisted.internet.utils import getProcessOutputAndValue

from npmkit import npm_install

UPLOAD_TIMEOUT = 30

SCRIPT = r"""
const fs = require('fs');
const tus = require('tus-js-client');
const [endpoint, path, optionsJson] = process.argv.slice(2);
const data = fs.readFileSync(path);
const options = JSON.parse(optionsJson);
if (options.chunkSize === 'all') options.chunkSize = Infinity;
const upload = new tus.Upload(data, Object.assign({
  endpoint,
  retryDelays: [],
  metadata: { filename: 'data.bin', filetype: 'application/octet-stream' },
  onError(error) { console.error(String(error)); process.exit(1); },
  onSuccess() { console.log(JSON.stringify({ url: upload.url })); process.exit(0); },
}, options));
upload.start();
setTimeout(() => { console.error('timed out'); process.exit(2); }, 20000);
"""


@pytest.fixture(scope="session")
def tusjs(tmp_path_factory):
    """(node, directory) with tus-js-client installed and the upload script."""
    directory = tmp_path_factory.mktemp("tusjs")
    node = npm_install(directory, "tus-js-client@^4")
    (directory / "upload.js").write_text(SCRIPT)
    return node, directory


async def run_upload(tusjs, endpoint: str, source, **options) -> str:
    """Upload the file C{source} with tus-js-client; the upload's URL."""
    node, directory = tusjs
    run = getProcessOutputAndValue(
        node, [str(directory / "upload.js"), endpoint, str(source), json.dumps(options)],
        env={"PATH": os.environ.get("PATH", "")}, path=str(directory), reactor=reactor)
    run.addTimeout(UPLOAD_TIMEOUT, reactor)
    out, err, code = await run
    assert code == 0, (out, err)
    return json.loads(out.decode().strip().splitlines()[-1])["url"]
