// Albums: the list (create one), and one album: its photos (upload straight into it, add
// photos uploaded before, remove), rename and delete (the owner), and its members by e-mail
// with their roles (the owner adds, changes and removes them; anyone else may leave). What each
// role may do is the API's to enforce; the page only hides what the role cannot do.

import { API, allPages, describe, isAbort, session } from './api.js';
import { photoImage } from './thumbs.js';
import { photoAlt, photoCell } from './photos.js';
import { guardPageDrops, uploadPanel } from './upload.js';
import {
  ROLE_HELP, ROLE_NAMES, busy, confirmDialog, field, formError, h, notice, plural, statusLine,
} from './ui.js';

const roleOf = (album) => album.role ?? (album.owner_id === session.get()?.user_id ? 'owner' : 'viewer');

function albumItem(album) {
  const cover = album.cover_file_id
    ? photoImage(album.cover_file_id, { alt: '' })
    : h('span', { class: 'thumb cover-placeholder', 'aria-hidden': 'true' });
  return h('li', { class: 'album-item', dataset: { albumId: album.album_id } },
    h('a', { href: `#/albums/${encodeURIComponent(album.album_id)}`, class: 'album-link' },
      cover, h('span', { class: 'album-name' }, album.name)),
    h('p', { class: 'muted album-meta' },
      `${plural(album.photo_count ?? 0, 'photo')} · ${ROLE_NAMES[roleOf(album)] ?? ''}${album.is_default ? ' · uploads without an album go here' : ''}`));
}

export async function renderAlbums(ctx) {
  const { main, signal } = ctx;
  const list = h('ul', { class: 'album-list', id: 'album-list', 'aria-label': 'Your albums' });
  const status = statusLine();
  const name = h('input', { type: 'text', required: true, maxlength: 200, autocomplete: 'off' });
  const description = h('textarea', { rows: 2, maxlength: 2000 });
  const create = h('button', { type: 'submit', class: 'primary' }, 'Create album');
  const error = formError();
  const form = h('form', { class: 'card', 'aria-labelledby': 'new-album-title' },
    h('h2', { id: 'new-album-title' }, 'New album'),
    field('Album name', name, { hint: 'For example “Family” or “Summer 2025”.' }),
    field('Description (optional)', description),
    error.el, create);
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    error.clear();
    busy(create, async () => {
      try {
        const album = await API.createAlbum(name.value.trim(), description.value.trim());
        list.prepend(albumItem(album));
        form.reset();
        status.ok(`Album “${album.name}” created. Open it to add photos and members.`);
      } catch (err) {
        error.show(describe(err));
      }
    }, 'Creating…');
  });
  main.replaceChildren(h('h1', { tabindex: -1 }, 'Albums'), form,
    h('section', { 'aria-labelledby': 'albums-title' }, h('h2', { id: 'albums-title' }, 'Your albums'), status.el, list));

  try {
    const albums = await allPages((token) => API.albums(token, signal), 'albums');
    list.replaceChildren(...albums.map(albumItem));
    if (!albums.length) status.info('No albums yet.');
  } catch (err) {
    if (!isAbort(err)) status.error(`Your albums could not be loaded: ${describe(err)}`);
  }
}

export async function renderAlbum(ctx) {
  const { main, signal } = ctx;
  const id = ctx.params[0];
  const heading = h('h1', { tabindex: -1 }, 'Album');
  const status = statusLine();
  main.replaceChildren(h('a', { class: 'back', href: '#/albums' }, '← All albums'), heading, status.el);
  let album;
  try {
    album = await API.album(id, signal);
  } catch (err) {
    if (isAbort(err)) return;
    heading.textContent = 'Album not found';
    status.error(describe(err, { 404: 'This album does not exist any more, or you are not one of its members.' }));
    return;
  }
  const role = roleOf(album);
  const owner = role === 'owner';
  const canAdd = owner || role === 'contributor';
  heading.textContent = album.name;
  ctx.setTitle(album.name);
  const meta = h('p', { class: 'muted' });
  const describeAlbum = () => {
    meta.textContent = `${plural(album.photo_count ?? 0, 'photo')} · You are its ${(ROLE_NAMES[role] ?? role).toLowerCase()}.`;
  };
  describeAlbum();
  const about = h('p', { class: 'album-description' }, album.description || '');
  about.hidden = !album.description;
  main.append(meta, about);
  if (owner) main.append(ownerTools(ctx, album, { heading, about }));

  main.append(photosSection(ctx, album, canAdd, () => { album.photo_count = (album.photo_count ?? 0) + 1; describeAlbum(); }));
  main.append(membersSection(ctx, album, owner));
}

