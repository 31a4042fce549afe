// The browser frame (GET /frame): any tablet or old phone becomes a Framecast frame.
//
// Without credentials it pairs: it asks the gateway for a code (POST /api/v1/frames/pairings
// with its screen, CSS size × devicePixelRatio), shows it in #pairing-code, and polls with its
// secret until the owner typed the code (POST /api/v1/frames/pair); then it gets its frame id,
// frame token and MQTT identity, once, and keeps them in localStorage.
//
// With credentials it is a frame like the Linux agent (Sources/FrameAgent/FrameAgent.swift),
// with the same decisions (frame-core.js): one MQTT client (frame-mqtt.js) over the broker's
// WebSocket listener, client id = user name = frame-{id}, persistent session, last will
// `offline` (retained) on frames/{id}/status, `online` (retained) on every connect, a retained
// heartbeat every 30 s; it subscribes to frames/{id}/sync|command|config and, for the albums of
// its sync, albums/{id}/photo_added|photo_removed|config; it asks for a sync on every connect
// and whenever an album's sequence number shows a missed message; it fetches this screen's
// version (frame:WxH) from the capability URL a notification carries, else through the photo's
// metadata document; it reports `cached` and `displayed`; it obeys commands once per id.
//
// Its own: cross-fade, an optional clock (?clock=1) and caption (?caption=1, or an album's
// show_captions), the sleep window dims the screen to black, Screen Wake Lock (asked again when
// the page becomes visible), full screen on a tap, no cursor, and its size registered again
// (PATCH /api/v1/frames/{id} with its token) when it is rotated or resized, so media renders
// that size. Photos are kept in Cache Storage within a byte budget (frame-store.js) and the page
// by a service worker (frame-sw.js): reloaded without network it shows what it has and
// reconnects by itself. Deleted (its credentials refused) or forgotten, it pairs again.

import { MQTTClient } from './frame-mqtt.js';
import { FrameCore, pickVersion, safeID } from './frame-core.js';
import { credentials, pendingPairing, PhotoStore, savedState } from './frame-store.js';

const $ = (id) => document.getElementById(id);
const query = new URLSearchParams(location.search);
const options = { clock: query.get('clock') === '1', caption: query.get('caption') === '1' };
const encoder = new TextEncoder();
const decoder = new TextDecoder();
const HEARTBEAT_MS = 30_000;
const RESIZE_SETTLE_MS = 1500;
const log = (message, details = {}) => console.info(`framecast frame: ${message}`, details);
const warn = (message, details = {}) => console.warn(`framecast frame: ${message}`, details);

/** Sets what the page is doing on <html data-frame-state> (pairing, connecting, online, offline). */
function setFrameState(value) { document.documentElement.dataset.frameState = value; }

// --- Small helpers ---

const clamp = (n) => Math.min(16_384, Math.max(16, n));

/** The screen in device pixels: what the frame's version must fill exactly. */
export function screenSize() {
  const ratio = window.devicePixelRatio || 1;
  return { width: clamp(Math.round(window.innerWidth * ratio)), height: clamp(Math.round(window.innerHeight * ratio)) };
}

/** A signal loops wait on, with a time limit (the agent's WakeSignal). */
class Wake {
  constructor() { this.fire = null; this.pending = false; }
  signal() {
    if (this.fire) this.fire(); else this.pending = true;
  }
  wait(ms) {
    if (this.pending) {
      this.pending = false;
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const timer = setTimeout(() => { this.fire = null; resolve(); }, Math.max(0, ms));
      this.fire = () => { clearTimeout(timer); this.fire = null; resolve(); };
    });
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Back-off with jitter: base × 2^(attempt-1), capped, ×[0.5, 1.5). */
const backoff = (attempt, base = 500, max = 30_000) => Math.min(base * 2 ** Math.min(attempt - 1, 20), max) * (0.5 + Math.random());

/** An HTTP failure: `transient` (network, 5xx, 408, 429) or not; `status` 0 without an answer. */
class HTTPError extends Error {
  constructor(status, message, transient) {
    super(message);
    this.name = 'HTTPError';
    this.status = status;
    this.transient = transient;
  }
}

const isTransientStatus = (status) => status === 0 || status === 408 || status === 429 || status >= 500;

async function http(path, { method = 'GET', token, body, headers = {}, etag, timeout = 30_000 } = {}) {
  const all = { ...headers };
  if (token) all.Authorization = `Bearer ${token}`;
  if (etag) all['If-None-Match'] = etag;
  if (body !== undefined) all['Content-Type'] = 'application/json';
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), timeout);
  let response;
  try {
    response = await fetch(path, {
      method, headers: all, body: body === undefined ? undefined : JSON.stringify(body), signal: controller.signal,
      cache: 'no-store', credentials: 'omit',
    });
  } catch (err) {
    throw new HTTPError(0, err?.name === 'AbortError' ? 'the request timed out' : "Framecast can't be reached", true);
  } finally {
    clearTimeout(timer);
  }
  if (response.ok || response.status === 304) return response;
  let message = `HTTP ${response.status}`;
  try {
    message = (await response.json())?.error?.message || message;
  } catch { /* not JSON */ }
  throw new HTTPError(response.status, message, isTransientStatus(response.status));
}

