// Frames: register a Linux frame (and download its configuration file for `framecast frame`),
// pair a browser frame by its code (only when the gateway has POST /api/v1/frames/pair), and
// per frame: online or offline, last heartbeat, the photo on its screen now, the albums it
// shows, commands, settings, its rotation schedule, rename, new credentials, delete.
//
// Live: GET /api/v1/frames every 5 seconds while the page is visible (document.visibilityState),
// never faster, none while the tab is hidden; only the live parts of a frame's card change, so
// a form being filled in keeps what was typed.

import { API, allPages, describe, hasRoute, isAbort } from './api.js';
import { allAlbums } from './albums.js';
import { photoDocument, photoImage } from './thumbs.js';
import { photoAlt } from './photos.js';
import {
  busy, check, confirmDialog, field, formError, formatDate, h, notice, plural, statusLine, timeAgo, uid,
} from './ui.js';

export const POLL_SECONDS = 5;

const COMMANDS = [
  ['previous', 'Previous'], ['next', 'Next'], ['pause', 'Pause'], ['resume', 'Resume'], ['sleep', 'Sleep'], ['wake', 'Wake'],
];
const TRANSITIONS = [['', "The frame's default"], ['fade', 'Fade'], ['none', 'None (cut)']];
const DAYS = [['mon', 'Mon'], ['tue', 'Tue'], ['wed', 'Wed'], ['thu', 'Thu'], ['fri', 'Fri'], ['sat', 'Sat'], ['sun', 'Sun']];

const slug = (name) => String(name).toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-+|-+$/g, '') || 'frame';

export async function renderFrames(ctx) {
  const { main, signal } = ctx;
  const list = h('div', { class: 'frame-list', id: 'frame-list' });
  const status = statusLine();
  const empty = h('p', { class: 'muted', hidden: true }, 'No frames yet: register one above.');
  const add = h('section', { class: 'add-frame', 'aria-labelledby': 'add-frame-title' }, h('h2', { id: 'add-frame-title' }, 'Add a frame'));
  main.replaceChildren(h('h1', { tabindex: -1 }, 'Frames'), add,
    h('section', { 'aria-labelledby': 'frames-title' },
      h('h2', { id: 'frames-title', tabindex: -1 }, 'Your frames'),
      h('p', { class: 'hint' }, `This list updates by itself every ${POLL_SECONDS} seconds while the page is open.`),
      status.el, empty, list));

  const env = { ctx, albums: [], refresh: () => refreshNow(), removed: (id) => removeCard(id) };
  const albumsLoaded = allAlbums(signal).then((albums) => { env.albums = albums; }, (err) => {
    if (!isAbort(err)) status.error(`Your albums could not be loaded: ${describe(err)}`);
  });

  add.append(registerForm(env));
  hasRoute('/api/v1/frames/pair').then(async (available) => {
    if (!available || signal.aborted) return;
    await albumsLoaded;
    add.insertBefore(pairForm(env), add.children[1] ?? null);
  });

  // --- The list, kept in step with the API ---
  const cards = new Map(); // frame_id → {el, update}
  const removeCard = (id) => {
    cards.get(id)?.el.remove();
    cards.delete(id);
    empty.hidden = cards.size > 0;
  };
  const render = (frames) => {
    const ids = new Set(frames.map((f) => f.frame_id));
    for (const id of [...cards.keys()]) if (!ids.has(id)) removeCard(id);
    let previous = null;
    for (const frame of frames) {
      let card = cards.get(frame.frame_id);
      if (card) {
        card.update(frame);
      } else {
        card = frameCard(frame, env);
        cards.set(frame.frame_id, card);
        if (previous) previous.el.after(card.el); else list.prepend(card.el);
      }
      previous = card;
    }
    empty.hidden = frames.length > 0;
  };

  // --- Polling: every POLL_SECONDS while visible, one request at a time ---
  let timer = null;
  let lastStart = 0;
  let inFlight = false;
  let stopped = false;
  let failing = false;
  let again = false; // a refresh asked for while a poll was in flight
  const poll = async () => {
    timer = null;
    if (stopped || document.visibilityState !== 'visible') return;
    if (inFlight) { again = true; return; }
    inFlight = true;
    lastStart = Date.now();
    try {
      const answer = await API.frames(signal);
      render(answer?.frames ?? []);
      if (failing) status.clear();
      failing = false;
    } catch (err) {
      if (isAbort(err)) return;
      failing = true;
      status.error(`The frames could not be refreshed: ${describe(err)} Trying again shortly.`);
    } finally {
      inFlight = false;
    }
    if (again) {
      again = false;
      poll();
      return;
    }
    schedule();
  };
  const schedule = () => {
    if (stopped || timer || document.visibilityState !== 'visible') return;
    timer = setTimeout(poll, Math.max(0, POLL_SECONDS * 1000 - (Date.now() - lastStart)));
  };
  const refreshNow = () => {
    clearTimeout(timer);
    timer = null;
    poll();
  };
  const onVisibility = () => {
    if (document.visibilityState === 'visible') schedule();
    else { clearTimeout(timer); timer = null; }
  };
  document.addEventListener('visibilitychange', onVisibility);
  ctx.cleanup(() => {
    stopped = true;
    clearTimeout(timer);
    document.removeEventListener('visibilitychange', onVisibility);
  });

  status.info('Loading your frames…');
  await albumsLoaded;
  if (signal.aborted) return;
  status.clear();
  await poll();
}

