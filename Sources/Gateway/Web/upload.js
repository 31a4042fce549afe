// Uploads: POST /api/v1/storage/photos/upload, multipart with `metadata` ({"album_id": …},
// first, as the API asks) and `file`. XMLHttpRequest rather than fetch, for its upload
// progress events: each photo has its own <progress> of bytes sent. At most three at a time.
// 201: stored; 200 with "duplicate": true: the same bytes were uploaded before (shown as such).

import { describe, errorFrom, formatWait, session, signedOut } from './api.js';
import { h, formatBytes, plural, uid } from './ui.js';

export const MAX_PARALLEL = 3;

/**
 * A queue of uploads shown in `list` (an <ol>), with a summary in `summary` (a role=status
 * element). `onUploaded(file, {duplicate})` runs for each photo stored (or found stored).
 */
export class Uploader {
  constructor({ list, summary, onUploaded }) {
    this.list = list;
    this.summary = summary;
    this.onUploaded = onUploaded ?? (() => {});
    this.queue = [];
    this.active = 0;
    this.items = [];
    this.closed = false;
  }

  /** Queues every file of `files` (a FileList or array) for the album `albumId` (or none). */
  add(files, albumId) {
    const added = [];
    for (const file of files) {
      const item = this.#row(file, albumId);
      this.items.push(item);
      added.push(item);
      if (file.type && !file.type.startsWith('image/')) {
        this.#finish(item, 'skipped', 'Skipped: not a photo.');
        continue;
      }
      this.queue.push(item);
    }
    if (added.length) this.#summarise(true);
    this.#pump();
  }

  /** Stops everything in flight (the page is left). */
  close() {
    this.closed = true;
    this.queue = [];
    for (const item of this.items) item.xhr?.abort();
  }

  #row(file, albumId) {
    const nameId = uid('upload-name');
    const item = { file, albumId, state: 'waiting', xhr: null };
    item.progress = h('progress', { max: Math.max(file.size, 1), value: 0, 'aria-labelledby': nameId });
    item.status = h('span', { class: 'upload-status' }, 'Waiting…');
    item.action = h('button', { type: 'button', class: 'small' }, 'Cancel');
    item.action.addEventListener('click', () => this.#act(item));
    item.row = h('li', { class: 'upload', dataset: { state: 'waiting' } },
      h('span', { class: 'upload-name', id: nameId }, file.name || 'photo'),
      item.progress, item.status, item.action);
    this.list.append(item.row);
    return item;
  }

