// Pieces the views share: album grids that page in as they scroll, track lists with their
// actions (play, play next, add to the queue or a playlist, heart), and the playlist picker.
import * as api from "./api.js";
import { clock, coverImage, h, plural, replace, toast } from "./dom.js";
import { heartButton } from "./favorites.js";

export const PAGE = 60;
let player = null; // set by main.js

export function usePlayer(p) { player = p; }
export const getPlayer = () => player;

export const link = (href, text, attrs = {}) => h("a", { href, ...attrs }, text);
export const albumHref = (id) => `#/album/${encodeURIComponent(id)}`;
export const artistHref = (id) => `#/artist/${encodeURIComponent(id)}`;

// A list that asks for the next page when its end scrolls into view: however big the library,
// the page holds what was seen. `load(offset)` answers {items, total?}; `render(item)` an element.
export function pagedList(container, load, render, { onFirst } = {}) {
  const end = h("div", { class: "list-end", "aria-hidden": "true" });
  const parent = container.parentNode;
  parent.append(end);
  let offset = 0, busy = false, done = false, first = true;
  const more = async () => {
    if (busy || done || !container.isConnected) return;
    busy = true;
    try {
      const page = await load(offset);
      container.append(...page.items.map(render));
      offset += page.items.length;
      done = page.items.length < PAGE || (page.total !== undefined && offset >= page.total);
      if (first) { first = false; onFirst?.(page); }
      if (!page.items.length && offset === 0) container.append(h("p", { class: "muted empty" }, "Nothing here yet."));
    } catch (error) {
      done = true;
      container.append(h("p", { class: "error" }, error.message));
    } finally {
      busy = false;
    }
    if (done || !container.isConnected) { observer.disconnect(); end.remove(); }
    else if (end.getBoundingClientRect().top < innerHeight * 2) more();
  };
  const observer = new IntersectionObserver((entries) => entries.some((e) => e.isIntersecting) && more(),
                                            { rootMargin: "800px" });
  observer.observe(end);
  return more();
}

export function albumCard(album) {
  const card = h("article", { class: "card" },
    h("a", { href: albumHref(album.id), class: "card-link" },
      coverImage(album, 300),
      h("span", { class: "card-title" }, album.title)),
    h("a", { href: artistHref(album.artist_id), class: "card-sub muted" }, album.artist),
    h("button", { class: "icon play-over", type: "button", "aria-label": `Play ${album.title}`,
                  onclick: () => playAlbum(album.id) }, "▶"));
  return card;
}

export function albumGrid() { return h("div", { class: "grid", role: "list" }); }

export async function albumTracks(id) {
  return (await api.get(`/api/v1/albums/${encodeURIComponent(id)}`)).tracks;
}

export async function playAlbum(id, { shuffle = false } = {}) {
  const tracks = await albumTracks(id).catch((e) => toast(e.message, "error"));
  if (!tracks?.length) return;
  player.playTracks(tracks, 0);
  if (shuffle) player.queue.toggleShuffle();
}

export function artistRow(artist) {
  return h("li", { class: "row" },
    h("a", { href: artistHref(artist.id) }, artist.name),
    h("span", { class: "muted" }, `${plural(artist.album_count ?? 0, "album")} · ${plural(artist.track_count ?? 0, "track")}`),
    heartButton(h, "artists", artist, artist.name));
}

// A table of tracks; a click (or Enter) plays the list from that track. `extra(track, i)` adds
// controls of the view's own (a playlist's remove and move).
export function trackTable(tracks, { showAlbum = true, extra = null } = {}) {
  const body = h("tbody");
  tracks.forEach((track, i) => body.append(trackRow(tracks, track, i, showAlbum, extra)));
  return h("table", { class: "tracks" },
    h("thead", {}, h("tr", {},
      h("th", { class: "num", scope: "col" }, "#"), h("th", { scope: "col" }, "Title"),
      showAlbum ? h("th", { class: "wide", scope: "col" }, "Album") : null,
      h("th", { class: "num", scope: "col" }, "Time"), h("th", { scope: "col" }, h("span", { class: "sr" }, "Actions")))),
    body);
}

