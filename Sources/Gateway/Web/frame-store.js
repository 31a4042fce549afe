// What the browser frame keeps: its credentials and state in localStorage, the photos it shows in
// Cache Storage (the service worker's storage, which survives a reload without network),
// bounded by a byte budget. When the budget is reached, the oldest photos go first (the end of
// the frame's list, which is newest first), never the one on screen or those queued next.
//
// Cache Storage exists only in a secure context (https://, or http://localhost / 127.0.0.1):
// elsewhere the photos are kept in memory only, and a reload starts empty.

const CREDENTIALS_KEY = 'framecast.frame';
const STATE_KEY = 'framecast.frame.state';
const INDEX_KEY = 'framecast.frame.photos';
const PAIRING_KEY = 'framecast.frame.pairing';
export const PHOTO_CACHE = 'framecast-frame-photos-v1';

/** The default budget: 256 MiB, or less where the browser grants less (half its quota). */
export const DEFAULT_BUDGET = 256 * 1024 * 1024;

function readJSON(key) {
  try {
    const text = localStorage.getItem(key);
    return text ? JSON.parse(text) : null;
  } catch {
    return null;
  }
}

function writeJSON(key, value) {
  try {
    if (value === null || value === undefined) localStorage.removeItem(key);
    else localStorage.setItem(key, JSON.stringify(value));
    return true;
  } catch {
    return false; // storage full or refused: the frame goes on with what it has in memory
  }
}

/** The frame's credentials: {frame_id, frame_token, mqtt: {ws_url, username, password}, width, height, name}. */
export const credentials = {
  get() {
    const c = readJSON(CREDENTIALS_KEY);
    return c?.frame_id && c?.frame_token && c?.mqtt?.ws_url ? c : null;
  },
  set(value) { writeJSON(CREDENTIALS_KEY, value); },
  clear() { writeJSON(CREDENTIALS_KEY, null); },
};

/** A pairing in progress ({pairing_id, code, secret, expires_at}), so a reload shows the same code. */
export const pendingPairing = {
  get() {
    const p = readJSON(PAIRING_KEY);
    return p?.pairing_id && p?.secret && Date.parse(p.expires_at) > Date.now() ? p : null;
  },
  set(value) { writeJSON(PAIRING_KEY, value); },
  clear() { writeJSON(PAIRING_KEY, null); },
};

export const savedState = {
  get() { return readJSON(STATE_KEY); },
  set(state) { writeJSON(STATE_KEY, state); },
  clear() { writeJSON(STATE_KEY, null); },
};

/** The photos: bytes in Cache Storage (or memory), an index {file: {version, etag, bytes, type, storedAt}} in localStorage. */
export class PhotoStore {
  constructor() {
    this.index = readJSON(INDEX_KEY) ?? {};
    this.memory = new Map(); // without Cache Storage: file → Blob
    this.budget = DEFAULT_BUDGET;
    this.cache = null;
  }

  get persistent() { return this.cache !== null; }

  async open() {
    if (globalThis.caches && globalThis.isSecureContext) {
      try {
        this.cache = await caches.open(PHOTO_CACHE);
      } catch {
        this.cache = null;
      }
    }
    if (!this.cache) this.index = {}; // nothing survived in memory
    try {
      const { quota } = (await navigator.storage?.estimate?.()) ?? {};
      if (quota > 0) this.budget = Math.max(8 * 1024 * 1024, Math.min(DEFAULT_BUDGET, Math.floor(quota / 2)));
      // Ask the browser not to clear the photos under storage pressure (it may say no).
      await navigator.storage?.persist?.();
    } catch { /* keep the default budget */ }
    if (this.cache) {
      // Entries the index names but the cache lost (cleared by the browser) are forgotten.
      const keys = new Set((await this.cache.keys()).map((r) => new URL(r.url).pathname));
      for (const file of Object.keys(this.index)) if (!keys.has(this.key(file))) delete this.index[file];
      for (const path of keys) {
        const file = decodeURIComponent(path.split('/').pop());
        if (!this.index[file]) await this.cache.delete(path);
      }
      this.saveIndex();
    }
  }

  key(file) { return `/frame/photos/${encodeURIComponent(file)}`; }

  saveIndex() { writeJSON(INDEX_KEY, this.index); }

  /** file → version held. */
  get versions() { return new Map(Object.entries(this.index).map(([file, e]) => [file, e.version])); }

  entry(file) { return this.index[file] ?? null; }

  get usage() {
    const entries = Object.values(this.index);
    return { files: entries.length, bytes: entries.reduce((sum, e) => sum + (e.bytes || 0), 0) };
  }

  /** The photo's bytes as a Blob; null when it is not held. */
  async read(file) {
    if (!this.index[file]) return null;
    if (!this.cache) return this.memory.get(file) ?? null;
    const response = await this.cache.match(this.key(file));
    return response ? response.blob() : null;
  }

  /**
   * Keeps `blob` as `file`'s `version`, then makes room: returns the files let go. `order` is
   * the frame's list (newest first), `protect` what must stay (on screen, queued).
   */
  async store(file, version, etag, blob, order, protect) {
    const entry = { version, etag: etag ?? null, bytes: blob.size, type: blob.type || 'image/jpeg', storedAt: Date.now() };
    if (this.cache) {
      await this.cache.put(this.key(file), new Response(blob, { headers: { 'Content-Type': entry.type } }));
    } else {
      this.memory.set(file, blob);
    }
    this.index[file] = entry;
    const evicted = await this.makeRoom(order, new Set([...protect, file]));
    this.saveIndex();
    return evicted;
  }

  async makeRoom(order, protect) {
    let { bytes } = this.usage;
    if (bytes <= this.budget) return [];
    const rank = new Map(order.map((file, i) => [file, i]));
    const place = (file) => rank.get(file) ?? Number.MAX_SAFE_INTEGER;
    // Photos no longer wanted first, then the oldest wanted ones.
    const candidates = Object.keys(this.index).filter((f) => !protect.has(f)).sort((a, b) => place(b) - place(a));
    const evicted = [];
    for (const file of candidates) {
      if (bytes <= this.budget) break;
      bytes -= this.index[file].bytes || 0;
      evicted.push(file);
    }
    await this.remove(evicted, false);
    return evicted;
  }

  async remove(files, save = true) {
    for (const file of files) {
      delete this.index[file];
      this.memory.delete(file);
      if (this.cache) await this.cache.delete(this.key(file));
    }
    if (save) this.saveIndex();
  }

  /** Everything goes (the frame is forgotten). */
  async clear() {
    this.index = {};
    this.memory.clear();
    this.saveIndex();
    if (globalThis.caches && globalThis.isSecureContext) {
      try { await caches.delete(PHOTO_CACHE); } catch { /* nothing kept */ }
      this.cache = null;
    }
  }
}