async function json(path, init) {
  const response = await http(path, init);
  return response.status === 204 ? null : response.json();
}

/**
 * A URL the page may fetch: a capability URL (…/c/{kid}/{exp}/{sig}/{file}/{name}) is fetched
 * from this page's own origin (the gateway serves every capability path, and the page's CSP
 * allows only its origin), an API path as it is; anything else is refused.
 */
export function pagePath(url) {
  let target;
  try {
    target = new URL(url, location.href);
  } catch {
    return null;
  }
  const segments = target.pathname.split('/');
  if (segments.length >= 7 && segments[segments.length - 6] === 'c' && !target.search
      && !segments.slice(-6).some((s) => s === '' || s === '.' || s === '..')) {
    return { path: `/${segments.slice(-6).join('/')}`, capability: true };
  }
  if (target.origin === location.origin && target.pathname.startsWith('/api/v1/') && !target.pathname.includes('/../')) {
    return { path: target.pathname + target.search, capability: false };
  }
  return null;
}

// --- Pairing ---

async function pair() {
  setFrameState('pairing');
  $('screen').hidden = true;
  $('pairing').hidden = false;
  document.body.classList.remove('display');
  const code = $('pairing-code');
  const status = $('pairing-status');
  const expiry = $('pairing-expiry');
  let attempt = 0;
  for (;;) {
    let pairing = pendingPairing.get();
    if (!pairing) {
      code.textContent = '…';
      try {
        pairing = await json('/api/v1/frames/pairings', { method: 'POST', body: screenSize() });
        pendingPairing.set(pairing);
        attempt = 0;
      } catch (err) {
        attempt += 1;
        status.textContent = err.status === 503 && err.message.includes('WebSocket')
          ? 'This Framecast server is not set up for browser frames yet (its MQTT WebSocket URL is missing).'
          : `Can't get a pairing code (${err.message}). Trying again…`;
        await sleep(backoff(attempt, 2000, 60_000));
        continue;
      }
    }
    code.textContent = pairing.code;
    status.textContent = '';
    const expires = Date.parse(pairing.expires_at);
    const pollMs = Math.max(1, Number(pairing.poll_seconds) || 2) * 1000;
    let failures = 0;
    while (Date.now() < expires) {
      const left = Math.max(0, Math.round((expires - Date.now()) / 60_000));
      expiry.textContent = left >= 1 ? `The code changes in ${left} minute${left === 1 ? '' : 's'}.` : 'The code changes in less than a minute.';
      let answer;
      try {
        answer = await json(`/api/v1/frames/pairings/${encodeURIComponent(pairing.pairing_id)}`, {
          headers: { 'X-Pairing-Secret': pairing.secret },
        });
        failures = 0;
        status.textContent = '';
      } catch (err) {
        if (err.status === 404) break; // expired or unknown: a new code
        failures += 1;
        status.textContent = "Can't reach Framecast right now. Trying again…";
        await sleep(backoff(failures, pollMs, 30_000));
        continue;
      }
      if (answer?.status === 'paired' && answer.frame_id && answer.frame_token && answer.mqtt?.ws_url) {
        pendingPairing.clear();
        const frame = answer.frame ?? {};
        const paired = {
          frame_id: answer.frame_id, frame_token: answer.frame_token, name: frame.name ?? '',
          mqtt: { ws_url: answer.mqtt.ws_url, username: answer.mqtt.username, password: answer.mqtt.password },
          width: frame.width ?? screenSize().width, height: frame.height ?? screenSize().height,
        };
        credentials.set(paired);
        log('paired', { 'frame.id': paired.frame_id });
        return paired;
      }
      await sleep(pollMs);
    }
    pendingPairing.clear();
  }
}

