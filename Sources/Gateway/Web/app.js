// The family web app: a router by location hash (#/photos, #/albums/ID…), the header's
// navigation, and the account screens (sign up, log in, log out). Each screen is a view
// function of photos.js, albums.js or frames.js, given a context:
//   main      the <main> element to fill
//   params    the route's captured parts (ids)
//   query     URLSearchParams of the part after "?" in the hash
//   signal    aborted when the user leaves the screen (pass it to API calls)
//   cleanup   cleanup(fn): fn runs when the user leaves the screen
//   setTitle  setTitle(text): the document's title
//   navigate  navigate('#/…')

import { API, describe, formatWait, session } from './api.js';
import { renderPhoto, renderPhotos } from './photos.js';
import { renderAlbum, renderAlbums } from './albums.js';
import { renderFrames } from './frames.js';
import { busy, field, formError, h, notice } from './ui.js';

const routes = [
  { path: /^\/login$/, view: renderLogin, title: 'Log in', public: true },
  { path: /^\/signup$/, view: renderSignup, title: 'Create an account', public: true },
  { path: /^\/photos$/, view: renderPhotos, title: 'Photos', section: 'photos' },
  { path: /^\/photos\/([^/]+)$/, view: renderPhoto, title: 'Photo', section: 'photos' },
  { path: /^\/albums$/, view: renderAlbums, title: 'Albums', section: 'albums' },
  { path: /^\/albums\/([^/]+)$/, view: renderAlbum, title: 'Album', section: 'albums' },
  { path: /^\/frames$/, view: renderFrames, title: 'Frames', section: 'frames' },
];

const main = document.getElementById('main');
const nav = document.getElementById('nav');
let current = null; // {controller, cleanups}
let firstRender = true;

function parseHash() {
  const hash = location.hash.replace(/^#/, '');
  const [path, search = ''] = hash.split('?');
  return { path: path || '/', query: new URLSearchParams(search) };
}

export function navigate(target) {
  if (location.hash === target) route();
  else location.hash = target;
}

function leaveCurrent() {
  if (!current) return;
  current.controller.abort();
  for (const fn of current.cleanups.splice(0)) {
    try { fn(); } catch (err) { console.error(err); }
  }
  current = null;
}

function showChrome(signedIn, section) {
  nav.hidden = !signedIn;
  for (const link of nav.querySelectorAll('a[data-section]')) {
    if (link.dataset.section === section) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  const who = session.get();
  const whoami = document.getElementById('whoami');
  if (whoami) whoami.textContent = signedIn && who ? `Logged in as ${who.name ? `${who.name} (${who.email})` : who.email}` : '';
}

async function route() {
  const { path, query } = parseHash();
  const signedIn = !!session.token();
  if (path === '/' || !path.startsWith('/')) {
    navigate(signedIn ? '#/photos' : '#/login');
    return;
  }
  const found = routes.map((r) => ({ r, match: r.path.exec(path) })).find((x) => x.match);
  if (!found) {
    navigate(signedIn ? '#/photos' : '#/login');
    return;
  }
  const { r, match } = found;
  if (!r.public && !signedIn) {
    navigate(`#/login?next=${encodeURIComponent(path)}`);
    return;
  }
  if (r.public && signedIn) {
    navigate('#/photos');
    return;
  }
  leaveCurrent();
  const controller = new AbortController();
  const cleanups = [];
  current = { controller, cleanups };
  showChrome(signedIn, r.section);
  document.title = `${r.title} · Framecast`;
  main.replaceChildren();
  const ctx = {
    main,
    params: match.slice(1).map(decodeURIComponent),
    query,
    signal: controller.signal,
    cleanup: (fn) => cleanups.push(fn),
    setTitle: (text) => { document.title = `${text} · Framecast`; },
    navigate,
  };
  const focusHeading = () => {
    // Move focus to the new screen's heading, so keyboard and screen reader users start there
    // (not on the first load: the page starts at the top anyway).
    if (!firstRender) main.querySelector('h1')?.focus({ preventScroll: false });
    firstRender = false;
  };
  try {
    const rendering = r.view(ctx);
    // The heading exists as soon as the view's synchronous part ran.
    focusHeading();
    window.scrollTo(0, 0);
    await rendering;
  } catch (err) {
    if (err?.name === 'AbortError') return;
    console.error(err);
    main.append(h('p', { class: 'form-error', role: 'alert' }, describe(err)));
  }
}

// --- Account screens ---

/**
 * A sign-up or login form. `onSubmit()` does the work (and leaves the screen when it worked);
 * what it throws is shown by `showError(err, error)`, except a 429: the button then waits as
 * long as the server asks, the wait shown on it and in the message.
 */
function accountForm({ title, intro, fields, submitText, busyText, other, onSubmit, showError }) {
  const error = formError();
  const submit = h('button', { type: 'submit', class: 'primary wide' }, submitText);
  const form = h('form', { class: 'card account-form', 'aria-labelledby': 'account-title' }, fields, error.el, submit);
  let waitTimer = null;
  const ready = () => {
    submit.disabled = false;
    submit.removeAttribute('aria-busy');
    submit.textContent = submitText;
  };
  const wait = (seconds, message) => {
    let left = seconds;
    error.show(message);
    submit.disabled = true;
    const tick = () => {
      if (left <= 0 || !submit.isConnected) {
        clearInterval(waitTimer);
        waitTimer = null;
        ready();
        return;
      }
      submit.textContent = `Wait ${formatWait(left)}`;
      left--;
    };
    tick();
    waitTimer = setInterval(tick, 1000);
  };
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    if (submit.disabled) return;
    error.clear();
    submit.disabled = true;
    submit.setAttribute('aria-busy', 'true');
    submit.textContent = busyText;
    try {
      await onSubmit();
      ready();
    } catch (err) {
      submit.removeAttribute('aria-busy');
      if (err?.status === 429) {
        wait(err.retryAfter || 60, describe(err));
      } else {
        ready();
        showError(err, error);
      }
    }
  });
  main.replaceChildren(
    h('h1', { id: 'account-title', tabindex: -1 }, title),
    intro ? h('p', { class: 'intro' }, intro) : null,
    form,
    h('p', { class: 'account-other' }, other));
}

