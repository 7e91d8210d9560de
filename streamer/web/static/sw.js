// The service worker: keeps the app shell so the player opens without the network, and never
// touches audio, covers or the API (those always come from the node). VERSION is filled in by
// the node from the shell's contents, so a new shell replaces the old cache.
const VERSION = "__SHELL_VERSION__";
const SHELL = __SHELL_FILES__;

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(VERSION).then((cache) => cache.addAll(SHELL)).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil(caches.keys().then((keys) => Promise.all(keys.filter((k) => k !== VERSION).map((k) => caches.delete(k))))
    .then(() => self.clients.claim()));
});

// The network first (a new shell shows at once), the cache when the node cannot be reached or a
// proxy in front of it answers for it (502, 503, 504 while it restarts).
self.addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  if (event.request.method !== "GET" || url.origin !== location.origin || !SHELL.includes(url.pathname)) return;
  const cached = () => caches.match(url.pathname);
  event.respondWith(fetch(event.request)
    .then((response) => (response.status < 500 ? response : cached().then((kept) => kept || response)))
    .catch(() => cached().then((kept) => kept || Response.error())));
});