// --- The frame ---

class BrowserFrame {
  constructor(creds) {
    this.creds = creds;
    this.id = creds.frame_id;
    this.core = new FrameCore({ width: creds.width, height: creds.height });
    this.store = new PhotoStore();
    this.slideshowWake = new Wake();
    this.catchUpWake = new Wake();
    this.unsent = new Map();
    this.subscribed = new Set();
    this.reconciling = Promise.resolve();
    this.inbox = Promise.resolve();
    this.started = performance.now();
    this.gatewayReachable = true;
    this.stopped = false;
    this.front = 0;
    this.layers = [$('layer-a'), $('layer-b')];
    this.urls = [null, null];
    this.lastCredentialCheck = 0;
    this.resizeTimer = 0;
    this.resizeFailed = false;
    this.topics = {
      sync: `frames/${this.id}/sync`, command: `frames/${this.id}/command`, config: `frames/${this.id}/config`,
      status: `frames/${this.id}/status`, heartbeat: `frames/${this.id}/heartbeat`,
    };
  }

  async run() {
    setFrameState('connecting');
    $('pairing').hidden = true;
    $('screen').hidden = false;
    document.body.classList.add('display');
    $('frame-name').textContent = this.creds.name ? `Framecast frame “${this.creds.name}”` : 'Framecast frame';
    await this.store.open();
    this.core.restore(savedState.get(), this.store.versions);
    log('starting', { 'frame.id': this.id, 'frame.screen': `${this.core.width}x${this.core.height}`,
      'cache.files': this.store.usage.files, 'cache.persistent': this.store.persistent });
    this.updateConnection();
    this.mqtt = new MQTTClient({
      url: this.creds.mqtt.ws_url, clientId: this.creds.mqtt.username, username: this.creds.mqtt.username,
      password: this.creds.mqtt.password, keepAlive: 15, cleanSession: false,
      will: { topic: this.topics.status, payload: JSON.stringify({ status: 'offline', v: 1 }), qos: 1, retain: true },
    });
    this.mqtt.addEventListener('connect', (e) => this.connected(e.detail.sessionPresent));
    this.mqtt.addEventListener('close', (e) => {
      setFrameState('offline');
      this.updateConnection();
      if (!this.stopped) warn('lost the MQTT broker; reconnecting', { error: e.detail.reason });
    });
    this.mqtt.addEventListener('refused', (e) => {
      warn('the broker refused the frame', { 'mqtt.reason': e.detail.reason });
      if (e.detail.code === 4 || e.detail.code === 5) this.checkCredentials();
    });
    // One message at a time, in the order they came, as the agent handles them.
    this.mqtt.addEventListener('message', (e) => {
      this.inbox = this.inbox.then(() => this.handle(e.detail)).catch((err) => warn('handling a message failed', { error: String(err) }));
    });
    this.mqtt.start();
    this.watchScreen();
    this.heartbeatTimer = setInterval(() => {
      this.publishHeartbeat();
      if (this.resizeFailed) this.registerSize();
    }, HEARTBEAT_MS);
    this.clockTimer = setInterval(() => this.updateClock(), 15_000);
    this.updateClock();
    await Promise.all([this.slideshowLoop(), this.catchUpLoop()]);
  }

  /** Stops everything; `offline` first, as the agent does on shutdown (the will covers a crash). */
  async stop() {
    this.stopped = true;
    clearInterval(this.heartbeatTimer);
    clearInterval(this.clockTimer);
    clearTimeout(this.resizeTimer);
    this.slideshowWake.signal();
    this.catchUpWake.signal();
    if (this.mqtt?.connected) {
      await Promise.race([this.mqtt.publish(this.topics.status, JSON.stringify({ status: 'offline', v: 1 }), { qos: 1, retain: true }),
        sleep(2000)]).catch(() => {});
    }
    this.mqtt?.stop();
  }

  saveState() { savedState.set(this.core.toJSON()); }

  // --- MQTT ---

