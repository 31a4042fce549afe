// Framecast's REST API (Sources/Gateway/openapi.yaml) from the browser: JSON in and out, the
// bearer token kept in localStorage, every error turned into an ApiError whose `describe()`
// is a sentence a person can read. Same origin only: the page is served by the gateway.

const SESSION_KEY = 'framecast.session';

/** An answer that is not 2xx, or no answer at all (status 0). */
export class ApiError extends Error {
  constructor(status, code, message, retryAfter = 0) {
    super(message);
    this.name = 'ApiError';
    this.status = status;         // HTTP status; 0 when the gateway could not be reached
    this.code = code;             // the API's error code (bad_request, conflict…), or 'network'
    this.retryAfter = retryAfter; // seconds to wait (Retry-After of a 429 or 503), else 0
  }
}

export const isAbort = (err) => err?.name === 'AbortError';

// --- The session: {token, user_id, email, name} ---

let memorySession = null; // when localStorage refuses (private mode, storage full)

export const session = {
  get() {
    try {
      const text = localStorage.getItem(SESSION_KEY);
      return text ? JSON.parse(text) : memorySession;
    } catch {
      return memorySession;
    }
  },
  set(value) {
    memorySession = value;
    try { localStorage.setItem(SESSION_KEY, JSON.stringify(value)); } catch { /* kept in memory */ }
  },
  clear() {
    memorySession = null;
    try { localStorage.removeItem(SESSION_KEY); } catch { /* nothing kept */ }
  },
  token() { return this.get()?.token ?? null; },
};

/** Tells the app the token no longer works (it shows the login page). */
export function signedOut() {
  session.clear();
  window.dispatchEvent(new CustomEvent('framecast:signedout'));
}

// --- Errors ---

/** Seconds from a Retry-After header (delta-seconds or an HTTP date), at least 1; 0 if none. */
export function retryAfterSeconds(header) {
  if (!header) return 0;
  const seconds = Number.parseInt(header, 10);
  if (Number.isFinite(seconds) && String(seconds) === header.trim()) return Math.max(1, seconds);
  const date = Date.parse(header);
  return Number.isFinite(date) ? Math.max(1, Math.ceil((date - Date.now()) / 1000)) : 0;
}

/** The ApiError of an answer: status, its JSON body's {"error": {code, message}}, Retry-After. */
export function errorFrom(status, bodyText, retryAfterHeader) {
  let code = `http_${status}`;
  let message = '';
  try {
    const body = JSON.parse(bodyText);
    if (body?.error) {
      code = String(body.error.code ?? code);
      message = String(body.error.message ?? '');
    }
  } catch { /* not JSON: keep the status */ }
  return new ApiError(status, code, message, retryAfterSeconds(retryAfterHeader));
}

export function formatWait(seconds) {
  if (seconds < 60) return `${seconds} second${seconds === 1 ? '' : 's'}`;
  const minutes = Math.ceil(seconds / 60);
  return `${minutes} minute${minutes === 1 ? '' : 's'}`;
}

/** "invalid email or password" → "Invalid email or password." */
export function sentence(text) {
  const t = String(text ?? '').trim();
  if (!t) return '';
  const s = t[0].toUpperCase() + t.slice(1);
  return /[.!?]$/.test(s) ? s : `${s}.`;
}

/**
 * A message for a person. `overrides` maps a status (or an error code) to the sentence to use
 * for it in this place, e.g. {401: 'Wrong e-mail or password.'}.
 */
export function describe(err, overrides = {}) {
  if (!(err instanceof ApiError)) {
    console.error(err);
    return 'Something went wrong. Please try again.';
  }
  const own = overrides[err.code] ?? overrides[err.status];
  if (own) return typeof own === 'function' ? own(err) : own;
  switch (err.status) {
    case 0: return err.message;
    case 401: return 'Your session has ended. Please log in again.';
    case 403: return `You can't do that: ${err.message || 'your role in this album does not allow it'}.`;
    case 404: return 'Not found: it may have been deleted, or it is not shared with you.';
    case 408: return 'The connection was too slow. Please try again.';
    case 413: return sentence(err.message) || 'That is too large.';
    case 415: return 'That is not a photo Framecast can read (JPEG, PNG, WebP, HEIC, AVIF, GIF or TIFF).';
    case 429: return `Too many attempts. Please wait ${formatWait(err.retryAfter || 60)} and try again.`;
    case 503: return 'Framecast is busy right now. Please try again in a moment.';
    default:
      if (err.status >= 500) return 'Something went wrong on the server. Please try again.';
      return sentence(err.message) || `The request failed (${err.status}).`;
  }
}

// --- Requests ---

/**
 * One API call. `auth: false` for sign-up and login; `signal` aborts it. Answers the parsed
 * JSON body (null for 204); throws ApiError. A 401 on an authenticated call ends the session.
 */
export async function request(method, path, { body, auth = true, signal } = {}) {
  const headers = { Accept: 'application/json' };
  if (auth) {
    const token = session.token();
    if (!token) {
      signedOut();
      throw new ApiError(401, 'unauthorized', 'not logged in');
    }
    headers.Authorization = `Bearer ${token}`;
  }
  let payload;
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    payload = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, { method, headers, body: payload, signal, cache: 'no-store', credentials: 'omit' });
  } catch (err) {
    if (isAbort(err)) throw err;
    throw new ApiError(0, 'network', "Framecast can't be reached. Check your connection and try again.");
  }
  const text = response.status === 204 ? '' : await response.text();
  if (!response.ok) {
    const err = errorFrom(response.status, text, response.headers.get('Retry-After'));
    if (auth && response.status === 401) signedOut();
    throw err;
  }
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    throw new ApiError(response.status, 'bad_response', 'the server sent an answer this page cannot read');
  }
}