/** Rename / describe, and delete. */
function ownerTools(ctx, album, { heading, about }) {
  const name = h('input', { type: 'text', required: true, maxlength: 200, value: album.name });
  const description = h('textarea', { rows: 2, maxlength: 2000, value: album.description ?? '' });
  const save = h('button', { type: 'submit', class: 'primary' }, 'Save');
  const error = formError();
  const saved = statusLine();
  const form = h('form', {}, field('Album name', name), field('Description', description), error.el, save, saved.el);
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    error.clear();
    busy(save, async () => {
      try {
        const updated = await API.updateAlbum(album.album_id, { name: name.value.trim(), description: description.value.trim() });
        album.name = updated.name;
        album.description = updated.description;
        heading.textContent = updated.name;
        ctx.setTitle(updated.name);
        about.textContent = updated.description;
        about.hidden = !updated.description;
        saved.ok('Saved.');
      } catch (err) {
        error.show(describe(err));
      }
    }, 'Saving…');
  });
  const section = h('details', { class: 'card' }, h('summary', {}, 'Rename or describe the album'), form);
  if (album.is_default) return section;

  const remove = h('button', { type: 'button', class: 'danger' }, 'Delete album');
  const removeStatus = statusLine();
  remove.addEventListener('click', async () => {
    const confirmed = await confirmDialog({
      title: `Delete the album “${album.name}”?`,
      message: 'Its photos stay in the photos of those who uploaded them; frames showing the album stop showing it; its members lose it. This cannot be undone.',
      confirm: 'Delete album',
    });
    if (!confirmed) return;
    busy(remove, async () => {
      try {
        await API.deleteAlbum(album.album_id);
        notice(`Album “${album.name}” deleted.`, 'ok');
        ctx.navigate('#/albums');
      } catch (err) {
        removeStatus.error(describe(err));
      }
    }, 'Deleting…');
  });
  return h('div', {}, section, h('div', { class: 'card danger-zone' }, remove, removeStatus.el));
}