// --- Registration: the answer is the frame's configuration file ---

function registerForm(env) {
  const name = h('input', { type: 'text', required: true, maxlength: 200, autocomplete: 'off' });
  const width = h('input', { type: 'number', required: true, min: 16, max: 16384, step: 1, value: '1024', inputmode: 'numeric' });
  const height = h('input', { type: 'number', required: true, min: 16, max: 16384, step: 1, value: '600', inputmode: 'numeric' });
  const orientation = h('select', {},
    h('option', { value: '' }, 'From the size'), h('option', { value: 'landscape' }, 'Landscape'), h('option', { value: 'portrait' }, 'Portrait'));
  const submit = h('button', { type: 'submit', class: 'primary' }, 'Register frame');
  const error = formError();
  const result = h('div', { class: 'register-result' });
  const form = h('form', { class: 'card', 'aria-labelledby': 'register-title' },
    h('h3', { id: 'register-title' }, 'Register a Linux frame'),
    h('p', { class: 'hint' }, 'For a frame that runs the Framecast frame agent (framecast frame). You get its configuration file.'),
    field('Frame name', name, { hint: 'For example “Kitchen” or “Grandma’s living room”.' }),
    h('div', { class: 'field-row' },
      field('Screen width (pixels)', width), field('Screen height (pixels)', height)),
    field('Orientation', orientation),
    error.el, submit, result);
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    error.clear();
    busy(submit, async () => {
      try {
        const body = { name: name.value.trim(), width: Number(width.value), height: Number(height.value) };
        if (orientation.value) body.orientation = orientation.value;
        const credentials = await API.registerFrame(body);
        form.reset();
        result.replaceChildren(configPanel(env.ctx, credentials,
          `${credentials.frame?.name ?? body.name} is registered`));
        result.querySelector('h4')?.focus();
        env.refresh();
      } catch (err) {
        error.show(describe(err));
      }
    }, 'Registering…');
  });
  return form;
}

/**
 * The configuration file to download: the API's answer as is, plus `gateway_url` (this page's
 * address; the agent's --gateway flag wins over it). And how to start the agent with it.
 */
