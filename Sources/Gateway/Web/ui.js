// Small DOM helpers shared by the views: element creation, labelled fields, the page's status
// line, a confirmation dialog, and formatting of dates, sizes and durations.

/**
 * h('button', {class: 'primary', type: 'submit', onclick: fn}, 'Save') → the element.
 * Props: `class`, `for`, `text`, `dataset` ({key: value}), on<event> functions, `value` and
 * `checked` (the current and the default one, which form.reset() returns to), `selected`,
 * `disabled`, `hidden`, `multiple`, `required` (as properties); anything else is an attribute
 * (true → present, false/null/undefined → absent). Children: nodes, strings, arrays; null and
 * false are skipped.
 */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') el.className = value;
    else if (key === 'for') el.htmlFor = value;
    else if (key === 'text') el.textContent = value;
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2).toLowerCase(), value);
    else if (key === 'value' && el instanceof HTMLInputElement) { el.defaultValue = String(value); el.value = String(value); }
    else if (key === 'value' && el instanceof HTMLTextAreaElement) { el.defaultValue = String(value); el.value = String(value); }
    else if (key === 'checked' && el instanceof HTMLInputElement) { el.defaultChecked = value; el.checked = value; }
    else if (['value', 'selected', 'disabled', 'hidden', 'multiple', 'required'].includes(key)) el[key] = value;
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : String(child));
  }
}

let lastId = 0;
/** A new element id, unique in the page. */
export const uid = (prefix = 'id') => `${prefix}-${++lastId}`;

/** A label, its control and an optional hint, tied together (for, aria-describedby). */
export function field(labelText, control, { hint, className } = {}) {
  if (!control.id) control.id = uid('field');
  const hintEl = hint ? h('p', { class: 'hint', id: uid('hint') }, hint) : null;
  if (hintEl) control.setAttribute('aria-describedby', hintEl.id);
  return h('div', { class: `field${className ? ` ${className}` : ''}` }, h('label', { for: control.id }, labelText), control, hintEl);
}

/** A checkbox (or radio) inside its label. */
export function check(labelText, input) {
  return h('label', { class: 'check' }, input, h('span', {}, labelText));
}

/** An error line for a form: role=alert, empty (and hidden) until `show(text)`. */
export function formError() {
  const el = h('p', { class: 'form-error', role: 'alert', hidden: true });
  return {
    el,
    show(text) { el.textContent = text; el.hidden = !text; },
    clear() { el.textContent = ''; el.hidden = true; },
  };
}

/** A status line for a part of a page (role=status, polite). */
export function statusLine(className = 'status-line') {
  const el = h('p', { class: className, role: 'status', 'aria-live': 'polite' });
  return {
    el,
    ok(text) { el.dataset.kind = 'ok'; el.textContent = text; },
    error(text) { el.dataset.kind = 'error'; el.textContent = text; },
    info(text) { el.dataset.kind = 'info'; el.textContent = text; },
    clear() { el.textContent = ''; delete el.dataset.kind; },
  };
}

let noticeTimer = null;
/** The page-wide status line under the header (announced politely); cleared after a while. */
export function notice(text, kind = 'info') {
  const el = document.getElementById('notice');
  if (!el) return;
  clearTimeout(noticeTimer);
  el.dataset.kind = kind;
  el.textContent = text;
  if (text) noticeTimer = setTimeout(() => { el.textContent = ''; delete el.dataset.kind; }, 10000);
}

/**
 * Runs `work` with `button` disabled and marked busy (and its text replaced by `busyText`
 * meanwhile); answers what `work` answers.
 */
export async function busy(button, work, busyText) {
  const text = button.textContent;
  button.disabled = true;
  button.setAttribute('aria-busy', 'true');
  if (busyText) button.textContent = busyText;
  try {
    return await work();
  } finally {
    button.disabled = false;
    button.removeAttribute('aria-busy');
    if (busyText) button.textContent = text;
  }
}

/**
 * Asks before something that cannot be undone. Answers true when confirmed. Cancel has the
 * focus first; Escape cancels.
 */
export function confirmDialog({ title, message, confirm = 'Delete', danger = true }) {
  return new Promise((resolve) => {
    const titleId = uid('dialog-title');
    const messageId = uid('dialog-message');
    const dialog = h('dialog', { class: 'dialog', 'aria-labelledby': titleId, 'aria-describedby': messageId },
      h('form', { method: 'dialog' },
        h('h2', { id: titleId }, title),
        h('p', { id: messageId }, message),
        h('div', { class: 'actions' },
          h('button', { type: 'submit', value: 'cancel', autofocus: true }, 'Cancel'),
          h('button', { type: 'submit', value: 'confirm', class: danger ? 'danger' : 'primary' }, confirm))));
    const opener = document.activeElement;
    dialog.addEventListener('close', () => {
      const confirmed = dialog.returnValue === 'confirm';
      dialog.remove();
      if (opener instanceof HTMLElement && opener.isConnected) opener.focus();
      resolve(confirmed);
    });
    document.body.append(dialog);
    dialog.showModal();
  });
}

// --- Formatting ---

export function formatDate(iso) {
  if (!iso) return '';
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return '';
  return date.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' });
}

/** "just now", "25 s ago", "3 min ago", "2 h ago", or the date. */
export function timeAgo(iso, now = Date.now()) {
  if (!iso) return 'never';
  const then = new Date(iso).getTime();
  if (Number.isNaN(then)) return '';
  const seconds = Math.max(0, Math.round((now - then) / 1000));
  if (seconds < 5) return 'just now';
  if (seconds < 60) return `${seconds} s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
  return formatDate(iso);
}

export function formatBytes(n) {
  if (!Number.isFinite(n) || n < 0) return '';
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(0)} KB`;
  if (n < 1024 * 1024 * 1024) return `${(n / 1024 / 1024).toFixed(1)} MB`;
  return `${(n / 1024 / 1024 / 1024).toFixed(2)} GB`;
}

export const plural = (n, one, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;

export const ROLE_NAMES = { owner: 'Owner', contributor: 'Contributor', viewer: 'Viewer' };

/** What a role may do, in words. */
export const ROLE_HELP = 'Contributors may add and remove photos; viewers may look. Only the owner renames, deletes and manages members.';

/** An element whose content is replaced by `render()` each time it is called. */
export function replaceChildren(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}
