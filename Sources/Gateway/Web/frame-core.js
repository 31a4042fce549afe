// The browser frame's state and decisions, as the Linux agent makes them (Sources/FrameAgent:
// AgentCore.swift, Slideshow.swift, Choices.swift), with no I/O: what to hold, what to show
// next, what was already done. frame.js asks, then acts (network, cache, screen).
//
// The rules are the agent's, so both kinds of frame behave alike:
// * a sync is applied once per sequence number (a number not above the last one, or an
//   implausible jump, is ignored); its `album_seqs` are the last number heard per album; an
//   album whose number in the sync is below one a notification already brought keeps its
//   photos and the frame asks for a newer sync (once);
// * photo_added / photo_removed are judged by the album's sequence number: the next one is acted
//   on; a gap is acted on and a sync asked for; one at or below the last is a repeat; an
//   implausible one is dropped (and a sync asked for); without a number, once per (album, file);
// * a command is applied once per id;
// * the version shown is the one made for this screen (`frame:{W}x{H}`, in the preferred format,
//   else JPEG) straight from the notification's capability URL; else the metadata document's
//   best fit.

export const MAX_SEQ_JUMP = 2 ** 32;
export const MAX_SEQ = 2 ** 40;

/** A sequence number the album service can have handed out after `last`. */
export function plausible(seq, last) {
  return Number.isSafeInteger(seq) && seq > 0 && seq <= MAX_SEQ && seq - last <= MAX_SEQ_JUMP;
}

/** Ids that name cache entries and topic levels: ASCII letters, digits, - and _, 1…64 of them. */
export function safeID(id) {
  return typeof id === 'string' && /^[A-Za-z0-9_-]{1,64}$/.test(id);
}