function configPanel(ctx, credentials, title) {
  const text = `${JSON.stringify({ ...credentials, gateway_url: location.origin }, null, 2)}\n`;
  const url = URL.createObjectURL(new Blob([text], { type: 'application/json' }));
  ctx.cleanup(() => URL.revokeObjectURL(url));
  const fileName = `framecast-frame-${slug(credentials.frame?.name ?? 'frame')}.json`;
  const command = `framecast frame --config ${fileName} --gateway ${location.origin} --display fb:/dev/fb0`;
  const copy = h('button', { type: 'button', class: 'small' }, 'Copy the command');
  const copied = statusLine();
  copy.addEventListener('click', async () => {
    try {
      await navigator.clipboard.writeText(command);
      copied.ok('Copied.');
    } catch {
      copied.error('Copying is not allowed here: select the command and copy it.');
    }
  });
  const titleId = uid('config-title');
  return h('section', { class: 'config-panel', 'aria-labelledby': titleId },
    h('h4', { id: titleId, tabindex: -1 }, title),
    h('p', {}, 'Download its configuration file and copy it to the frame. ',
      h('strong', {}, 'Keep it safe: it holds the frame’s password, and it is shown only now.')),
    h('p', {}, h('a', { href: url, download: fileName, class: 'button primary' }, `Download configuration file (${fileName})`)),
    h('p', {}, 'Then start the frame agent on the frame with it:'),
    h('pre', { class: 'command' }, h('code', {}, command)),
    h('p', { class: 'hint' }, 'Use --display png:screen.png to try it on a computer. Then choose, below, which albums the frame shows.'),
    copy, copied.el);
}

// --- Pairing a browser frame by the code on its screen ---

function pairForm(env) {
  const code = h('input', {
    type: 'text', required: true, autocomplete: 'off', autocapitalize: 'characters', spellcheck: 'false', maxlength: 16,
  });
  const name = h('input', { type: 'text', required: true, maxlength: 200, autocomplete: 'off' });
  const albums = h('fieldset', { class: 'checks' }, h('legend', {}, 'Albums it shows'),
    env.albums.map((album) => check(album.name, h('input', { type: 'checkbox', value: album.album_id }))));
  const submit = h('button', { type: 'submit', class: 'primary' }, 'Pair frame');
  const error = formError();
  const done = statusLine();
  const form = h('form', { class: 'card', 'aria-labelledby': 'pair-title' },
    h('h3', { id: 'pair-title' }, 'Pair a tablet or browser frame'),
    h('p', { class: 'hint' }, 'Open /frame on the tablet: it shows a code. Type it here.'),
    field('Code on the frame', code, { hint: 'For example K7Q-4MP.' }), field('Frame name', name),
    env.albums.length ? albums : null, error.el, submit, done.el);
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    error.clear();
    const albumIds = Array.from(albums.querySelectorAll('input:checked')).map((box) => box.value);
    busy(submit, async () => {
      try {
        const body = { code: code.value.trim().toUpperCase(), name: name.value.trim() };
        if (albumIds.length) body.album_ids = albumIds;
        const frame = await API.pairFrame(body);
        form.reset();
        done.ok(`${frame?.name ?? body.name} is paired: it picks up its photos by itself.`);
        env.refresh();
      } catch (err) {
        error.show(describe(err, {
          404: 'No frame is waiting with that code. Check the code on its screen: codes change every 10 minutes.',
        }));
      }
    }, 'Pairing…');
  });
  return form;
}

// --- One frame ---

/** The photo on the frame's screen now: the latest `displayed` report over its albums. */
function onScreen(frame) {
  let best = null;
  for (const sync of frame.sync_status ?? []) {
    if (!sync.last_displayed_file_id) continue;
    if (!best || String(sync.last_displayed_at ?? '') > String(best.last_displayed_at ?? '')) best = sync;
  }
  return best ? { fileId: best.last_displayed_file_id, at: best.last_displayed_at } : null;
}