function photosSection(ctx, album, canAdd, onAdded) {
  const { signal } = ctx;
  const grid = h('ul', { class: 'photo-grid', id: 'album-photos', 'aria-labelledby': 'album-photos-title' });
  const more = h('button', { type: 'button', class: 'more', hidden: true }, 'Show more photos');
  const status = statusLine();
  const shown = new Set();
  const cell = (fileId, name, takenAt) => {
    const li = photoCell(fileId, name, takenAt, { from: album.album_id });
    if (canAdd) {
      const remove = h('button', { type: 'button', class: 'small', 'aria-label': `Remove ${name} from the album` }, 'Remove');
      remove.addEventListener('click', () => busy(remove, async () => {
        try {
          await API.removeAlbumPhoto(album.album_id, fileId);
          li.remove();
          shown.delete(fileId);
          status.ok(`${name} removed from the album (it stays in your photos).`);
        } catch (err) {
          status.error(describe(err));
        }
      }));
      li.append(remove);
    }
    return li;
  };
  const add = (fileId, name, takenAt) => {
    if (shown.has(fileId)) return;
    shown.add(fileId);
    grid.prepend(cell(fileId, name, takenAt));
    onAdded();
  };

  const section = h('section', { 'aria-labelledby': 'album-photos-title' }, h('h2', { id: 'album-photos-title' }, 'Photos'));
  if (canAdd) {
    ctx.cleanup(guardPageDrops());
    const panel = uploadPanel({ fixedAlbum: album, onUploaded: (file) => add(file.file_id, file.file_name, file.taken_at) });
    ctx.cleanup(() => panel.uploader.close());
    section.append(panel.el, picker(ctx, album, add));
  }
  section.append(status.el, grid, more);

  let nextToken = null;
  const loadPage = async () => {
    const page = await API.albumPhotos(album.album_id, nextToken, signal);
    for (const photo of page.photos ?? []) {
      if (shown.has(photo.file_id)) continue;
      shown.add(photo.file_id);
      grid.append(cell(photo.file_id, photo.file_name, photo.taken_at));
    }
    nextToken = page.next_page_token ?? null;
    more.hidden = !nextToken;
    if (!shown.size) status.info(canAdd ? 'No photos in this album yet: add some above.' : 'No photos in this album yet.');
  };
  more.addEventListener('click', () => busy(more, () => loadPage().catch((err) => {
    if (!isAbort(err)) status.error(describe(err));
  }), 'Loading…'));
  loadPage().catch((err) => { if (!isAbort(err)) status.error(`The album's photos could not be loaded: ${describe(err)}`); });
  return section;
}

/** "Add photos you uploaded before": your photos with a checkbox each. */
function picker(ctx, album, added) {
  const details = h('details', { class: 'card picker' }, h('summary', {}, 'Add photos you uploaded before'));
  const list = h('ul', { class: 'photo-grid pick-grid', 'aria-label': 'Your photos' });
  const more = h('button', { type: 'button', class: 'more', hidden: true }, 'Show more photos');
  const addButton = h('button', { type: 'button', class: 'primary' }, 'Add the chosen photos');
  const status = statusLine();
  details.append(list, more, addButton, status.el);
  let nextToken = null;
  let loaded = false;
  const loadPage = async () => {
    const page = await API.files(nextToken, 30, ctx.signal);
    for (const file of page.files ?? []) {
      const box = h('input', { type: 'checkbox', value: file.file_id, dataset: { name: file.file_name, takenAt: file.taken_at ?? '' } });
      list.append(h('li', { class: 'photo-cell' },
        h('label', { class: 'pick' }, box, photoImage(file.file_id, { alt: photoAlt(file.file_name, file.taken_at) }))));
    }
    nextToken = page.next_page_token ?? null;
    more.hidden = !nextToken;
    if (!list.children.length) status.info('You have not uploaded any photos yet.');
  };
  details.addEventListener('toggle', () => {
    if (!details.open || loaded) return;
    loaded = true;
    loadPage().catch((err) => { if (!isAbort(err)) status.error(describe(err)); });
  });
  more.addEventListener('click', () => busy(more, () => loadPage().catch((err) => status.error(describe(err))), 'Loading…'));
  addButton.addEventListener('click', () => {
    const chosen = Array.from(list.querySelectorAll('input[type=checkbox]:checked'));
    if (!chosen.length) { status.error('Choose at least one photo first.'); return; }
    busy(addButton, async () => {
      let done = 0;
      for (const box of chosen) {
        try {
          await API.addAlbumPhoto(album.album_id, box.value);
          box.checked = false;
          added(box.value, box.dataset.name, box.dataset.takenAt || null);
          done++;
        } catch (err) {
          status.error(`${done ? `${plural(done, 'photo')} added; then: ` : ''}${describe(err)}`);
          return;
        }
      }
      status.ok(`${plural(done, 'photo')} added to ${album.name}.`);
    }, 'Adding…');
  });
  return details;
}