function signedIn(answer, email, name, next) {
  session.set({ token: answer.token, user_id: answer.user_id, email, name });
  navigate(next && next.startsWith('/') ? `#${next}` : '#/photos');
}

function renderLogin(ctx) {
  const email = h('input', { type: 'email', required: true, autocomplete: 'username', inputmode: 'email' });
  const password = h('input', { type: 'password', required: true, autocomplete: 'current-password' });
  accountForm({
    title: 'Log in to Framecast',
    intro: 'Family photos from your phone to your photo frames.',
    fields: [field('E-mail', email), field('Password', password)],
    submitText: 'Log in',
    busyText: 'Logging in…',
    other: ['New here? ', h('a', { href: '#/signup' }, 'Create an account')],
    async onSubmit() {
      const answer = await API.login(email.value.trim(), password.value);
      signedIn(answer, email.value.trim(), '', ctx.query.get('next'));
      notice('You are logged in.', 'ok');
    },
    showError(err, error) {
      error.show(describe(err, { 401: 'Wrong e-mail or password. Please try again.' }));
      password.select();
    },
  });
}

function renderSignup() {
  const name = h('input', { type: 'text', required: true, maxlength: 100, autocomplete: 'name' });
  const email = h('input', { type: 'email', required: true, maxlength: 254, autocomplete: 'email', inputmode: 'email' });
  const password = h('input', { type: 'password', required: true, minlength: 8, maxlength: 1024, autocomplete: 'new-password' });
  accountForm({
    title: 'Create your account',
    intro: 'Share family photos with the people you love, on their photo frames.',
    fields: [
      field('Your name', name, { hint: 'Shown to the people you share albums with.' }),
      field('E-mail', email),
      field('Password', password, { hint: 'At least 8 characters.' }),
    ],
    submitText: 'Create account',
    busyText: 'Creating your account…',
    other: ['Already have an account? ', h('a', { href: '#/login' }, 'Log in')],
    async onSubmit() {
      const answer = await API.signup(email.value.trim(), password.value, name.value.trim());
      signedIn(answer, email.value.trim(), name.value.trim(), null);
      notice(`Welcome, ${name.value.trim()}! Start by uploading a few photos.`, 'ok');
    },
    showError(err, error) {
      if (err?.status === 409) {
        error.el.replaceChildren('An account with this e-mail already exists. ',
          h('a', { href: '#/login' }, 'Log in'), ' instead, or use another e-mail.');
        error.el.hidden = false;
      } else {
        error.show(describe(err));
      }
    },
  });
}

// --- Start ---

document.getElementById('logout').addEventListener('click', async (event) => {
  const button = event.currentTarget;
  await busy(button, async () => {
    try { await API.logout(); } catch { /* the token goes from this browser all the same */ }
  }, 'Logging out…');
  session.clear();
  leaveCurrent();
  navigate('#/login');
  notice('You are logged out.', 'ok');
});

window.addEventListener('framecast:signedout', () => {
  const { path } = parseHash();
  if (routes.some((r) => r.public && r.path.test(path))) return;
  notice('Your session has ended. Please log in again.', 'error');
  navigate(`#/login?next=${encodeURIComponent(path)}`);
});

// Another tab logged in or out.
window.addEventListener('storage', (event) => {
  if (event.key === 'framecast.session') route();
});

// The skip link moves the focus to the screen without changing the route.
document.querySelector('.skip-link')?.addEventListener('click', (event) => {
  event.preventDefault();
  main.focus();
});

window.addEventListener('hashchange', route);
route();