function frameCard(initial, env) {
  let frame = initial;
  const id = frame.frame_id;
  const titleId = uid('frame-title');
  const title = h('h3', { id: titleId }, frame.name);
  const badge = h('span', { class: 'badge' });
  const meta = h('p', { class: 'frame-meta muted' });
  const screen = h('div', { class: 'now-showing' });
  const status = statusLine('status-line frame-status');
  const commandGroup = h('div', { class: 'commands', role: 'group', 'aria-label': `Commands for ${frame.name}` });
  for (const [command, label] of COMMANDS) {
    const button = h('button', { type: 'button', dataset: { command } }, label);
    button.addEventListener('click', () => busy(button, async () => {
      try {
        const answer = await API.sendCommand(id, command);
        const later = frame.online ? '' : ` ${frame.name} is offline: it gets it when it is back.`;
        status.ok(`“${label}” sent to ${frame.name}.${later}`);
        button.dataset.commandId = answer?.command_id ?? '';
      } catch (err) {
        status.error(`“${label}” was not sent: ${describe(err)}`);
      }
    }));
    commandGroup.append(button);
  }

  let shownFile = null;
  const update = (next) => {
    frame = next;
    title.textContent = frame.name;
    commandGroup.setAttribute('aria-label', `Commands for ${frame.name}`);
    badge.textContent = frame.online ? 'Online' : 'Offline';
    badge.className = `badge ${frame.online ? 'online' : 'offline'}`;
    const albumNames = frame.album_ids
      .map((albumId) => env.albums.find((a) => a.album_id === albumId)?.name)
      .filter(Boolean);
    meta.replaceChildren(
      `${frame.width} × ${frame.height}, ${frame.orientation} · `,
      h('span', { title: formatDate(frame.last_heartbeat_at) }, `Last heartbeat: ${timeAgo(frame.last_heartbeat_at)}`),
      ` · ${albumNames.length ? `Shows ${albumNames.join(', ')}` : frame.album_ids.length ? `Shows ${plural(frame.album_ids.length, 'album')}` : 'Shows no album yet'}`);
    const now = onScreen(frame);
    if (!now) {
      if (shownFile !== '') screen.replaceChildren(h('p', { class: 'muted' }, 'No photo reported on its screen yet.'));
      shownFile = '';
      return;
    }
    const since = h('span', { class: 'since' }, `On screen since ${timeAgo(now.at)}`);
    if (shownFile === now.fileId) {
      screen.querySelector('.since')?.replaceWith(since);
      return;
    }
    shownFile = now.fileId;
    const thumb = photoImage(now.fileId, { alt: `The photo on ${frame.name} now`, eager: true });
    photoDocument(now.fileId).then((doc) => {
      thumb.querySelector('img')?.setAttribute('alt', `On ${frame.name} now: ${photoAlt(doc.file_name, doc.taken_at)}`);
    }, () => {});
    screen.replaceChildren(
      h('a', { href: `#/photos/${encodeURIComponent(now.fileId)}`, class: 'now-link' }, thumb),
      h('p', { class: 'now-caption' }, h('strong', {}, 'Now showing'), h('br'), since));
  };

  const el = h('article', { class: 'card frame-card', 'aria-labelledby': titleId, dataset: { frameId: id } },
    h('div', { class: 'frame-head' }, title, badge),
    meta, screen, commandGroup, status.el,
    albumsEditor(() => frame, env, (updated) => update(updated)),
    settingsEditor(() => frame, (updated) => update(updated)),
    scheduleEditor(() => frame, env),
    moreTools(() => frame, env, (updated) => update(updated)));
  update(frame);
  return { el, update };
}

