// The browser frame's service worker (served at /frame-sw.js, scope /frame): it keeps the
// frame's page and modules, so the page reloads without network and shows the photos it
// kept (frame-store.js puts them in Cache Storage, where this worker's cache lives too).
//
// Network first, so a frame runs today's files whenever the gateway answers (each is
// revalidated by its ETag); the kept copy when it does not answer within a few seconds.
// Nothing else is intercepted: the API, capability URLs and the MQTT WebSocket go to the network.

const SHELL_CACHE = 'framecast-frame-shell-v1';
const PHOTO_CACHE = 'framecast-frame-photos-v1'; // frame-store.js's; kept across versions
const SHELL = [
  '/frame', '/app/frame.css', '/app/frame.js', '/app/frame-core.js', '/app/frame-mqtt.js', '/app/frame-store.js',
  '/app/frame.webmanifest', '/app/icon.svg',
];
const NETWORK_WAIT_MS = 4000;

self.addEventListener('install', (event) => {
  event.waitUntil((async () => {
    const cache = await caches.open(SHELL_CACHE);
    await cache.addAll(SHELL.map((path) => new Request(path, { cache: 'no-cache', credentials: 'omit' })));
    await self.skipWaiting();
  })());
});

self.addEventListener('activate', (event) => {
  event.waitUntil((async () => {
    for (const name of await caches.keys()) {
      if (name.startsWith('framecast-frame-') && name !== SHELL_CACHE && name !== PHOTO_CACHE) await caches.delete(name);
    }
    await self.clients.claim();
  })());
});

self.addEventListener('fetch', (event) => {
  const request = event.request;
  if (request.method !== 'GET') return;
  const url = new URL(request.url);
  // The page's options (/frame?clock=1) do not change its file: it is kept once, by path.
  if (url.origin !== self.location.origin || !SHELL.includes(url.pathname)) return;
  event.respondWith(networkFirst(url.pathname, url.href));
});

async function networkFirst(path, href) {
  const cache = await caches.open(SHELL_CACHE);
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), NETWORK_WAIT_MS);
  try {
    // A new request by URL: a navigation request cannot be copied with other options.
    const response = await fetch(href, { cache: 'no-cache', credentials: 'omit', signal: controller.signal });
    if (response.ok) await cache.put(path, response.clone());
    if (response.ok || response.status === 304) return response;
    return (await cache.match(path)) ?? response;
  } catch {
    const kept = await cache.match(path);
    if (kept) return kept;
    return new Response('This frame is offline and has no saved copy of this page yet.',
      { status: 503, headers: { 'Content-Type': 'text/plain; charset=utf-8' } });
  } finally {
    clearTimeout(timer);
  }
}