  async connected(sessionPresent) {
    log('connected to the MQTT broker', { 'mqtt.session_present': sessionPresent });
    setFrameState('online');
    this.updateConnection();
    // A broker without our session has none of our subscriptions.
    if (!sessionPresent) this.subscribed.clear();
    try {
      await this.mqtt.publish(this.topics.status, JSON.stringify({ status: 'online', v: 1 }), { qos: 1, retain: true });
    } catch (err) {
      warn('announcing online failed', { error: String(err) });
    }
    await this.updateSubscriptions();
    // Whatever happened while away, a fresh sync says where things stand.
    this.requestSync('connected');
    this.flushReports();
    this.publishHeartbeat();
    this.catchUpWake.signal();
  }

  /** Subscribes to the frame's topics and its albums', unsubscribes from the rest (one at a time). */
  updateSubscriptions() {
    this.reconciling = this.reconciling.then(() => this.reconcile()).catch((err) => warn('updating subscriptions failed', { error: String(err) }));
    return this.reconciling;
  }

  async reconcile() {
    if (!this.mqtt.connected) return;
    const wanted = [this.topics.sync, this.topics.command, this.topics.config];
    for (const album of this.core.albumIDs) wanted.push(`albums/${album}/photo_added`, `albums/${album}/photo_removed`, `albums/${album}/config`);
    const missing = wanted.filter((t) => !this.subscribed.has(t));
    const extra = [...this.subscribed].filter((t) => !wanted.includes(t));
    if (missing.length) {
      const granted = await this.mqtt.subscribe(missing.map((t) => [t, 1]));
      missing.forEach((topic, i) => {
        if (granted[i] !== null && granted[i] !== undefined) this.subscribed.add(topic);
        else warn('a subscription was refused', { 'mqtt.topic': topic });
      });
    }
    if (extra.length) {
      await this.mqtt.unsubscribe(extra.sort());
      for (const t of extra) this.subscribed.delete(t);
    }
  }

  async handle({ topic, payload }) {
    if (!payload.length) return; // a cleared retained message
    let message;
    try {
      message = JSON.parse(decoder.decode(payload));
      if (!message || typeof message !== 'object') throw new Error('not a JSON object');
    } catch (err) {
      warn('malformed message dropped', { 'mqtt.topic': topic.slice(0, 200), error: String(err) });
      return;
    }
    if (topic === this.topics.sync) return this.handleSync(message);
    if (topic === this.topics.command) return this.handleCommand(message);
    if (topic === this.topics.config) {
      this.core.configure(message);
      this.saveState();
      this.updateClock(); // its time zone
      this.slideshowWake.signal();
      log('frame config applied', { 'slideshow.interval_s': message.interval_seconds, 'slideshow.shuffle': message.shuffle });
      return;
    }
    const parts = topic.split('/');
    if (parts.length !== 3 || parts[0] !== 'albums' || !safeID(parts[1])) return;
    const [, album, leaf] = parts;
    if (!this.core.shows(album)) return;
    if (leaf === 'photo_added') return this.handlePhotoAdded(message, album);
    if (leaf === 'photo_removed') return this.handlePhotoRemoved(message, album);
    if (leaf === 'config') {
      this.core.albumConfig(album, message);
      this.saveState();
      this.updateCaption();
    }
  }

  async handleSync(sync) {
    if (String(sync.frame_id ?? '').toLowerCase() !== this.id.toLowerCase()) {
      warn('a sync for another frame was refused');
      return;
    }
    const outcome = this.core.applySync(sync);
    if (!outcome) return;
    log('sync applied', { 'sync.seq': sync.seq, 'sync.photos': sync.photos?.length ?? 0, 'cache.dropped': outcome.drop.length,
      'sync.behind_albums': outcome.behind.length });
    await this.store.remove(outcome.drop);
    this.saveState();
    await this.updateSubscriptions();
    this.slideshowWake.signal();
    this.catchUpWake.signal();
    if (outcome.behind.length) this.requestSync('the sync is older than notifications already received');
  }

  /** The message names this album and a safe file id; its number's place in the album's order (null: dropped). */
  admit(kind, message, album) {
    if (message.album_id !== album || !safeID(message.file_id)) {
      warn(`${kind} with an unsafe file id or another album refused`);
      return null;
    }
    const order = this.core.observe(album, message.seq);
    if (order === 'implausible') {
      warn(`${kind} with an implausible sequence number dropped; asking for a sync`, { 'album.seq': message.seq });
      this.requestSync('an implausible album sequence number');
      return null;
    }
    return order;
  }