function albumsEditor(current, env, updated) {
  const details = h('details', { class: 'frame-section' }, h('summary', {}, 'Albums it shows'));
  const status = statusLine();
  const fill = () => {
    const frame = current();
    if (!env.albums.length) {
      details.replaceChildren(details.firstChild,
        h('p', { class: 'muted' }, 'You have no album yet. ', h('a', { href: '#/albums' }, 'Create an album'), ' first.'));
      return;
    }
    const boxes = env.albums.map((album) => h('input', {
      type: 'checkbox', value: album.album_id, checked: frame.album_ids.includes(album.album_id),
    }));
    const save = h('button', { type: 'submit', class: 'primary' }, 'Save albums');
    const form = h('form', {},
      h('fieldset', { class: 'checks' }, h('legend', {}, `Albums ${frame.name} shows`),
        env.albums.map((album, i) => check(album.name, boxes[i]))),
      save, status.el);
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      const chosen = boxes.filter((box) => box.checked).map((box) => box.value);
      busy(save, async () => {
        try {
          const frameAfter = await API.setFrameAlbums(current().frame_id, chosen);
          updated(frameAfter);
          status.ok(chosen.length ? `Saved: ${frameAfter.name} shows ${plural(chosen.length, 'album')}.` : `Saved: ${frameAfter.name} shows no album.`);
        } catch (err) {
          status.error(describe(err));
        }
      }, 'Saving…');
    });
    details.replaceChildren(details.firstChild, form);
  };
  details.addEventListener('toggle', () => { if (details.open) fill(); });
  return details;
}

function settingsEditor(current, updated) {
  const details = h('details', { class: 'frame-section' }, h('summary', {}, 'Settings'));
  details.addEventListener('toggle', () => {
    if (!details.open) return;
    const frame = current();
    const config = frame.config ?? {};
    const interval = h('input', {
      type: 'number', required: true, min: 1, max: 86400, step: 1, inputmode: 'numeric', value: String(config.interval_seconds || 30),
    });
    const shuffle = h('input', { type: 'checkbox', checked: !!config.shuffle });
    const transition = h('select', {}, TRANSITIONS.map(([value, label]) => h('option', { value }, label)));
    if (config.transition && !TRANSITIONS.some(([value]) => value === config.transition)) {
      transition.append(h('option', { value: config.transition }, config.transition));
    }
    transition.value = config.transition ?? '';
    const sleepStart = h('input', { type: 'time', value: config.sleep_start ?? '' });
    const sleepEnd = h('input', { type: 'time', value: config.sleep_end ?? '' });
    let zone = '';
    try { zone = Intl.DateTimeFormat().resolvedOptions().timeZone ?? ''; } catch { /* no zone known */ }
    const timeZone = h('input', { type: 'text', maxlength: 64, value: config.time_zone ?? '', placeholder: zone, autocomplete: 'off' });
    const save = h('button', { type: 'submit', class: 'primary' }, 'Save settings');
    const error = formError();
    const status = statusLine();
    const form = h('form', {},
      field('Seconds per photo', interval),
      check('Shuffle (random order)', shuffle),
      field('Transition', transition),
      h('fieldset', { class: 'field-row' }, h('legend', {}, 'Sleep (screen off)'),
        field('From', sleepStart), field('Until', sleepEnd)),
      h('p', { class: 'hint' }, 'Leave both empty for a frame that never sleeps.'),
      field('Time zone', timeZone, { hint: `For the sleep times, e.g. ${zone || 'Europe/Paris'}; empty: the frame's own clock.` }),
      error.el, save, status.el);
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      error.clear();
      if (!!sleepStart.value !== !!sleepEnd.value) {
        error.show('Give both sleep times, or neither.');
        return;
      }
      // PUT replaces every setting: what this form does not show is sent back as it is.
      const body = { interval_seconds: Number(interval.value), shuffle: shuffle.checked };
      if (transition.value) body.transition = transition.value;
      if (sleepStart.value) { body.sleep_start = sleepStart.value.slice(0, 5); body.sleep_end = sleepEnd.value.slice(0, 5); }
      if (timeZone.value.trim()) body.time_zone = timeZone.value.trim();
      const latest = current().config ?? {};
      if (latest.preferred_format) body.preferred_format = latest.preferred_format;
      if (Number.isInteger(latest.brightness) && latest.brightness >= 0 && latest.brightness <= 100) body.brightness = latest.brightness;
      busy(save, async () => {
        try {
          updated(await API.setFrameConfig(current().frame_id, body));
          status.ok('Settings saved: the frame applies them at once.');
        } catch (err) {
          error.show(describe(err));
        }
      }, 'Saving…');
    });
    details.replaceChildren(details.firstChild, form);
  });
  return details;
}

