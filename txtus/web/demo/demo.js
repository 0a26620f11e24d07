/*
 * The txtus demo page: a small tus 1.0 client written for this page, with
 * no library and no build step, so that it works offline.  It creates an
 * upload (POST), sends the file (PATCH, with the upload's offset), asks
 * where an interrupted upload stands (HEAD) and removes a cancelled one
 * (DELETE, when the server offers termination).
 *
 * The URL of every upload is kept in this browser's localStorage, keyed by
 * the file's name, size, type and modification time: choosing the same file
 * after a reload resumes where the server says the upload stands.  That list
 * is also the only list of uploads the page shows; the server offers none.
 *
 * Query options: ?chunk_size=<bytes> sends the file in PATCH requests of at
 * most that many bytes (for proxies that limit request bodies); by default
 * one PATCH carries the rest of the file.
 */
'use strict';

(function () {
  const page = document.body;
  const endpoint = new URL(page.dataset.endpoint, location.href).href;
  const downloads = page.dataset.download === 'on';
  const chunkSize = Math.max(0, parseInt(new URLSearchParams(location.search).get('chunk_size'), 10) || 0);
  const storageKey = 'txtus-demo:' + endpoint;
  const server = { extensions: [], maxSize: 0 };
  const active = new Set();  // upload URLs a transfer on this page is working on
  let described = null;      // settles once the server said what it offers

  const $ = (id) => document.getElementById(id);

  function el(tag, props, ...children) {
    const node = Object.assign(document.createElement(tag), props || {});
    node.append(...children);
    return node;
  }

  function button(label, action) {
    return el('button', { type: 'button', textContent: label, onclick: action });
  }

  function size(n) {
    const units = ['bytes', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return (i ? n.toFixed(1) : String(n)) + ' ' + units[i];
  }

  function base64(text) {
    let binary = '';
    for (const byte of new TextEncoder().encode(text)) binary += String.fromCharCode(byte);
    return btoa(binary);
  }

  // This browser's uploads ------------------------------------------------

  function load() {
    try {
      const list = JSON.parse(localStorage.getItem(storageKey));
      return Array.isArray(list) ? list : [];
    } catch (e) {
      return [];
    }
  }

  function save(list) {
    localStorage.setItem(storageKey, JSON.stringify(list));
  }

  function remember(entry) {
    save(load().filter((e) => e.url !== entry.url).concat([entry]));
    showUploads();
  }

  function forget(url) {
    save(load().filter((e) => e.url !== url));
    showUploads();
  }

  function fingerprint(file) {
    return [file.name, file.size, file.type, file.lastModified].join('\n');
  }

  function tus(method, url, headers) {
    return fetch(url, { method, cache: 'no-store', headers: Object.assign({ 'Tus-Resumable': '1.0.0' }, headers) });
  }

  async function refusal(response) {
    const text = (await response.text()).trim();
    return response.status + ' ' + (text || response.statusText);
  }

  function showUploads() {
    const list = $('uploads');
    const entries = load().filter((e) => !active.has(e.url));
    list.replaceChildren(...entries.map((entry) => {
      const item = el('li', { className: entry.done ? 'done' : 'interrupted' });
      if (entry.done) {
        item.append(downloads ? el('a', { href: entry.url, download: entry.name, textContent: entry.name })
                              : el('strong', { textContent: entry.name }),
                    ' ', el('span', { className: 'note', textContent: size(entry.size) + ', ' + new Date(entry.at).toLocaleString() }),
                    ' ', button('Forget', () => forget(entry.url)));
      } else {
        const stored = entry.offset === undefined ? '' : size(entry.offset) + ' of ';
        item.append(el('strong', { textContent: entry.name }),
                    ' ', el('span', { className: 'note', textContent:
                      'interrupted at ' + stored + size(entry.size) + ': choose the same file to resume' }),
                    ' ', button('Discard', () => discard(entry.url)));
      }
      return item;
    }));
    $('none').hidden = entries.length > 0;
  }

  async function discard(url) {
    if (server.extensions.includes('termination')) await tus('DELETE', url).catch(() => null);
    forget(url);
  }

  // Where each interrupted upload stands, or that it is gone (expired,
  // removed by someone holding its URL).
  async function checkInterrupted() {
    for (const entry of load().filter((e) => !e.done)) {
      const response = await tus('HEAD', entry.url).catch(() => null);
      if (response === null) continue;
      if (response.status === 404 || response.status === 410) {
        forget(entry.url);
      } else if (response.ok) {
        const list = load();
        const stored = list.find((e) => e.url === entry.url);
        if (stored) stored.offset = parseInt(response.headers.get('Upload-Offset'), 10);
        save(list);
      }
    }
    showUploads();
  }

  // One file on its way -----------------------------------------------------

  class Transfer {
    constructor(file) {
      this.file = file;
      this.url = null;
      this.offset = 0;
      this.xhr = null;
      this.run = 0;        // which start() is current; older ones stop
      this.cancelled = false;
      this.progress = el('progress', { max: Math.max(file.size, 1), value: 0 });
      this.status = el('span', { className: 'status' });
      this.buttons = {
        pause: button('Pause', () => this.pause()),
        resume: button('Resume', () => this.start()),
        cancel: button('Cancel', () => this.cancel()),
      };
      this.row = el('li', { className: 'transfer' },
                    el('strong', { textContent: file.name }), ' ', this.status, this.progress,
                    el('span', { className: 'buttons' }, this.buttons.pause, this.buttons.resume, this.buttons.cancel));
      this.row.dataset.name = file.name;
      $('transfers').append(this.row);
    }

    show(state, text) {
      this.row.dataset.state = state;
      if (text !== undefined) this.status.textContent = text;
      this.buttons.pause.disabled = state !== 'running';
      this.buttons.resume.disabled = state !== 'paused' && state !== 'failed';
      this.buttons.cancel.disabled = state === 'done';
    }

    sent(offset) {
      this.progress.value = offset;
      const percent = this.file.size ? Math.floor(offset * 100 / this.file.size) : 100;
      this.status.textContent = size(offset) + ' of ' + size(this.file.size) + ' (' + percent + '%)';
    }

    async start() {
      const run = ++this.run;
      this.show('running', 'starting\u2026');
      try {
        await described;
        if (this.url === null) await this.create();
        else await this.ask();
        while (run === this.run && this.offset < this.file.size) await this.patch();
        if (run === this.run) this.finish();
      } catch (error) {
        if (run === this.run) this.show('failed', String(error.message || error));
      }
    }

    // A new upload, unless this browser has an interrupted one of the same file.
    async create() {
      const print = fingerprint(this.file);
      const earlier = load().find((e) => !e.done && e.fingerprint === print);
      if (earlier && active.has(earlier.url)) throw new Error('this file is already being uploaded on this page');
      if (earlier) {
        this.url = earlier.url;
        if (await this.ask(true)) {
          active.add(this.url);
          showUploads();
          return;
        }
        forget(earlier.url);
        this.url = null;
      }
      if (server.maxSize && this.file.size > server.maxSize) {
        throw new Error(size(this.file.size) + ' is more than this server accepts (' + size(server.maxSize) + ')');
      }
      let metadata = 'filename ' + base64(this.file.name);
      if (this.file.type) metadata += ',filetype ' + base64(this.file.type);
      const response = await tus('POST', endpoint, { 'Upload-Length': String(this.file.size), 'Upload-Metadata': metadata });
      if (response.status !== 201) throw new Error('the server refused the upload: ' + await refusal(response));
      this.url = new URL(response.headers.get('Location'), endpoint).href;
      this.offset = 0;
      if (this.cancelled) {
        // Cancel was pressed while the upload was being created.
        await discard(this.url);
        return;
      }
      active.add(this.url);
      remember({ url: this.url, fingerprint: print, name: this.file.name, size: this.file.size,
                 done: false, at: Date.now() });
    }

    // Where the upload stands on the server (after a pause, a failure or a reload).
    async ask(quiet) {
      const response = await tus('HEAD', this.url);
      const length = parseInt(response.headers.get('Upload-Length'), 10);
      if (response.status !== 200 || length !== this.file.size) {
        if (quiet) return false;
        throw new Error('the upload can no longer be resumed: ' + response.status);
      }
      this.offset = parseInt(response.headers.get('Upload-Offset'), 10);
      this.sent(this.offset);
      return true;
    }

    // XMLHttpRequest, not fetch: it reports upload progress.
    patch() {
      const end = chunkSize ? Math.min(this.offset + chunkSize, this.file.size) : this.file.size;
      return new Promise((resolve, reject) => {
        const xhr = this.xhr = new XMLHttpRequest();
        xhr.open('PATCH', this.url);
        xhr.setRequestHeader('Tus-Resumable', '1.0.0');
        xhr.setRequestHeader('Upload-Offset', String(this.offset));
        xhr.setRequestHeader('Content-Type', 'application/offset+octet-stream');
        xhr.upload.onprogress = (event) => this.sent(this.offset + event.loaded);
        xhr.onload = () => {
          if (xhr.status === 204) {
            this.offset = parseInt(xhr.getResponseHeader('Upload-Offset'), 10);
            this.sent(this.offset);
            resolve();
          } else {
            reject(new Error('the server refused a chunk: ' + xhr.status + ' ' + xhr.responseText.trim()));
          }
        };
        xhr.onerror = () => reject(new Error('the connection was lost; Resume continues where the server stands'));
        xhr.onabort = () => resolve();  // paused or cancelled: start() sees a newer run
        xhr.send(this.file.slice(this.offset, end));
      });
    }

    stop() {
      this.run += 1;
      if (this.xhr) this.xhr.abort();
    }

    pause() {
      this.stop();
      this.show('paused', 'paused at ' + size(this.offset) + ' of ' + size(this.file.size));
    }

    async cancel() {
      this.cancelled = true;
      this.stop();
      this.row.remove();
      if (this.url !== null) {
        active.delete(this.url);
        await discard(this.url);
      }
    }

    finish() {
      this.show('done', 'done: ' + size(this.file.size));
      active.delete(this.url);
      remember({ url: this.url, name: this.file.name, size: this.file.size, done: true, at: Date.now() });
    }
  }

  // The page ----------------------------------------------------------------

  async function describeServer() {
    $('endpoint').textContent = endpoint;  // absolute: what a tus client needs
    try {
      const response = await fetch(endpoint, { method: 'OPTIONS', cache: 'no-store' });
      if (!response.ok) {
        // Browsers send Origin with same-origin requests too: a --cors-origin
        // that leaves out this page's origin refuses the page itself.
        const hint = response.status === 403 ? ' (is ' + location.origin + ' in its --cors-origin?)' : '';
        $('tus-version').textContent = 'the server refused this page: ' + await refusal(response) + hint;
        return;
      }
      const header = (name) => response.headers.get(name);
      server.extensions = (header('Tus-Extension') || '').split(',').map((s) => s.trim()).filter(Boolean);
      server.maxSize = parseInt(header('Tus-Max-Size'), 10) || 0;
      $('tus-version').textContent = header('Tus-Version') || '(not advertised)';
      $('tus-extensions').replaceChildren(...server.extensions.map((name) => el('code', { textContent: name })));
      $('tus-max-size').textContent = server.maxSize ? size(server.maxSize) + ' (' + server.maxSize + ' bytes)' : 'no limit';
      $('tus-checksums').textContent = (header('Tus-Checksum-Algorithm') || '(none)').split(',').join(', ');
    } catch (error) {
      $('tus-version').textContent = 'the server did not answer: ' + error;
    }
  }

  function upload(files) {
    for (const file of files) new Transfer(file).start();
  }

  const zone = $('dropzone');
  const input = $('file');
  input.addEventListener('change', () => {
    upload(Array.from(input.files));
    input.value = '';
  });
  zone.addEventListener('dragover', (event) => {
    event.preventDefault();
    zone.classList.add('over');
  });
  zone.addEventListener('dragleave', () => zone.classList.remove('over'));
  zone.addEventListener('drop', (event) => {
    event.preventDefault();
    zone.classList.remove('over');
    upload(Array.from(event.dataTransfer.files));
  });

  showUploads();
  described = describeServer();
  described.then(checkInterrupted);
}());
