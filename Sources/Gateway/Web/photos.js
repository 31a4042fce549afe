// Photos: upload (picker, drop zone, progress per photo), the grid of your photos (newest
// first, paged, thumbnails lazily), and one photo (hd version, details, add to an album, delete).

import { API, allPages, describe, isAbort, session } from './api.js';
import { photoDocument, photoImage, forgetPhoto } from './thumbs.js';
import { guardPageDrops, uploadPanel } from './upload.js';
import { busy, confirmDialog, field, formatBytes, formatDate, h, notice, statusLine, uid } from './ui.js';

const PAGE_SIZE = 30;

/** The albums the signed-in user may add photos to (owner or contributor), by name. */
export async function writableAlbums(signal) {
  const me = session.get()?.user_id;
  const albums = await allPages((token) => API.albums(token, signal), 'albums');
  return albums
    .filter((album) => album.role === 'owner' || album.role === 'contributor' || (!album.role && album.owner_id === me))
    .sort((a, b) => (b.is_default - a.is_default) || a.name.localeCompare(b.name));
}

/** "IMG_1234.jpg, taken 3 May 2024, 14:02" */
export function photoAlt(name, takenAt) {
  const taken = formatDate(takenAt);
  return taken ? `${name}, taken ${taken}` : name;
}

/** A grid cell: the thumbnail, a link to the photo. */
export function photoCell(fileId, name, takenAt, { from } = {}) {
  const href = `#/photos/${encodeURIComponent(fileId)}${from ? `?album=${encodeURIComponent(from)}` : ''}`;
  return h('li', { class: 'photo-cell', dataset: { fileId } },
    h('a', { href, class: 'photo-link' }, photoImage(fileId, { alt: photoAlt(name, takenAt) })));
}

export async function renderPhotos(ctx) {
  const { main, signal } = ctx;
  ctx.cleanup(guardPageDrops());
  const gridTitle = uid('grid-title');
  const grid = h('ul', { class: 'photo-grid', id: 'photo-grid', 'aria-labelledby': gridTitle });
  const more = h('button', { type: 'button', class: 'more', hidden: true }, 'Show more photos');
  const empty = h('p', { class: 'muted', hidden: true },
    'No photos yet. Choose some above: each one appears here once it is uploaded.');
  const status = statusLine();
  const shown = new Set();

  const panel = uploadPanel({
    onUploaded(file) {
      if (shown.has(file.file_id)) return;
      shown.add(file.file_id);
      grid.prepend(photoCell(file.file_id, file.file_name, file.taken_at));
      empty.hidden = true;
    },
  });
  ctx.cleanup(() => panel.uploader.close());

  main.replaceChildren(
    h('h1', { tabindex: -1 }, 'Photos'),
    panel.el,
    h('section', { class: 'photos', 'aria-labelledby': gridTitle },
      h('h2', { id: gridTitle }, 'Your photos'), status.el, empty, grid, more));

  // The albums to upload into (the list fills in when they arrive; "My photos" meanwhile).
  writableAlbums(signal).then((albums) => {
    for (const album of albums) {
      if (album.is_default) continue; // "My photos" is the first choice already
      panel.albumSelect.append(h('option', { value: album.album_id }, album.name));
    }
    const wanted = ctx.query.get('album');
    if (wanted && albums.some((a) => a.album_id === wanted)) panel.albumSelect.value = wanted;
  }, (err) => { if (!isAbort(err)) status.error(`Albums could not be loaded: ${describe(err)}`); });

  let nextToken = null;
  const loadPage = async () => {
    const page = await API.files(nextToken, PAGE_SIZE, signal);
    for (const file of page.files ?? []) {
      if (shown.has(file.file_id)) continue;
      shown.add(file.file_id);
      grid.append(photoCell(file.file_id, file.file_name, file.taken_at));
    }
    nextToken = page.next_page_token ?? null;
    more.hidden = !nextToken;
    empty.hidden = shown.size > 0;
  };
  more.addEventListener('click', () => busy(more, async () => {
    try {
      await loadPage();
      status.clear();
    } catch (err) {
      if (!isAbort(err)) status.error(`More photos could not be loaded: ${describe(err)}`);
    }
  }, 'Loading…'));

  try {
    status.info('Loading your photos…');
    await loadPage();
    status.clear();
  } catch (err) {
    if (!isAbort(err)) status.error(`Your photos could not be loaded: ${describe(err)}`);
  }
}

/** "Canon EOS 5D" from {make: "Canon", model: "Canon EOS 5D"} (the model often repeats the make). */
function cameraName(camera) {
  const make = camera?.make?.trim() ?? '';
  const model = camera?.model?.trim() ?? '';
  if (!model) return make;
  return make && !model.toLowerCase().startsWith(make.toLowerCase()) ? `${make} ${model}` : model;
}

function place(gps) {
  if (!gps || !Number.isFinite(gps.latitude) || !Number.isFinite(gps.longitude)) return null;
  const lat = gps.latitude.toFixed(5);
  const lon = gps.longitude.toFixed(5);
  const map = `https://www.openstreetmap.org/?mlat=${lat}&mlon=${lon}#map=15/${lat}/${lon}`;
  return [
    `${Math.abs(gps.latitude).toFixed(4)}° ${gps.latitude >= 0 ? 'N' : 'S'}, `
      + `${Math.abs(gps.longitude).toFixed(4)}° ${gps.longitude >= 0 ? 'E' : 'W'} `,
    h('a', { href: map, target: '_blank', rel: 'noopener noreferrer' }, 'show on a map (opens a new tab)'),
  ];
}