function describeEntry(entry, albums, playlists) {
  const days = entry.days?.length
    ? DAYS.filter(([day]) => entry.days.includes(day)).map(([, label]) => label).join(', ')
    : 'Every day';
  const hours = entry.start_time && entry.end_time ? `${entry.start_time}–${entry.end_time}` : 'all day';
  let what = 'its albums';
  if (entry.playlist_id) what = `playlist “${playlists.find((p) => p.playlist_id === entry.playlist_id)?.name ?? 'unknown'}”`;
  else if (entry.album_id) what = `album “${albums.find((a) => a.album_id === entry.album_id)?.name ?? 'unknown'}”`;
  return `${days}, ${hours}: ${what}, a photo every ${entry.interval_seconds} s${entry.shuffle ? ', shuffled' : ''}`;
}

function scheduleEditor(current, env) {
  const details = h('details', { class: 'frame-section' }, h('summary', {}, 'Schedule'));
  let loaded = false;
  details.addEventListener('toggle', async () => {
    if (!details.open || loaded) return;
    loaded = true;
    const status = statusLine();
    details.append(status.el);
    status.info('Loading the schedule…');
    let entries;
    let playlists = [];
    try {
      const [schedule, lists] = await Promise.all([
        API.schedule(current().frame_id, env.ctx.signal),
        allPages((token) => API.playlists(token, env.ctx.signal), 'playlists').catch(() => []),
      ]);
      entries = schedule?.entries ?? [];
      playlists = lists;
    } catch (err) {
      if (isAbort(err)) return;
      loaded = false;
      status.error(`The schedule could not be loaded: ${describe(err)}`);
      return;
    }
    status.clear();

    const list = h('ol', { class: 'schedule-entries' });
    const showEntries = () => {
      list.replaceChildren(...entries.map((entry, index) => {
        const remove = h('button', { type: 'button', class: 'small' }, 'Remove');
        remove.setAttribute('aria-label', `Remove: ${describeEntry(entry, env.albums, playlists)}`);
        remove.addEventListener('click', () => { entries.splice(index, 1); showEntries(); status.info('Removed; save to keep it.'); });
        return h('li', {}, h('span', {}, describeEntry(entry, env.albums, playlists)), ' ', remove);
      }));
      if (!entries.length) list.append(h('li', { class: 'muted' }, 'No schedule: the frame shows its albums all the time.'));
    };
    showEntries();

    // A new entry.
    const source = h('select', {}, h('option', { value: '' }, 'Its albums'),
      env.albums.map((a) => h('option', { value: `album:${a.album_id}` }, `Album: ${a.name}`)),
      playlists.map((p) => h('option', { value: `playlist:${p.playlist_id}` }, `Playlist: ${p.name}`)));
    const dayBoxes = DAYS.map(([value]) => h('input', { type: 'checkbox', value }));
    const start = h('input', { type: 'time' });
    const end = h('input', { type: 'time' });
    const interval = h('input', { type: 'number', min: 5, max: 86400, step: 1, required: true, value: '60', inputmode: 'numeric' });
    const shuffle = h('input', { type: 'checkbox' });
    const addButton = h('button', { type: 'submit' }, 'Add to the schedule');
    const error = formError();
    const form = h('form', { class: 'schedule-form' },
      h('h4', {}, 'Add an entry'),
      field('Show', source),
      h('fieldset', { class: 'checks days' }, h('legend', {}, 'Days (none: every day)'),
        DAYS.map(([, label], i) => check(label, dayBoxes[i]))),
      h('fieldset', { class: 'field-row' }, h('legend', {}, 'Hours (both empty: all day)'), field('From', start), field('Until', end)),
      field('Seconds per photo', interval), check('Shuffle', shuffle), error.el, addButton);
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      error.clear();
      if (!!start.value !== !!end.value) { error.show('Give both hours, or neither.'); return; }
      if (start.value && start.value === end.value) { error.show('The start and end hours must differ.'); return; }
      if (entries.length >= 24) { error.show('A schedule holds at most 24 entries.'); return; }
      const entry = { interval_seconds: Number(interval.value) };
      const [kind, chosen] = source.value.split(':');
      if (kind === 'album') entry.album_id = chosen;
      if (kind === 'playlist') entry.playlist_id = chosen;
      const days = dayBoxes.filter((box) => box.checked).map((box) => box.value);
      if (days.length) entry.days = days;
      if (start.value) { entry.start_time = start.value.slice(0, 5); entry.end_time = end.value.slice(0, 5); }
      if (shuffle.checked) entry.shuffle = true;
      entries.push(entry);
      showEntries();
      form.reset();
      status.info('Added; save the schedule to send it to the frame.');
    });

    const save = h('button', { type: 'button', class: 'primary' }, 'Save the schedule');
    save.addEventListener('click', () => busy(save, async () => {
      try {
        if (entries.length) {
          const answer = await API.setSchedule(current().frame_id, entries);
          entries = answer?.entries ?? entries;
          status.ok('Schedule saved: the frame has it.');
        } else {
          await API.deleteSchedule(current().frame_id);
          status.ok('Schedule removed: the frame shows its albums all the time.');
        }
        showEntries();
      } catch (err) {
        status.error(describe(err));
      }
    }, 'Saving…'));
    details.insertBefore(list, status.el);
    details.insertBefore(form, status.el);
    details.insertBefore(save, status.el);
  });
  return details;
}