  #act(item) {
    if (item.state === 'waiting') {
      this.queue = this.queue.filter((queued) => queued !== item);
      this.#finish(item, 'cancelled', 'Cancelled.');
    } else if (item.state === 'sending') {
      item.xhr?.abort(); // finishes as cancelled
    } else if (item.state === 'failed') {
      this.#setState(item, 'waiting', 'Waiting…');
      item.progress.value = 0;
      this.queue.push(item);
      this.#summarise(true);
      this.#pump();
    }
  }

  #setState(item, state, text) {
    item.state = state;
    item.row.dataset.state = state;
    item.status.textContent = text;
    const label = { waiting: 'Cancel', sending: 'Cancel', failed: 'Try again' }[state];
    item.action.hidden = !label;
    if (label) item.action.textContent = label;
    item.action.setAttribute('aria-label', `${label ?? ''} ${item.file.name}`.trim());
  }

  #finish(item, state, text) {
    this.#setState(item, state, text);
    if (state === 'done' || state === 'duplicate') item.progress.value = item.progress.max;
    this.#summarise(false);
  }

  #pump() {
    while (!this.closed && this.active < MAX_PARALLEL && this.queue.length) {
      const token = session.token();
      if (!token) { // logged out meanwhile: the app shows the login page
        this.queue = [];
        signedOut();
        return;
      }
      this.#send(this.queue.shift(), token);
    }
  }

  #send(item, token) {
    this.active++;
    this.#setState(item, 'sending', 'Starting…');
    const xhr = new XMLHttpRequest();
    item.xhr = xhr;
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      item.xhr = null;
      this.active--;
      this.#pump();
    };
    xhr.open('POST', '/api/v1/storage/photos/upload');
    xhr.setRequestHeader('Authorization', `Bearer ${token}`);
    xhr.setRequestHeader('Accept', 'application/json');
    xhr.upload.addEventListener('progress', (event) => {
      if (!event.lengthComputable) return;
      // The body is the photo plus a few hundred bytes of form: show the photo's bytes.
      const sent = Math.min(item.file.size, Math.round(event.loaded * item.file.size / Math.max(event.total, 1)));
      item.progress.value = sent;
      item.status.textContent = event.loaded >= event.total
        ? 'Processing…'
        : `${formatBytes(sent)} of ${formatBytes(item.file.size)}`;
    });
    xhr.addEventListener('load', () => {
      release();
      this.#answered(item, xhr);
    });
    xhr.addEventListener('error', () => {
      release();
      this.#finish(item, 'failed', "Failed: Framecast can't be reached. Check your connection.");
    });
    xhr.addEventListener('timeout', () => {
      release();
      this.#finish(item, 'failed', 'Failed: the upload took too long.');
    });
    xhr.addEventListener('abort', () => {
      release();
      if (!this.closed) this.#finish(item, 'cancelled', 'Cancelled.');
    });
    const form = new FormData();
    if (item.albumId) form.append('metadata', JSON.stringify({ album_id: item.albumId }));
    form.append('file', item.file, item.file.name || 'photo');
    xhr.send(form);
  }

  #answered(item, xhr) {
    if (xhr.status === 201 || xhr.status === 200) {
      let file = null;
      try { file = JSON.parse(xhr.responseText); } catch { /* shown as uploaded all the same */ }
      const duplicate = xhr.status === 200 || file?.duplicate === true;
      this.#finish(item, duplicate ? 'duplicate' : 'done',
        duplicate ? 'Already uploaded (duplicate): nothing new stored.' : 'Uploaded.');
      if (file?.file_id) this.onUploaded(file, { duplicate });
      return;
    }
    const err = errorFrom(xhr.status, xhr.responseText, xhr.getResponseHeader('Retry-After'));
    if (xhr.status === 401) {
      this.#finish(item, 'failed', 'Failed: please log in again.');
      signedOut();
      return;
    }
    if (xhr.status === 429 && err.retryAfter > 0) {
      // Wait as the server asks, then send again by itself.
      this.#setState(item, 'waiting', `Server busy: trying again in ${formatWait(err.retryAfter)}…`);
      setTimeout(() => {
        if (this.closed || item.state !== 'waiting') return;
        this.queue.push(item);
        this.#pump();
      }, err.retryAfter * 1000);
      return;
    }
    this.#finish(item, 'failed', `Failed: ${describe(err, {
      403: 'you may only look at this album, not add photos to it.',
      404: 'the album was not found (deleted, or not shared with you).',
    })}`);
  }

  #summarise(announceStart) {
    const count = (state) => this.items.filter((item) => item.state === state).length;
    const busy = count('waiting') + count('sending');
    const done = count('done');
    const duplicates = count('duplicate');
    const failed = count('failed');
    const skipped = count('skipped');
    if (busy) {
      if (announceStart) this.summary.textContent = `Uploading ${plural(busy, 'photo')}…`;
      return;
    }
    const parts = [`${plural(done, 'photo')} uploaded`];
    if (duplicates) parts.push(`${duplicates} already uploaded before`);
    if (failed) parts.push(`${failed} failed`);
    if (skipped) parts.push(`${skipped} skipped (not photos)`);
    this.summary.textContent = `${parts.join(', ')}.`;
  }
}

/**
 * The upload form: a file picker (several photos, camera or gallery on a phone), a drop zone,
 * an optional album choice, and the list of uploads. `albums` are the albums the user may add
 * to (owner or contributor); `fixedAlbum` uploads into that album without asking.
 * Answers {el, uploader}.
 */
export function uploadPanel({ albums = [], fixedAlbum = null, onUploaded }) {
  const list = h('ol', { class: 'uploads', 'aria-label': 'Uploads' });
  const summary = h('p', { class: 'upload-summary', role: 'status', 'aria-live': 'polite' });
  const uploader = new Uploader({ list, summary, onUploaded });
  const input = h('input', { type: 'file', multiple: true, accept: 'image/*', id: uid('photos') });
  let albumSelect = null;
  if (!fixedAlbum) {
    albumSelect = h('select', { id: uid('upload-album') },
      h('option', { value: '' }, 'My photos (no particular album)'),
      albums.map((album) => h('option', { value: album.album_id }, album.name)));
  }
  const albumId = () => fixedAlbum?.album_id ?? albumSelect?.value ?? '';
  input.addEventListener('change', () => {
    if (input.files?.length) uploader.add(Array.from(input.files), albumId());
    input.value = ''; // the same photos may be picked again
  });
  const zone = h('div', { class: 'dropzone' },
    h('label', { for: input.id, class: 'dropzone-label' },
      fixedAlbum ? `Add photos to ${fixedAlbum.name}` : 'Choose photos to upload'),
    input,
    h('p', { class: 'hint' }, 'Or drop photos here. Each one shows its progress; three upload at a time.'));
  zone.addEventListener('dragover', (event) => {
    if (!event.dataTransfer?.types?.includes('Files')) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = 'copy';
    zone.classList.add('dragging');
  });
  zone.addEventListener('dragleave', (event) => {
    if (!zone.contains(event.relatedTarget)) zone.classList.remove('dragging');
  });
  zone.addEventListener('drop', (event) => {
    event.preventDefault();
    zone.classList.remove('dragging');
    const files = Array.from(event.dataTransfer?.files ?? []);
    if (files.length) uploader.add(files, albumId());
  });
  const el = h('section', { class: 'card upload-panel', 'aria-label': 'Upload photos' },
    zone,
    albumSelect && h('div', { class: 'field' }, h('label', { for: albumSelect.id }, 'Into album'), albumSelect),
    summary, list);
  return { el, uploader, albumSelect };
}

/** Keeps a photo dropped outside the drop zone from replacing the page. Answers the undo. */
export function guardPageDrops() {
  const stop = (event) => {
    if (event.dataTransfer?.types?.includes('Files')) event.preventDefault();
  };
  window.addEventListener('dragover', stop);
  window.addEventListener('drop', stop);
  return () => {
    window.removeEventListener('dragover', stop);
    window.removeEventListener('drop', stop);
  };
}