  async handlePhotoAdded(message, album) {
    const order = this.admit('photo_added', message, album);
    if (order === null) return;
    const file = message.file_id;
    let missed = 0;
    if (order === 'seen') {
      if (this.core.holds(file, album)) {
        this.core.remember(file, message.versions);
        if (this.core.retryIfMissing(file)) this.catchUpWake.signal();
      } else {
        this.requestSync('an old photo_added');
      }
      return;
    }
    if (order === 'unnumbered' && !this.core.firstTime(`added:${album}/${file}`)) return;
    if (typeof order === 'object') missed = order.gap;
    log('photo added', { 'file.id': file, 'album.id': album, 'album.seq': message.seq ?? '-' });
    this.core.photoAdded(file, album);
    this.core.remember(file, message.versions);
    this.core.noteMeta(message);
    this.saveState();
    // The fast path: fetch now (straight from the notification's URL); the catch-up loop
    // retries a failure and reports the photo `cached`.
    await this.fetchPhoto(file, true);
    this.catchUpWake.signal();
    if (missed > 0) this.requestSync('a gap in the album\'s sequence numbers');
  }

  async handlePhotoRemoved(message, album) {
    const order = this.admit('photo_removed', message, album);
    if (order === null) return;
    const file = message.file_id;
    if (order === 'seen') {
      if (this.core.holds(file, album)) this.requestSync('an old photo_removed');
      return;
    }
    if (this.core.photoRemoved(file, album)) {
      await this.store.remove([file]);
      log('photo removed', { 'file.id': file, 'album.id': album });
    }
    this.saveState();
    this.slideshowWake.signal();
    if (typeof order === 'object' && order.gap > 0) this.requestSync('a gap in the album\'s sequence numbers');
  }

  handleCommand(command) {
    const outcome = this.core.command(command);
    if (outcome === 'done') {
      log('command applied', { 'command.id': command.id, command: command.command });
      this.saveState();
      if (command.command === 'reload') this.catchUpWake.signal();
      this.slideshowWake.signal();
    } else if (outcome?.refused) {
      warn('command refused', { 'command.id': String(command.id).slice(0, 128), reason: outcome.refused });
      this.report({ status: 'error', message: `command ${String(command.id).slice(0, 128)}: ${outcome.refused}` });
    }
  }

  /** `{"status": "sync_request"}` on the status topic (QoS 1, never retained); every connect asks anyway. */
  requestSync(reason) {
    if (!this.mqtt?.connected) return;
    this.mqtt.publish(this.topics.status, JSON.stringify({ status: 'sync_request', v: 1 }), { qos: 1 })
      .catch((err) => warn('asking for a sync failed; the next connect asks again', { error: String(err), 'sync.reason': reason }));
  }

  /** A status report (QoS 1); while disconnected the latest of each kind waits for the broker. */
  report(status) {
    const payload = JSON.stringify({ v: 1, ...status });
    if (this.mqtt?.connected) {
      this.mqtt.publish(this.topics.status, payload, { qos: 1 }).catch(() => this.unsent.set(status.status, status));
      return;
    }
    this.unsent.set(status.status, status);
  }

  flushReports() {
    const reports = [...this.unsent.values()].sort((a, b) => (a.status < b.status ? -1 : 1));
    this.unsent.clear();
    for (const status of reports) this.report(status);
  }

  publishHeartbeat() {
    if (!this.mqtt?.connected) return;
    const usage = this.store.usage;
    const heartbeat = {
      v: 1, at: Date.now(), uptime_seconds: Math.round((performance.now() - this.started) / 1000), state: this.core.screenState,
      cache_bytes: usage.bytes, cache_files: usage.files, cache_budget_bytes: this.store.budget, gateway_reachable: this.gatewayReachable,
    };
    if (this.core.displayed) heartbeat.current_file_id = this.core.displayed;
    this.mqtt.publish(this.topics.heartbeat, JSON.stringify(heartbeat), { qos: 0, retain: true }).catch(() => {});
  }

  // --- Credentials refused: is the frame still there? ---

