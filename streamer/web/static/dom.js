// Small DOM helpers: build elements without innerHTML (no markup from tags ever reaches the parser).

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key in el && typeof value !== "string") el[key] = value;
    else el.setAttribute(key, value === true ? "" : value);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
}

export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export function clock(seconds) {
  if (!Number.isFinite(seconds) || seconds < 0) seconds = 0;
  const s = Math.floor(seconds % 60), m = Math.floor(seconds / 60) % 60, hours = Math.floor(seconds / 3600);
  const mm = hours ? String(m).padStart(2, "0") : String(m);
  return `${hours ? hours + ":" : ""}${mm}:${String(s).padStart(2, "0")}`;
}

export function plural(n, word) {
  return `${n.toLocaleString()} ${word}${n === 1 ? "" : "s"}`;
}

export function debounce(fn, ms) {
  let timer = 0;
  return (...args) => { clearTimeout(timer); timer = setTimeout(() => fn(...args), ms); };
}

// An element that announces messages to screen readers and shows them briefly.
export function toast(message, kind = "info") {
  const box = document.getElementById("toast");
  box.replaceChildren(h("div", { class: `toast ${kind}` }, message));
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => box.replaceChildren(), 5000);
}

// Which albums have a cover, as album answers said (a track alone cannot tell a folder image).
export const knownCovers = new Map();

// A cover image (lazy, thumbnail size from the server) or a blank square with the title's initial.
export function coverImage(album, size, extraClass = "") {
  if (album && "cover_url" in album) knownCovers.set(album.id, !!album.cover_url); // an album answer
  const has = album && (knownCovers.get(album.id) ?? album.has_cover);
  if (!has) return h("div", { class: `cover blank ${extraClass}`, "aria-hidden": "true" }, (album?.title || "?").slice(0, 1));
  const src = `/api/v1/albums/${encodeURIComponent(album.id)}/cover?size=${size}`;
  return h("img", { class: `cover ${extraClass}`, src, alt: "", loading: "lazy", decoding: "async", width: size, height: size });
}

// A new id for Idempotency-Key: a retried write is applied once.
export function newKey() {
  return crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random().toString(16).slice(2)}`;
}