export async function renderPhoto(ctx) {
  const { main, signal } = ctx;
  const id = ctx.params[0];
  const fromAlbum = ctx.query.get('album');
  const back = fromAlbum
    ? h('a', { class: 'back', href: `#/albums/${encodeURIComponent(fromAlbum)}` }, '← Back to the album')
    : h('a', { class: 'back', href: '#/photos' }, '← All photos');
  const heading = h('h1', { tabindex: -1, class: 'photo-title' }, 'Photo');
  const status = statusLine();
  main.replaceChildren(back, heading, status.el);

  status.info('Loading…');
  // The file record (your own photos: camera, place, size) and the metadata document (versions;
  // also readable for a photo another member added to a shared album).
  const [fileAnswer, docAnswer] = await Promise.allSettled([API.file(id, signal), photoDocument(id, { fresh: true })]);
  if (signal.aborted) return;
  const file = fileAnswer.status === 'fulfilled' ? fileAnswer.value : null;
  const doc = docAnswer.status === 'fulfilled' ? docAnswer.value : null;
  if (!file && !doc) {
    heading.textContent = 'Photo not found';
    status.error(describe(fileAnswer.reason, { 404: 'This photo does not exist any more, or it is not shared with you.' }));
    return;
  }
  status.clear();
  const name = file?.file_name ?? doc?.file_name ?? 'Photo';
  const takenAt = file?.taken_at ?? doc?.taken_at;
  heading.textContent = name;
  ctx.setTitle(name);

  const rows = [];
  const row = (term, ...value) => rows.push(h('dt', {}, term), h('dd', {}, ...value));
  row('Taken', formatDate(takenAt) || 'Unknown');
  if (file) {
    const camera = cameraName(file.camera);
    if (camera) row('Camera', camera);
    const where = place(file.gps);
    row('Place', ...(where ?? ['Unknown']));
    row('Size', `${file.width} × ${file.height} pixels, ${formatBytes(file.size)}`);
    row('Uploaded', formatDate(file.created_at));
  } else if (doc?.width && doc?.height) {
    row('Size', `${doc.width} × ${doc.height} pixels`);
  }
  const labels = doc?.ai_metadata?.labels ?? file?.ai_metadata?.labels ?? [];
  if (labels.length) row('Labels', labels.join(', '));

  const figure = h('figure', { class: 'photo-view' },
    photoImage(id, { alt: photoAlt(name, takenAt), size: 'hd', className: 'hd', eager: true }));
  const details = h('section', { class: 'card', 'aria-label': 'Details' }, h('dl', { class: 'details' }, rows));
  main.append(figure, details);

  // Add to an album you may add to.
  const addStatus = statusLine();
  const select = h('select', { id: uid('album'), required: true });
  const addButton = h('button', { type: 'submit', class: 'primary' }, 'Add to album');
  const addForm = h('form', { class: 'card inline-form', 'aria-label': 'Add to an album' },
    h('h2', {}, 'Add to an album'), field('Album', select), addButton, addStatus.el);
  addForm.addEventListener('submit', (event) => {
    event.preventDefault();
    const option = select.selectedOptions[0];
    if (!select.value) return;
    busy(addButton, async () => {
      try {
        await API.addAlbumPhoto(select.value, id);
        addStatus.ok(`Added to ${option.textContent}.`);
      } catch (err) {
        addStatus.error(describe(err, { 403: 'You may only look at that album, not add photos to it.' }));
      }
    }, 'Adding…');
  });
  main.append(addForm);
  writableAlbums(signal).then((albums) => {
    const choices = albums.filter((a) => !a.is_default);
    if (!choices.length) {
      addForm.replaceChildren(h('h2', {}, 'Add to an album'),
        h('p', { class: 'muted' }, 'You have no album to add it to yet. ', h('a', { href: '#/albums' }, 'Create an album'), '.'));
      return;
    }
    select.append(...choices.map((a) => h('option', { value: a.album_id }, a.name)));
    if (fromAlbum && choices.some((a) => a.album_id === fromAlbum)) select.value = fromAlbum;
  }, (err) => { if (!isAbort(err)) addStatus.error(`Albums could not be loaded: ${describe(err)}`); });

  // Delete: only your own photos (the file record answered).
  if (file) {
    const deleteButton = h('button', { type: 'button', class: 'danger' }, 'Delete photo');
    const deleteStatus = statusLine();
    deleteButton.addEventListener('click', async () => {
      const confirmed = await confirmDialog({
        title: 'Delete this photo?',
        message: `“${name}” will be removed from every album and every frame showing it. This cannot be undone.`,
        confirm: 'Delete photo',
      });
      if (!confirmed) return;
      await busy(deleteButton, async () => {
        try {
          await API.deleteFile(id);
          forgetPhoto(id);
          notice(`“${name}” was deleted.`, 'ok');
          ctx.navigate(fromAlbum ? `#/albums/${encodeURIComponent(fromAlbum)}` : '#/photos');
        } catch (err) {
          deleteStatus.error(describe(err));
        }
      }, 'Deleting…');
    });
    main.append(h('section', { class: 'card danger-zone', 'aria-label': 'Delete' },
      h('h2', {}, 'Delete'), h('p', { class: 'muted' }, 'Deleting removes the photo everywhere, for good.'),
      deleteButton, deleteStatus.el));
  }
}