  /** Asks the gateway (at most every 30 s) whether the frame exists; deleted, it pairs again. */
  async checkCredentials() {
    const now = Date.now();
    if (now - this.lastCredentialCheck < 30_000 || this.stopped) return;
    this.lastCredentialCheck = now;
    try {
      await json(`/api/v1/frames/${encodeURIComponent(this.id)}`, { token: this.creds.frame_token });
    } catch (err) {
      if (err.status === 401 || err.status === 404) {
        log('the frame was deleted or its credentials replaced; pairing again');
        await forget(this);
      }
    }
  }

  // --- Fetching ---

  /** Bytes of a version: 'notModified' or {blob, etag}. Throws HTTPError. */
  async download(url, etag, useToken) {
    const target = pagePath(url);
    if (!target) throw new HTTPError(400, 'not a URL this frame fetches', false);
    const response = await http(target.path, { token: target.capability || !useToken ? undefined : this.creds.frame_token, etag });
    if (response.status === 304) return 'notModified';
    return { blob: await response.blob(), etag: response.headers.get('ETag') };
  }

  /** The photo's version for this screen into the cache; 'cached', 'busy', 'failedTransient' or 'failed'. */
  async fetchPhoto(file, showNext) {
    if (!this.core.beginFetch(file)) return 'busy';
    const started = performance.now();
    try {
      const existing = this.store.entry(file);
      const screen = this.core.screenVersion;
      const etagFor = (size) => (existing?.version === size ? existing.etag : null);
      let chosen = null;
      let direct = false;
      const link = this.core.link(file);
      if (link) {
        try {
          chosen = { version: link.size, result: await this.download(link.url, etagFor(link.size), false) };
          direct = true;
        } catch (err) {
          if (err.transient) throw err;
          // Expired, or signed with a key the gateway no longer holds: the document has current URLs.
          this.core.forgetLink(file);
          log('the capability URL was refused; asking the metadata document', { 'file.id': file, error: err.message });
        }
      }
      if (!chosen) {
        const doc = await json(`/api/v1/photos/${encodeURIComponent(file)}`, { token: this.creds.frame_token });
        const version = pickVersion(doc?.versions, this.core.width, this.core.height);
        if (version?.size !== screen) {
          // Not rendered for this screen yet (it was just resized): rendered on request.
          const format = this.core.state.config?.preferred_format === 'webp' ? '&format=webp' : '';
          try {
            chosen = { version: screen, result: await this.download(
              `/api/v1/files/download/${encodeURIComponent(file)}?size=${encodeURIComponent(screen)}${format}`, etagFor(screen), true) };
          } catch (err) {
            if (err.transient) throw err;
          }
        }
        if (!chosen) {
          if (!version) throw new HTTPError(404, 'the photo has no version to show', false);
          chosen = { version: version.size, result: await this.download(version.url, etagFor(version.size), true) };
        }
      }
      if (chosen.result !== 'notModified') {
        const evicted = await this.store.store(file, chosen.version, chosen.result.etag, chosen.result.blob, this.core.wantedOrder,
          this.core.protected);
        if (evicted.length) {
          this.core.evicted(evicted);
          log('cache full: the oldest photos were let go', { 'cache.evicted': evicted.length });
        }
        log('photo downloaded', { 'file.id': file, 'photo.version': chosen.version, 'photo.bytes': chosen.result.blob.size,
          'photo.direct': direct, duration_ms: Math.round(performance.now() - started) });
      }
      this.gatewayReachable = true;
      this.core.fetched(file, chosen.version, showNext);
      this.slideshowWake.signal();
      return 'cached';
    } catch (err) {
      if (err.transient) {
        this.gatewayReachable = false;
        this.core.fetchFailed(file, true);
        warn('fetching a photo failed; will retry', { 'file.id': file, error: err.message });
        return 'failedTransient';
      }
      this.core.fetchFailed(file, false);
      if (err.status === 401) this.checkCredentials();
      warn('fetching a photo failed; skipped until the next sync', { 'file.id': file, error: err.message });
      this.report({ status: 'error', file_id: file, message: `cannot fetch the photo: ${err.status || ''} ${err.message}`.slice(0, 300) });
      return 'failed';
    }
  }