function membersSection(ctx, album, owner) {
  const me = session.get()?.user_id;
  const list = h('ul', { class: 'member-list', 'aria-labelledby': 'members-title' });
  const status = statusLine();
  const section = h('section', { 'aria-labelledby': 'members-title' },
    h('h2', { id: 'members-title' }, 'Members'), h('p', { class: 'hint' }, ROLE_HELP), status.el, list);

  const load = async () => {
    const answer = await API.members(album.album_id, ctx.signal);
    list.replaceChildren(...(answer.members ?? []).map(member));
  };
  const member = (m) => {
    const who = m.name ? `${m.name} (${m.email})` : m.email;
    const li = h('li', { class: 'member' },
      h('span', { class: 'member-name' }, who),
      h('span', { class: `badge role-${m.role}` }, ROLE_NAMES[m.role] ?? m.role ?? ''));
    if (owner && m.role !== 'owner') {
      const other = m.role === 'viewer' ? 'contributor' : 'viewer';
      const change = h('button', { type: 'button', class: 'small', 'aria-label': `Make ${who} a ${other}` }, `Make ${other}`);
      change.addEventListener('click', () => busy(change, async () => {
        try {
          await API.addMember(album.album_id, m.email, other);
          status.ok(`${who} is now a ${other}.`);
          await load();
        } catch (err) {
          status.error(describe(err));
        }
      }));
      const remove = h('button', { type: 'button', class: 'small danger', 'aria-label': `Remove ${who}` }, 'Remove');
      remove.addEventListener('click', async () => {
        const confirmed = await confirmDialog({
          title: `Remove ${who}?`, message: 'They will no longer see this album, and their frames stop showing it.', confirm: 'Remove',
        });
        if (!confirmed) return;
        busy(remove, async () => {
          try {
            await API.removeMember(album.album_id, m.user_id);
            status.ok(`${who} removed.`);
            await load();
          } catch (err) {
            status.error(describe(err));
          }
        });
      });
      li.append(h('span', { class: 'member-actions' }, change, remove));
    } else if (!owner && m.user_id === me) {
      const leave = h('button', { type: 'button', class: 'small danger' }, 'Leave album');
      leave.addEventListener('click', async () => {
        const confirmed = await confirmDialog({
          title: `Leave “${album.name}”?`, message: 'You will no longer see it, and your frames stop showing it.', confirm: 'Leave album',
        });
        if (!confirmed) return;
        busy(leave, async () => {
          try {
            await API.removeMember(album.album_id, me);
            notice(`You left “${album.name}”.`, 'ok');
            ctx.navigate('#/albums');
          } catch (err) {
            status.error(describe(err));
          }
        });
      });
      li.append(h('span', { class: 'member-actions' }, leave));
    }
    return li;
  };

  if (owner) {
    const email = h('input', { type: 'email', required: true, autocomplete: 'off', inputmode: 'email' });
    const role = h('select', {},
      h('option', { value: 'contributor' }, 'Contributor: may add photos'),
      h('option', { value: 'viewer' }, 'Viewer: may look'));
    const submit = h('button', { type: 'submit', class: 'primary' }, 'Add member');
    const error = formError();
    const form = h('form', { class: 'card', 'aria-labelledby': 'add-member-title' },
      h('h3', { id: 'add-member-title' }, 'Add a member'),
      field('Their e-mail', email, { hint: 'The e-mail of their Framecast account.' }), field('Role', role), error.el, submit);
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      error.clear();
      busy(submit, async () => {
        try {
          const added = await API.addMember(album.album_id, email.value.trim(), role.value);
          status.ok(`${added.name || added.email} is now a ${added.role ?? role.value} of this album.`);
          form.reset();
          await load();
        } catch (err) {
          error.show(describe(err, {
            404: 'There is no Framecast account with that e-mail. Ask them to sign up first, then add them.',
          }));
        }
      }, 'Adding…');
    });
    section.append(form);
  }
  load().catch((err) => { if (!isAbort(err)) status.error(`Members could not be loaded: ${describe(err)}`); });
  return section;
}

// For the frames page: the albums you can show on a frame (every album you belong to).
export async function allAlbums(signal) {
  return allPages((token) => API.albums(token, signal), 'albums');
}
