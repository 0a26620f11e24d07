/*
 * The cross-origin test page (tests/test_browser_clients.py): served from
 * another loopback port than the tus server, it uploads the chosen file with
 * tus-js-client (the prebuilt tus.min.js the package ships) or with Uppy's
 * tus plugin (uppy.js, bundled from @uppy/core and @uppy/tus by the test
 * set-up), and reports what happened in window.outcome.
 *
 * Query: client=tusjs|uppy, endpoint=<tus endpoint>, and optionally
 * chunkSize, parallelUploads, reloadAt=<bytes> (reload the page once, as
 * soon as the server has accepted that many bytes).
 */
'use strict';

const query = new URLSearchParams(location.search);
const options = { endpoint: query.get('endpoint'), retryDelays: [] };
for (const name of ['chunkSize', 'parallelUploads']) {
  if (query.has(name)) options[name] = Number(query.get(name));
}
const reloadAt = Number(query.get('reloadAt') || 0);

window.outcome = {};

function report(fields) {
  Object.assign(window.outcome, fields);
  document.getElementById('outcome').textContent = JSON.stringify(window.outcome, null, 1);
}

// Once per tab, so that the reloaded page resumes instead of reloading again.
function accepted(bytes) {
  if (reloadAt && bytes >= reloadAt && !sessionStorage.getItem('reloaded')) {
    sessionStorage.setItem('reloaded', String(bytes));
    location.reload();
  }
}

async function withTusJs(file) {
  const upload = new tus.Upload(file, Object.assign({}, options, {
    metadata: { filename: file.name, filetype: file.type },
    onChunkComplete: (size, bytes) => accepted(bytes),
    onError: (error) => report({ error: String(error) }),
    onSuccess: () => report({ url: upload.url }),
  }));
  const previous = await upload.findPreviousUploads();
  if (previous.length) {
    upload.resumeFromPreviousUpload(previous[0]);
    report({ resumed: previous[0].uploadUrl });
  }
  upload.start();
}

function withUppy(file) {
  const uppy = new Uppy({ autoProceed: false }).use(UppyTus, Object.assign({}, options, {
    onChunkComplete: (size, bytes) => accepted(bytes),
  }));
  uppy.on('upload-error', (f, error, response) => report({ error: error.message, status: response && response.status }));
  uppy.on('upload-success', (f, response) => report({ url: response.uploadURL }));
  uppy.addFile({ name: file.name, type: file.type, data: file, source: 'Local' });
  uppy.upload();
}

document.getElementById('file').addEventListener('change', (event) => {
  const file = event.target.files[0];
  (query.get('client') === 'uppy' ? withUppy : withTusJs)(file);
});
report({ ready: true });