  /** Fetches what is wanted and missing; after a transient failure waits with back-off (woken on reconnect). */
  async catchUpLoop() {
    let attempt = 0;
    while (!this.stopped) {
      let failedTransient = false;
      for (const file of this.core.duePending()) {
        if (this.stopped) return;
        if (await this.fetchPhoto(file, false) === 'failedTransient') {
          failedTransient = true;
          break;
        }
      }
      const files = this.core.takeCachedReport();
      if (files?.length) this.report({ status: 'cached', file_ids: files.slice(0, 10_000) });
      this.saveState();
      this.updateConnection();
      attempt = failedTransient ? attempt + 1 : 0;
      await this.catchUpWake.wait(failedTransient ? backoff(attempt) : 300_000);
    }
  }

  // --- The screen ---

  async slideshowLoop() {
    while (!this.stopped) {
      const { step, until } = this.core.step(performance.now(), new Date());
      if (step.kind === 'show') {
        await this.show(step.file);
      } else if (step.kind === 'blank') {
        if (this.core.blanked) {
          $('sleep').classList.add('on');
          log('screen off (sleep)');
        } else {
          $('sleep').classList.remove('on');
          this.clearScreen();
        }
        this.publishHeartbeat();
      } else {
        if (!this.core.blanked) $('sleep').classList.remove('on');
        this.updateEmpty();
        await this.slideshowWake.wait(Math.max(10, until - performance.now()));
      }
    }
  }

  async show(file) {
    const blob = await this.store.read(file);
    const next = 1 - this.front;
    const layer = this.layers[next];
    // The back layer's photo (faded out before) goes.
    if (this.urls[next]) {
      URL.revokeObjectURL(this.urls[next]);
      this.urls[next] = null;
    }
    const url = blob ? URL.createObjectURL(blob) : null;
    if (url) {
      layer.src = url;
      try {
        await layer.decode();
      } catch {
        URL.revokeObjectURL(url);
        layer.removeAttribute('src');
        warn('a kept photo cannot be shown; fetching it again', { 'file.id': file });
        this.core.unreadable(file);
        await this.store.remove([file]);
        this.catchUpWake.signal();
        return;
      }
    } else {
      this.core.unreadable(file);
      this.catchUpWake.signal();
      return;
    }
    const screen = $('screen');
    screen.classList.toggle('cut', this.core.transition === 'none');
    $('sleep').classList.remove('on');
    layer.classList.add('visible');
    this.layers[this.front].classList.remove('visible');
    this.urls[next] = url;
    this.front = next;
    screen.dataset.fileId = file;
    screen.dataset.version = this.store.entry(file)?.version ?? '';
    screen.dataset.shownAt = String(Date.now());
    this.core.shown(file);
    this.updateEmpty();
    this.updateCaption();
    log('photo displayed', { 'file.id': file });
    this.report({ status: 'displayed', file_id: file });
    // The retained heartbeat says what is on screen now.
    this.publishHeartbeat();
  }

  clearScreen() {
    for (let i = 0; i < 2; i++) this.layers[i].classList.remove('visible');
    delete $('screen').dataset.fileId;
    delete $('screen').dataset.version;
    this.updateEmpty();
    this.updateCaption();
  }

  updateEmpty() {
    $('empty').hidden = !(this.core.displayed === null && !this.core.blanked && this.core.state.slideshow.photos.length === 0);
  }

  updateCaption() {
    const caption = $('caption');
    const file = this.core.displayed;
    const meta = file ? this.core.metaOf(file) : null;
    if (!file || !(options.caption || this.core.showCaptions) || !meta) {
      caption.hidden = true;
      return;
    }
    const taken = meta.takenAt ? new Intl.DateTimeFormat(undefined, { dateStyle: 'long' }).format(new Date(meta.takenAt)) : '';
    caption.textContent = taken || meta.fileName.replace(/\.[A-Za-z0-9]{1,5}$/, '');
    caption.hidden = !caption.textContent;
  }

  updateClock() {
    const clock = $('clock');
    clock.hidden = !options.clock;
    if (!options.clock) return;
    const timeZone = this.core.state.config?.time_zone || undefined;
    try {
      clock.textContent = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit', timeZone }).format(new Date());
    } catch {
      clock.textContent = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' }).format(new Date());
    }
  }

  updateConnection() {
    const el = $('connection');
    const { files } = this.store.usage;
    if (this.mqtt?.connected) el.textContent = `Connected. ${files} photo${files === 1 ? '' : 's'} kept on this screen.`;
    else el.textContent = `Not connected: showing the ${files} photo${files === 1 ? '' : 's'} kept on this screen; reconnecting by itself.`;
  }

  // --- Rotation and resizing ---