/** An id that can be one MQTT topic level. */
export function topicID(id) {
  return typeof id === 'string' && id.length > 0 && new TextEncoder().encode(id).length <= 64
    && !/[/+#\u0000-\u001f\u007f]/.test(id);
}

/** The version made for this screen among a notification's or a sync's versions (DirectVersion). */
export function pickDirect(versions, width, height, preferredFormat) {
  if (!Array.isArray(versions)) return null;
  const screen = versions.filter((v) => v?.size === `frame:${width}x${height}` && v.url);
  const preferred = String(preferredFormat ?? '').toLowerCase();
  if (preferred) {
    const found = screen.find((v) => String(v.format).toLowerCase() === preferred);
    if (found) return found;
  }
  return screen.find((v) => String(v.format).toLowerCase() === 'jpeg') ?? null;
}

/**
 * The version to download from a metadata document (VersionChoice): this screen's, else one of
 * exactly its size, else the smallest covering it, else the largest.
 */
export function pickVersion(versions, width, height) {
  const max = 10_000_000;
  const usable = (versions ?? []).filter((v) => v?.url && v.width >= 1 && v.width <= max && v.height >= 1 && v.height <= max);
  const exact = usable.find((v) => v.size === `frame:${width}x${height}`);
  if (exact) return exact;
  const same = usable.find((v) => v.width === width && v.height === height);
  if (same) return same;
  const area = (v) => v.width * v.height;
  const order = (a, b) => area(a) - area(b) || (a.size < b.size ? -1 : a.size > b.size ? 1 : 0);
  const covering = usable.filter((v) => v.width >= width && v.height >= height).sort(order);
  if (covering.length) return covering[0];
  return usable.sort(order).at(-1) ?? null;
}

/** The ids seen most recently, bounded: acts-once filters (RecentIDs). */
export class RecentIDs {
  constructor(capacity = 512, ids = []) {
    this.capacity = Math.max(1, capacity);
    this.ids = [];
    this.set = new Set();
    for (const id of ids) this.insert(id);
  }

  /** Records `id`; false when it was there already (a repeat: do not act again). */
  insert(id) {
    if (this.set.has(id)) return false;
    this.set.add(id);
    this.ids.push(id);
    if (this.ids.length > this.capacity) this.set.delete(this.ids.shift());
    return true;
  }

  has(id) { return this.set.has(id); }

  remove(id) {
    if (!this.set.delete(id)) return;
    this.ids = this.ids.filter((x) => x !== id);
  }

  toJSON() { return { capacity: this.capacity, ids: this.ids }; }
  static from(json, capacity) { return new RecentIDs(json?.capacity ?? capacity, Array.isArray(json?.ids) ? json.ids : []); }
}

/** The slideshow's order (Slideshow): what is on screen, what comes next, what came before. */
export class Slideshow {
  constructor(json = {}) {
    this.photos = Array.isArray(json.photos) ? json.photos : [];
    this.current = json.current ?? null;
    this.upNext = Array.isArray(json.upNext) ? json.upNext : [];
    this.history = Array.isArray(json.history) ? json.history : [];
    this.shuffle = !!json.shuffle;
  }

  static historyLimit = 100;

  setPhotos(list) {
    const seen = new Set();
    this.photos = list.filter((id) => !seen.has(id) && seen.add(id));
    this.upNext = this.upNext.filter((id) => seen.has(id));
    this.history = this.history.filter((id) => seen.has(id));
    if (this.current !== null && !seen.has(this.current)) this.current = null;
  }

  add(file, showNext) {
    if (!this.photos.includes(file)) this.photos.unshift(file);
    if (showNext) {
      this.upNext = this.upNext.filter((id) => id !== file);
      this.upNext.unshift(file);
    }
  }

  /** Removes a photo everywhere; true if it was on screen (now null). */
  remove(file) {
    this.photos = this.photos.filter((id) => id !== file);
    this.upNext = this.upNext.filter((id) => id !== file);
    this.history = this.history.filter((id) => id !== file);
    if (this.current === file) {
      this.current = null;
      return true;
    }
    return false;
  }

  advance() {
    if (!this.photos.length) {
      this.current = null;
      return null;
    }
    let next;
    if (this.upNext.length) {
      next = this.upNext.shift();
    } else if (this.shuffle && this.photos.length > 1) {
      const others = this.photos.filter((id) => id !== this.current);
      next = others[Math.floor(Math.random() * others.length)];
    } else if (this.current !== null && this.photos.includes(this.current)) {
      next = this.photos[(this.photos.indexOf(this.current) + 1) % this.photos.length];
    } else {
      next = this.photos[0];
    }
    if (this.current !== null && this.current !== next) {
      this.history.push(this.current);
      if (this.history.length > Slideshow.historyLimit) this.history.splice(0, this.history.length - Slideshow.historyLimit);
    }
    this.current = next;
    return next;
  }

  back() {
    const previous = this.history.pop();
    if (previous === undefined) return null;
    if (this.current !== null && this.current !== previous) {
      this.upNext = this.upNext.filter((id) => id !== this.current);
      this.upNext.unshift(this.current);
    }
    this.current = previous;
    return previous;
  }

  toJSON() {
    return { photos: this.photos, current: this.current, upNext: this.upNext, history: this.history, shuffle: this.shuffle };
  }
}

/** "HH:MM" → minutes after midnight; null when it is not that. */
function minutes(text) {
  const m = /^([0-9]{2}):([0-9]{2})$/.exec(String(text ?? ''));
  if (!m) return null;
  const h = Number(m[1]), min = Number(m[2]);
  return h <= 23 && min <= 59 ? h * 60 + min : null;
}

/**
 * The nightly sleep window of a frame config: null without one. An empty time zone is the
 * browser's own (the API documents it as the frame's local time); an unknown one is UTC.
 */
export function sleepWindow(config) {
  const start = minutes(config?.sleep_start), end = minutes(config?.sleep_end);
  if (start === null || end === null || start === end) return null;
  let timeZone = config.time_zone || undefined;
  try {
    new Intl.DateTimeFormat('en-GB', { timeZone });
  } catch {
    timeZone = 'UTC';
  }
  return {
    start, end, timeZone,
    contains(date) {
      const parts = new Intl.DateTimeFormat('en-GB', { timeZone, hour: '2-digit', minute: '2-digit', hourCycle: 'h23' })
        .formatToParts(date);
      const now = Number(parts.find((p) => p.type === 'hour')?.value ?? 0) * 60 + Number(parts.find((p) => p.type === 'minute')?.value ?? 0);
      return start < end ? now >= start && now < end : now >= start || now < end;
    },
  };
}

export const COMMANDS = new Set(['next', 'previous', 'pause', 'resume', 'reload', 'sleep', 'wake', 'set_interval']);

/**
 * The frame's state and decisions (AgentCore). `state` is what survives a reload
 * (localStorage); the rest is rebuilt from it and the photo cache.
 */
export class FrameCore {
  constructor({ defaultInterval = 30_000, width, height }) {
    this.defaultInterval = defaultInterval;
    this.width = width;
    this.height = height;
    this.state = FrameCore.emptyState();
    this.links = new Map();     // file → {size, url, format}: this screen's version (not saved)
    this.askedBehind = new Set();
    this.pending = new Map();   // file → showNext (to fetch)
    this.inFlight = new Set();
    this.cached = new Map();    // file → version size held ("frame:1024x600"…)
    this.displayed = null;
    this.blanked = false;
    this.advanceRequested = false;
    this.renderRequested = false;
    this.nextChangeAt = 0;
    this.needsCachedReport = false;
  }

  static emptyState() {
    return {
      lastSyncSeq: 0, albumIDs: [], albumSeqs: {}, wanted: [], commandIDs: new RecentIDs(256),
      notifications: new RecentIDs(2048), config: null, intervalSeconds: null, paused: false, manualSleep: null,
      slideshow: new Slideshow(), albumConfigs: {}, meta: {},
    };
  }

  /** The saved state (JSON) against what the cache holds (file → version). */
  restore(saved, cached) {
    if (saved && typeof saved === 'object') {
      this.state = {
        ...FrameCore.emptyState(),
        ...saved,
        commandIDs: RecentIDs.from(saved.commandIDs, 256),
        notifications: RecentIDs.from(saved.notifications, 2048),
        slideshow: new Slideshow(saved.slideshow ?? {}),
        wanted: Array.isArray(saved.wanted) ? saved.wanted.filter((w) => safeID(w?.fileID)) : [],
        albumSeqs: saved.albumSeqs && typeof saved.albumSeqs === 'object' ? saved.albumSeqs : {},
        meta: saved.meta && typeof saved.meta === 'object' ? saved.meta : {},
      };
    }
    this.cached = new Map(cached);
    this.pending = new Map();
    this.links = new Map();
    this.askedBehind = new Set();
    for (const w of this.state.wanted) if (!this.cached.has(w.fileID) || this.stale(w.fileID)) this.pending.set(w.fileID, false);
    this.refreshPlaylist();
    this.state.slideshow.shuffle = !!this.state.config?.shuffle;
  }

  toJSON() { return this.state; }

  get albumIDs() { return this.state.albumIDs; }
  get screenVersion() { return `frame:${this.width}x${this.height}`; }

  /** Held, but made for another screen size (the frame was resized): fetched again, still shown meanwhile. */
  stale(file) {
    const version = this.cached.get(file);
    return version !== undefined && version !== this.screenVersion;
  }

  /** The screen changed: every photo is fetched again in its new version (still shown meanwhile). */
  resize(width, height) {
    if (width === this.width && height === this.height) return false;
    this.width = width;
    this.height = height;
    this.links = new Map();
    for (const w of this.state.wanted) if (!this.pending.has(w.fileID)) this.pending.set(w.fileID, false);
    const current = this.state.slideshow.current;
    if (current && this.pending.has(current)) this.pending.set(current, false);
    this.renderRequested = true;
    return true;
  }

  // --- Sync ---

  /** Applies a sync once (null for a repeat or implausible number): {drop, invalidPhotos, behind}. */
  applySync(sync) {
    const seq = Number(sync?.seq);
    if (!(seq > this.state.lastSyncSeq) || !plausible(seq, this.state.lastSyncSeq)) return null;
    const hadSync = this.state.lastSyncSeq > 0;
    const previousWanted = this.state.wanted;
    const previous = new Set(previousWanted.map((w) => w.fileID));
    this.state.lastSyncSeq = seq;
    this.state.albumIDs = (Array.isArray(sync.album_ids) ? sync.album_ids : []).filter((a) => topicID(a) && safeID(a));
    const behind = this.applyAlbumSeqs(sync.album_seqs);
    const order = [];
    const albums = new Map();
    let invalid = 0;
    for (const w of previousWanted) {
      const kept = w.albumIDs.filter((a) => behind.has(a));
      if (!kept.length) continue;
      order.push(w.fileID);
      albums.set(w.fileID, kept);
    }
    for (const photo of Array.isArray(sync.photos) ? sync.photos : []) {
      if (!safeID(photo?.file_id) || !safeID(photo?.album_id)) {
        invalid += 1;
        continue;
      }
      if (behind.has(photo.album_id)) continue;
      if (!albums.has(photo.file_id)) {
        order.push(photo.file_id);
        albums.set(photo.file_id, []);
      }
      if (!albums.get(photo.file_id).includes(photo.album_id)) albums.get(photo.file_id).push(photo.album_id);
      this.remember(photo.file_id, photo.versions);
      this.noteMeta(photo);
    }
    this.state.wanted = order.map((fileID) => ({ fileID, albumIDs: albums.get(fileID) ?? [] }));
    const wanted = new Set(order);
    const drop = [...this.cached.keys()].filter((f) => !wanted.has(f)).sort();
    for (const f of drop) this.cached.delete(f);
    for (const f of [...this.pending.keys()]) if (!wanted.has(f)) this.pending.delete(f);
    for (const f of [...this.links.keys()]) if (!wanted.has(f)) this.links.delete(f);
    this.state.meta = Object.fromEntries(Object.entries(this.state.meta ?? {}).filter(([f]) => wanted.has(f)));
    for (const f of order) if ((!this.cached.has(f) || this.stale(f)) && !this.pending.has(f)) this.pending.set(f, false);
    // The newest photo this frame had not heard of (its photo_added was lost) is shown next.
    if (hadSync) {
      const newest = order.find((f) => !previous.has(f));
      if (newest && !this.cached.has(newest)) this.pending.set(newest, true);
    }
    this.refreshPlaylist();
    this.needsCachedReport = true;
    return { drop, invalidPhotos: invalid, behind: [...behind].sort() };
  }

  applyAlbumSeqs(albumSeqs) {
    const shown = new Set(this.state.albumIDs);
    const seqs = Object.fromEntries(Object.entries(this.state.albumSeqs ?? {}).filter(([a]) => shown.has(a)));
    const behind = new Set();
    for (const [album, value] of Object.entries(albumSeqs ?? {})) {
      if (!shown.has(album)) continue;
      const seq = Number(value);
      if (!(seq === 0 || plausible(seq, seqs[album] ?? 0))) continue;
      const last = seqs[album];
      if (last !== undefined && seq < last && !this.askedBehind.has(album)) behind.add(album);
      else seqs[album] = seq;
    }
    this.askedBehind = behind;
    this.state.albumSeqs = seqs;
    return behind;
  }

  // --- Album sequence numbers ---

  /** 'unnumbered', 'next', {gap: missed}, 'seen' or 'implausible' (AgentCore.observe). */
  observe(album, seqValue) {
    if (seqValue === undefined || seqValue === null) return 'unnumbered';
    const seq = Number(seqValue);
    const last = this.state.albumSeqs?.[album];
    if (!plausible(seq, last ?? 0)) return 'implausible';
    if (last !== undefined && seq <= last) return 'seen';
    this.state.albumSeqs = { ...(this.state.albumSeqs ?? {}), [album]: seq };
    if (last === undefined) return 'next';
    return seq === last + 1 ? 'next' : { gap: seq - last - 1 };
  }

  lastSeq(album) { return this.state.albumSeqs?.[album]; }

  // --- Photo notifications ---

  shows(album) { return this.state.albumIDs.includes(album); }
  firstTime(key) { return this.state.notifications.insert(key); }

  holds(file, album = null) {
    return this.state.wanted.some((w) => w.fileID === file && (album === null || w.albumIDs.includes(album)));
  }

  retryIfMissing(file) {
    if (!this.holds(file) || (this.cached.has(file) && !this.stale(file)) || this.inFlight.has(file)) return false;
    if (!this.pending.has(file)) this.pending.set(file, false);
    return true;
  }

  remember(file, versions) {
    if (!versions || !(this.width > 0) || !(this.height > 0)) return;
    const link = pickDirect(versions, this.width, this.height, this.state.config?.preferred_format);
    if (link) this.links.set(file, link);
  }

  link(file) { return this.links.get(file) ?? null; }
  forgetLink(file) { this.links.delete(file); }

  /** What a caption says of a photo (saved with the state, so it survives a reload). */
  noteMeta(photo) {
    if (!this.state.meta) this.state.meta = {};
    this.state.meta[photo.file_id] = { fileName: String(photo.file_name ?? '').slice(0, 200), takenAt: Number(photo.taken_at) || null };
  }

  metaOf(file) { return this.state.meta?.[file] ?? null; }

  photoAdded(file, album) {
    const existing = this.state.wanted.find((w) => w.fileID === file);
    if (existing) {
      if (!existing.albumIDs.includes(album)) existing.albumIDs.push(album);
    } else {
      this.state.wanted.unshift({ fileID: file, albumIDs: [album] });
    }
    this.pending.set(file, true);
  }

  /** True when the file should leave the cache (no other album has it). */
  photoRemoved(file, album) {
    this.state.notifications.remove(`added:${album}/${file}`);
    const i = this.state.wanted.findIndex((w) => w.fileID === file);
    if (i < 0) return false;
    this.state.wanted[i].albumIDs = this.state.wanted[i].albumIDs.filter((a) => a !== album);
    if (this.state.wanted[i].albumIDs.length) return false;
    this.state.wanted.splice(i, 1);
    this.pending.delete(file);
    this.links.delete(file);
    if (this.state.meta) delete this.state.meta[file];
    this.cached.delete(file);
    if (this.state.slideshow.remove(file)) this.advanceRequested = true;
    return true;
  }

  // --- Fetching ---

  beginFetch(file) {
    if (!this.state.wanted.some((w) => w.fileID === file) || this.inFlight.has(file)) return false;
    this.inFlight.add(file);
    return true;
  }

  /** To fetch now: those to show next first, then in the wanted (newest first) order. */
  duePending() {
    const due = this.state.wanted.map((w) => w.fileID).filter((f) => this.pending.has(f) && !this.inFlight.has(f));
    return [...due.filter((f) => this.pending.get(f)), ...due.filter((f) => !this.pending.get(f))];
  }

  /** The photo is in the cache as `version`; true when it is still wanted. */
  fetched(file, version, showNext) {
    this.inFlight.delete(file);
    const next = (this.pending.get(file) ?? false) || showNext;
    this.pending.delete(file);
    if (!this.state.wanted.some((w) => w.fileID === file)) return false;
    const isNew = !this.cached.has(file);
    const replaced = this.cached.get(file) !== version;
    this.cached.set(file, version);
    this.refreshPlaylist();
    if (next) {
      this.state.slideshow.add(file, true);
      this.advanceRequested = true;
    } else if (replaced && this.displayed === file) {
      this.renderRequested = true; // its version for the new screen size
    }
    if (isNew) this.needsCachedReport = true;
    return true;
  }

  fetchFailed(file, transient) {
    this.inFlight.delete(file);
    if (!transient) this.pending.delete(file);
  }

  evicted(files) {
    for (const file of files) {
      this.cached.delete(file);
      if (this.state.slideshow.remove(file)) this.advanceRequested = true;
    }
    this.refreshPlaylist();
  }

  /** Photos the cache must keep now: on screen and queued. */
  get protected() {
    const set = new Set(this.state.slideshow.upNext);
    if (this.state.slideshow.current) set.add(this.state.slideshow.current);
    if (this.displayed) set.add(this.displayed);
    return set;
  }

  /** The wanted files, newest first (what the cache keeps first). */
  get wantedOrder() { return this.state.wanted.map((w) => w.fileID); }

  unreadable(file) {
    this.cached.delete(file);
    if (this.state.slideshow.remove(file)) this.advanceRequested = true;
    if (this.state.wanted.some((w) => w.fileID === file)) this.pending.set(file, false);
    if (this.displayed === file) this.displayed = null;
  }

  takeCachedReport() {
    if (!this.needsCachedReport) return null;
    this.needsCachedReport = false;
    return this.state.wanted.map((w) => w.fileID).filter((f) => this.cached.has(f));
  }

  reload() {
    for (const w of this.state.wanted) if (!this.pending.has(w.fileID)) this.pending.set(w.fileID, false);
    this.renderRequested = true;
  }

  refreshPlaylist() {
    this.state.slideshow.setPhotos(this.state.wanted.map((w) => w.fileID).filter((f) => this.cached.has(f)));
  }

  // --- Commands and config ---

  /** 'done', 'repeated' or {refused: reason}. */
  command(command, now = performance.now()) {
    const id = String(command?.id ?? '');
    if (!id || new TextEncoder().encode(id).length > 128) return { refused: 'a command needs an id' };
    if (!this.state.commandIDs.insert(id)) return 'repeated';
    switch (command.command) {
      case 'next': this.advanceRequested = true; break;
      case 'previous': if (this.state.slideshow.back() !== null) this.renderRequested = true; break;
      case 'pause': this.state.paused = true; break;
      case 'resume': this.state.paused = false; this.nextChangeAt = now + this.interval; break;
      case 'reload': this.reload(); break;
      case 'sleep': this.state.manualSleep = true; break;
      case 'wake': this.state.manualSleep = false; break;
      case 'set_interval': {
        const text = String(command.args?.seconds ?? '');
        const seconds = /^[0-9]+$/.test(text) ? Number(text) : NaN;
        if (!(seconds >= 1 && seconds <= 86_400)) return { refused: 'set_interval needs args.seconds in 1...86400' };
        this.state.intervalSeconds = seconds;
        this.nextChangeAt = now + this.interval;
        break;
      }
      default:
        return { refused: `unknown command ${String(command.command).slice(0, 40)}` };
    }
    return 'done';
  }

  configure(config, now = performance.now()) {
    if (this.state.config && this.state.config.preferred_format !== config.preferred_format) this.links = new Map();
    this.state.config = config;
    const interval = Number(config.interval_seconds);
    this.state.intervalSeconds = interval > 0 ? Math.min(interval, 86_400) : null;
    this.state.slideshow.shuffle = !!config.shuffle;
    this.state.manualSleep = null;
    this.nextChangeAt = Math.min(this.nextChangeAt, now + this.interval);
  }

  /** An album's settings (retained albums/{id}/config): recorded; captions follow show_captions. */
  albumConfig(album, config) {
    this.state.albumConfigs = { ...(this.state.albumConfigs ?? {}), [album]: { show_captions: !!config.show_captions } };
  }

  get showCaptions() {
    return this.state.albumIDs.some((a) => this.state.albumConfigs?.[a]?.show_captions);
  }

  get interval() { return this.state.intervalSeconds ? this.state.intervalSeconds * 1000 : this.defaultInterval; }

  /** 'fade' unless the frame's config asks for 'none' (a cut): the browser frame cross-fades by default. */
  get transition() { return this.state.config?.transition === 'none' ? 'none' : 'fade'; }

  get sleepWindow() { return sleepWindow(this.state.config); }

  // --- The slideshow clock ---

  /** What the screen should do now ({kind: 'show', file} | {kind: 'blank'} | {kind: 'idle'}) and when to ask again. */
  step(now, date) {
    const asleep = this.state.manualSleep ?? (this.sleepWindow?.contains(date) ?? false);
    if (asleep) {
      if (!this.blanked) {
        this.blanked = true;
        this.displayed = null;
        return { step: { kind: 'blank' }, until: now + 30_000 };
      }
      return { step: { kind: 'idle' }, until: now + 30_000 };
    }
    if (this.blanked) {
      this.blanked = false;
      this.renderRequested = true;
    }
    const show = this.state.slideshow;
    let moved = false;
    if (this.advanceRequested) {
      this.advanceRequested = false;
      show.advance();
      moved = true;
    } else if (show.current === null && show.photos.length) {
      show.advance();
      moved = true;
    } else if (!this.state.paused && now >= this.nextChangeAt && show.photos.length > 1) {
      show.advance();
      moved = true;
    }
    if (show.current !== null && (show.current !== this.displayed || this.renderRequested)) {
      this.renderRequested = false;
      this.nextChangeAt = now + this.interval;
      return { step: { kind: 'show', file: show.current }, until: this.nextChangeAt };
    }
    if (moved || this.nextChangeAt <= now) this.nextChangeAt = now + this.interval;
    if (show.current === null && this.displayed !== null) {
      this.displayed = null;
      return { step: { kind: 'blank' }, until: this.nextChangeAt };
    }
    return { step: { kind: 'idle' }, until: this.state.paused ? now + 60_000 : this.nextChangeAt };
  }

  shown(file) { this.displayed = file; }

  get screenState() {
    if (this.blanked) return 'asleep';
    if (this.displayed === null) return 'empty';
    return this.state.paused ? 'paused' : 'showing';
  }
}
