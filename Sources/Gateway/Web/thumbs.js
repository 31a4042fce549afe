// Photo images: a photo's versions come from its metadata document (GET /api/v1/photos/{id});
// each version's `url` is a capability URL that an <img> loads without a token. Versions are
// rendered after the upload (a second or two, longer for big photos), so a photo without its
// version yet shows "Preparing…" and is asked for again a little later.

import { API, fetchBlob, isAbort } from './api.js';
import { h } from './ui.js';

const documents = new Map(); // file_id → Promise of its metadata document

/** The photo's metadata document (cached; `fresh` asks again). */
export function photoDocument(fileId, { fresh = false } = {}) {
  if (!fresh && documents.has(fileId)) return documents.get(fileId);
  const answer = API.photo(fileId);
  documents.set(fileId, answer);
  answer.catch(() => { if (documents.get(fileId) === answer) documents.delete(fileId); });
  return answer;
}

export function forgetPhoto(fileId) { documents.delete(fileId); }

/** The version of that size (JPEG first), or null. */
export function pickVersion(doc, size) {
  const versions = (doc?.versions ?? []).filter((v) => v.size === size);
  return versions.find((v) => v.format === 'jpeg') ?? versions[0] ?? null;
}

/** A token download URL (no capability URL for it): the bytes must be fetched with the token. */
const needsToken = (url) => new URL(url, location.href).pathname.startsWith('/api/');

/**
 * Sets `img.src` to the version: the capability URL itself; if that fails to load from
 * another host than the page's (a public URL the browser cannot reach), the same path on the
 * page's own host; a token-only URL is fetched and shown as a blob. Resolves when the image
 * has loaded, rejects when it cannot.
 */
export function showVersion(img, version, signal) {
  return new Promise((resolve, reject) => {
    let triedOwnHost = false;
    let blobURL = null;
    const done = () => {
      img.removeEventListener('load', loaded);
      img.removeEventListener('error', failed);
      if (blobURL) URL.revokeObjectURL(blobURL);
    };
    const loaded = () => { done(); resolve(); };
    const failed = () => {
      const url = new URL(img.src, location.href);
      if (!triedOwnHost && !blobURL && url.host !== location.host) {
        triedOwnHost = true;
        img.src = url.pathname + url.search;
        return;
      }
      done();
      reject(new Error('image did not load'));
    };
    img.addEventListener('load', loaded);
    img.addEventListener('error', failed);
    if (needsToken(version.url)) {
      fetchBlob(version.url, signal).then((blob) => {
        blobURL = URL.createObjectURL(blob);
        img.src = blobURL;
      }, (err) => { done(); reject(err); });
    } else {
      img.src = version.url;
    }
  });
}

// One observer for every thumbnail: a photo's document is asked for when its cell comes near
// the viewport (the grid may hold hundreds).
const pending = new WeakMap();
const observer = 'IntersectionObserver' in window
  ? new IntersectionObserver((entries) => {
    for (const entry of entries) {
      if (!entry.isIntersecting) continue;
      observer.unobserve(entry.target);
      const start = pending.get(entry.target);
      pending.delete(entry.target);
      start?.();
    }
  }, { rootMargin: '400px 0px' })
  : null;

function whenNear(el, start) {
  if (!observer) { queueMicrotask(start); return; }
  pending.set(el, start);
  observer.observe(el);
}

// Seconds between tries while a version is not rendered yet: about 5 minutes in all.
const RETRY_SECONDS = [1, 1, 2, 2, 3, 5, 5, 8, 10, 10, 15, 15, 20, 30, 30, 30, 30, 30, 30, 30];

/**
 * A photo's image of `size` (thumbnail or hd) in a box, loaded lazily (when near the
 * viewport, `loading=lazy` too), with "Preparing…" until the version exists. `alt` describes
 * the photo. The box gets data-state pending | ready | failed.
 */
export function photoImage(fileId, { alt, size = 'thumbnail', className = 'thumb', eager = false } = {}) {
  const img = h('img', { alt, decoding: 'async', loading: eager ? 'eager' : 'lazy' });
  const note = h('span', { class: 'thumb-note' }, 'Preparing…');
  const box = h('span', { class: className, dataset: { state: 'pending', fileId } }, img, note);
  let attempt = 0;
  const load = async () => {
    if (attempt > 0 && !box.isConnected) return; // left the page
    try {
      const doc = await photoDocument(fileId, { fresh: attempt > 0 });
      const version = pickVersion(doc, size) ?? (size === 'hd' ? pickVersion(doc, 'thumbnail') : null);
      if (!version) throw new Error('no version yet');
      if (version.width && version.height) {
        img.width = version.width;
        img.height = version.height;
      }
      await showVersion(img, version);
      box.dataset.state = 'ready';
      note.remove();
    } catch (err) {
      if (isAbort(err)) return;
      if (err?.status === 401) return; // signed out: the app shows the login page
      if (attempt >= RETRY_SECONDS.length) {
        box.dataset.state = 'failed';
        note.textContent = 'No preview';
        return;
      }
      setTimeout(load, RETRY_SECONDS[attempt++] * 1000);
    }
  };
  if (eager) queueMicrotask(load); else whenNear(box, load);
  return box;
}