function trackRow(tracks, track, i, showAlbum, extra) {
  const play = () => player.playTracks(tracks, i);
  const row = h("tr", { class: "track", dataset: { id: track.id }, tabindex: "0",
                        ondblclick: play, onkeydown: (e) => e.key === "Enter" && e.target === row && play() },
    h("td", { class: "num" }, h("button", { class: "icon row-play", type: "button", "aria-label": `Play ${track.title}`, onclick: play },
      h("span", { class: "n" }, track.track_number || i + 1), h("span", { class: "p", "aria-hidden": "true" }, "▶"))),
    h("td", {}, h("div", { class: "t-title" }, track.title),
      h("a", { class: "muted", href: artistHref(track.artist_id) }, track.artist)),
    showAlbum ? h("td", { class: "wide" }, h("a", { href: albumHref(track.album_id) }, track.album)) : null,
    h("td", { class: "num muted" }, clock(track.duration)),
    h("td", { class: "actions" }, heartButton(h, "tracks", track, track.title), trackMenu(track), extra?.(track, i)));
  return row;
}

// The ⋯ menu of a track: play next, add to the queue, add to a playlist.
export function trackMenu(track) {
  return menuButton(`More for ${track.title}`, [
    ["Play next", () => { player.queue.playNext([track]); toast(`${track.title} plays next`); }],
    ["Add to queue", () => { player.queue.add([track]); toast(`Added ${track.title} to the queue`); }],
    ["Add to playlist…", () => pickPlaylist([track])],
    ["Go to album", () => { location.hash = albumHref(track.album_id); }],
  ]);
}

export function menuButton(label, items) {
  const menu = h("div", { class: "menu", role: "menu", hidden: true });
  const button = h("button", { class: "icon", type: "button", "aria-label": label, "aria-haspopup": "menu",
                               "aria-expanded": "false" }, "⋯");
  const close = () => { menu.hidden = true; button.setAttribute("aria-expanded", "false"); };
  for (const [text, act] of items) {
    menu.append(h("button", { type: "button", role: "menuitem", onclick: (e) => { e.stopPropagation(); close(); act(); button.focus(); } }, text));
  }
  menu.addEventListener("focusout", (e) => { // tabbed away: it closes
    if (!menu.hidden && !menu.contains(e.relatedTarget) && e.relatedTarget !== button && e.relatedTarget) close();
  });
  menu.addEventListener("keydown", (e) => {
    const all = [...menu.children], at = all.indexOf(document.activeElement);
    if (e.key === "Escape") { close(); button.focus(); }
    else if (e.key === "ArrowDown") all[(at + 1) % all.length].focus();
    else if (e.key === "ArrowUp") all[(at - 1 + all.length) % all.length].focus();
    else return;
    e.preventDefault();
    e.stopPropagation();
  });
  button.addEventListener("click", (e) => {
    e.stopPropagation();
    const open = menu.hidden;
    document.querySelectorAll(".menu:not([hidden])").forEach((m) => { m.hidden = true; });
    menu.hidden = !open;
    button.setAttribute("aria-expanded", String(open));
    if (open) menu.firstChild.focus();
  });
  return h("span", { class: "menu-wrap" }, button, menu);
}

document.addEventListener("click", () => document.querySelectorAll(".menu:not([hidden])").forEach((m) => { m.hidden = true; }));

// The dialog that adds tracks to one of the listener's playlists, or to a new one.
export async function pickPlaylist(tracks) {
  if (!api.session.token) return toast("Sign in to keep playlists", "error");
  const dialog = document.getElementById("pick");
  const list = dialog.querySelector("ul");
  replace(list, h("li", { class: "muted" }, "Loading…"));
  dialog.querySelector("input").value = ""; // not the name given last time
  dialog.showModal();
  const ids = tracks.map((t) => t.id);
  const add = async (playlist) => {
    dialog.close();
    try {
      await api.send("PATCH", `/api/v1/playlists/${encodeURIComponent(playlist.id)}`, { append: ids });
      toast(`Added ${plural(ids.length, "track")} to ${playlist.name}`);
    } catch (error) { toast(error.message, "error"); }
  };
  const create = async () => {
    const name = dialog.querySelector("input").value.trim();
    if (!name) return;
    dialog.close();
    try {
      await api.send("POST", "/api/v1/playlists", { name, track_ids: ids });
      toast(`Made the playlist ${name}`);
    } catch (error) { toast(error.message, "error"); }
  };
  dialog.querySelector("form").onsubmit = (e) => { e.preventDefault(); create(); };
  const mine = await api.get("/api/v1/playlists?limit=500").catch(() => ({ items: [] }));
  replace(list, mine.items.map((p) => h("li", {}, h("button", { type: "button", onclick: () => add(p) }, p.name,
    h("span", { class: "muted" }, ` · ${plural(p.track_count, "track")}`)))));
}