/** Rename, new credentials (a new configuration file), delete. */
function moreTools(current, env, updated) {
  const details = h('details', { class: 'frame-section' }, h('summary', {}, 'Rename, new configuration file, delete'));
  const status = statusLine();
  const name = h('input', { type: 'text', required: true, maxlength: 200 });
  const rename = h('button', { type: 'submit' }, 'Rename');
  const renameForm = h('form', { class: 'inline-form' }, field('New name', name), rename);
  renameForm.addEventListener('submit', (event) => {
    event.preventDefault();
    busy(rename, async () => {
      try {
        const frame = await API.updateFrame(current().frame_id, { name: name.value.trim() });
        updated(frame);
        status.ok(`Renamed to ${frame.name}.`);
      } catch (err) {
        status.error(describe(err));
      }
    }, 'Renaming…');
  });
  details.addEventListener('toggle', () => { if (details.open && !name.value) name.value = current().name; });

  const result = h('div');
  const credentials = h('button', { type: 'button' }, 'Make a new configuration file');
  credentials.addEventListener('click', async () => {
    const frame = current();
    const confirmed = await confirmDialog({
      title: `New configuration file for ${frame.name}?`,
      message: 'Its current file stops working at once: the frame goes offline until it runs with the new one.',
      confirm: 'Make a new file', danger: false,
    });
    if (!confirmed) return;
    busy(credentials, async () => {
      try {
        result.replaceChildren(configPanel(env.ctx, await API.newCredentials(frame.frame_id), `New configuration file for ${frame.name}`));
        result.querySelector('h4')?.focus();
      } catch (err) {
        status.error(describe(err));
      }
    }, 'Working…');
  });

  const remove = h('button', { type: 'button', class: 'danger' }, 'Delete frame');
  remove.addEventListener('click', async () => {
    const frame = current();
    const confirmed = await confirmDialog({
      title: `Delete ${frame.name}?`,
      message: 'It stops showing photos and its configuration file stops working. Your photos and albums stay. This cannot be undone.',
      confirm: 'Delete frame',
    });
    if (!confirmed) return;
    busy(remove, async () => {
      try {
        await API.deleteFrame(frame.frame_id);
        notice(`${frame.name} deleted.`, 'ok');
        env.removed(frame.frame_id);
        document.getElementById('frames-title')?.focus();
      } catch (err) {
        status.error(describe(err));
      }
    }, 'Deleting…');
  });
  details.append(renameForm, h('div', { class: 'tool-row' }, credentials, remove), result, status.el);
  return details;
}