/** Bytes of a token-protected URL (a version without a capability URL), as a Blob. */
export async function fetchBlob(url, signal) {
  const target = new URL(url, location.href);
  // Same origin only: the token never goes to another host.
  const path = target.pathname + target.search;
  let response;
  try {
    response = await fetch(path, { headers: { Authorization: `Bearer ${session.token()}` }, signal, credentials: 'omit' });
  } catch (err) {
    if (isAbort(err)) throw err;
    throw new ApiError(0, 'network', "Framecast can't be reached.");
  }
  if (!response.ok) throw errorFrom(response.status, await response.text(), response.headers.get('Retry-After'));
  return response.blob();
}

const enc = encodeURIComponent;

function query(params) {
  const q = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== '') q.set(key, String(value));
  }
  const text = q.toString();
  return text ? `?${text}` : '';
}

/** Every operation the app uses, by name. */
export const API = {
  signup: (email, password, name) =>
    request('POST', '/api/v1/auth/signup', { body: { email, password, name }, auth: false }),
  login: (email, password) => request('POST', '/api/v1/auth/login', { body: { email, password }, auth: false }),
  logout: () => request('POST', '/api/v1/auth/logout'),

  files: (pageToken, pageSize = 30, signal) =>
    request('GET', `/api/v1/storage/files${query({ page_size: pageSize, page_token: pageToken })}`, { signal }),
  file: (id, signal) => request('GET', `/api/v1/storage/files/${enc(id)}`, { signal }),
  deleteFile: (id) => request('DELETE', `/api/v1/storage/files/${enc(id)}`),
  photo: (id, signal) => request('GET', `/api/v1/photos/${enc(id)}`, { signal }),

  albums: (pageToken, signal) => request('GET', `/api/v1/albums${query({ page_size: 100, page_token: pageToken })}`, { signal }),
  album: (id, signal) => request('GET', `/api/v1/albums/${enc(id)}`, { signal }),
  createAlbum: (name, description) =>
    request('POST', '/api/v1/albums', { body: description ? { name, description } : { name } }),
  updateAlbum: (id, changes) => request('PATCH', `/api/v1/albums/${enc(id)}`, { body: changes }),
  deleteAlbum: (id) => request('DELETE', `/api/v1/albums/${enc(id)}`),
  members: (id, signal) => request('GET', `/api/v1/albums/${enc(id)}/members`, { signal }),
  addMember: (id, email, role) => request('POST', `/api/v1/albums/${enc(id)}/members`, { body: { email, role } }),
  removeMember: (id, userId) => request('DELETE', `/api/v1/albums/${enc(id)}/members/${enc(userId)}`),
  albumPhotos: (id, pageToken, signal) =>
    request('GET', `/api/v1/albums/${enc(id)}/photos${query({ page_size: 30, page_token: pageToken })}`, { signal }),
  addAlbumPhoto: (id, fileId) => request('POST', `/api/v1/albums/${enc(id)}/photos`, { body: { file_id: fileId } }),
  removeAlbumPhoto: (id, fileId) => request('DELETE', `/api/v1/albums/${enc(id)}/photos/${enc(fileId)}`),

  frames: (signal) => request('GET', '/api/v1/frames', { signal }),
  registerFrame: (frame) => request('POST', '/api/v1/frames', { body: frame }),
  pairFrame: (pairing) => request('POST', '/api/v1/frames/pair', { body: pairing }),
  updateFrame: (id, changes) => request('PATCH', `/api/v1/frames/${enc(id)}`, { body: changes }),
  deleteFrame: (id) => request('DELETE', `/api/v1/frames/${enc(id)}`),
  newCredentials: (id) => request('POST', `/api/v1/frames/${enc(id)}/credentials`),
  setFrameAlbums: (id, albumIds) => request('PUT', `/api/v1/frames/${enc(id)}/albums`, { body: { album_ids: albumIds } }),
  sendCommand: (id, command, args) =>
    request('POST', `/api/v1/frames/${enc(id)}/commands`, { body: args ? { command, args } : { command } }),
  setFrameConfig: (id, config) => request('PUT', `/api/v1/frames/${enc(id)}/config`, { body: config }),
  schedule: (id, signal) => request('GET', `/api/v1/frames/${enc(id)}/schedule`, { signal }),
  setSchedule: (id, entries) => request('PUT', `/api/v1/frames/${enc(id)}/schedule`, { body: { entries } }),
  deleteSchedule: (id) => request('DELETE', `/api/v1/frames/${enc(id)}/schedule`),

  playlists: (pageToken, signal) =>
    request('GET', `/api/v1/playlists${query({ page_size: 100, page_token: pageToken })}`, { signal }),
};

/** Every item of a paged list: `page(token)` answers {[key]: [...], next_page_token}. At most `limit` pages. */
export async function allPages(page, key, limit = 20) {
  const items = [];
  let token;
  for (let i = 0; i < limit; i++) {
    const answer = await page(token);
    items.push(...(answer?.[key] ?? []));
    token = answer?.next_page_token;
    if (!token) break;
  }
  return items;
}

let openAPIText = null;

/**
 * Whether the gateway has the route `path` (e.g. '/api/v1/frames/pair'), by its OpenAPI
 * document: paths are at two spaces there, one a line.
 */
export async function hasRoute(path) {
  if (openAPIText === null) {
    try {
      const response = await fetch('/openapi.yaml', { credentials: 'omit' });
      openAPIText = response.ok ? await response.text() : '';
    } catch {
      return false; // unknown: try again next time
    }
  }
  return openAPIText.includes(`\n  ${path}:\n`);
}