  watchScreen() {
    const changed = () => {
      clearTimeout(this.resizeTimer);
      this.resizeTimer = setTimeout(() => this.registerSize(), RESIZE_SETTLE_MS);
    };
    window.addEventListener('resize', changed);
    window.screen.orientation?.addEventListener?.('change', changed);
    this.registerSize(); // the screen may differ from the one registered (another tablet, turned while closed)
  }

  /** Registers the screen's size with the gateway when it differs; then fetches this size's versions. */
  async registerSize() {
    const { width, height } = screenSize();
    if (width === this.creds.width && height === this.creds.height) {
      this.resizeFailed = false;
      return;
    }
    try {
      const frame = await json(`/api/v1/frames/${encodeURIComponent(this.id)}`, {
        method: 'PATCH', token: this.creds.frame_token,
        body: { width, height, orientation: height > width ? 'portrait' : 'landscape' },
      });
      this.resizeFailed = false;
      this.creds = { ...this.creds, width: frame?.width ?? width, height: frame?.height ?? height };
      credentials.set(this.creds);
      log('screen size registered', { 'frame.screen': `${this.creds.width}x${this.creds.height}` });
      if (this.core.resize(this.creds.width, this.creds.height)) {
        this.saveState();
        this.slideshowWake.signal();
        this.catchUpWake.signal();
        // The sync brings this size's capability URLs as media renders them.
        this.requestSync('the screen was resized');
      }
    } catch (err) {
      if (err.status === 401 || err.status === 404) {
        this.checkCredentials();
        return;
      }
      this.resizeFailed = true; // tried again with the next heartbeat
      warn('registering the screen size failed; will retry', { error: err.message });
    }
  }
}

// --- The page ---

let current = null;

/** "Forget this frame", or the frame was deleted: everything kept goes and the page pairs again. */
async function forget(frame) {
  await frame?.stop();
  await frame?.store.clear();
  savedState.clear();
  credentials.clear();
  pendingPairing.clear();
  location.reload();
}

function keepAwake() {
  if (!('wakeLock' in navigator) || document.visibilityState !== 'visible') return;
  navigator.wakeLock.request('screen').catch((err) => warn('the screen wake lock was refused', { error: String(err) }));
}

function setUpPage() {
  // The wake lock is let go whenever the page is hidden: asked again when it is shown.
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState !== 'visible') return;
    keepAwake();
    current?.mqtt?.retryNow();
    current?.catchUpWake.signal();
  });
  window.addEventListener('online', () => {
    current?.mqtt?.retryNow();
    current?.catchUpWake.signal();
  });
  keepAwake();

  // A tap: full screen (a user gesture is needed), and the controls for a few seconds.
  let hideTimer = 0;
  document.addEventListener('click', (event) => {
    if (!document.fullscreenElement && document.documentElement.requestFullscreen) {
      document.documentElement.requestFullscreen({ navigationUI: 'hide' }).catch(() => {});
    }
    keepAwake();
    if ($('screen').hidden) return;
    const controls = $('controls');
    controls.hidden = false;
    document.body.classList.add('controls-shown');
    clearTimeout(hideTimer);
    hideTimer = setTimeout(() => {
      controls.hidden = true;
      document.body.classList.remove('controls-shown');
      $('forget').textContent = 'Forget this frame';
      delete $('forget').dataset.armed;
    }, 8000);
    event.stopPropagation();
  });
  // Two taps, so a stray one does not unpair the frame.
  $('forget').addEventListener('click', (event) => {
    event.stopPropagation();
    const button = event.currentTarget;
    if (button.dataset.armed) {
      forget(current);
      return;
    }
    button.dataset.armed = '1';
    button.textContent = 'Tap again to forget this frame';
  });

  if ('serviceWorker' in navigator && window.isSecureContext) {
    navigator.serviceWorker.register('/frame-sw.js', { scope: '/frame' })
      .catch((err) => warn('the offline copy of this page could not be set up', { error: String(err) }));
  }
}

async function main() {
  setUpPage();
  let creds = credentials.get();
  if (!creds) creds = await pair();
  current = new BrowserFrame(creds);
  window.framecastFrame = current; // for people debugging a frame from the browser's console
  await current.run();
}

main().catch((err) => {
  console.error('framecast frame: stopped', err);
  setTimeout(() => location.reload(), 30_000);
});
