// The views, one per route of the hash (#/album/ID, #/search?q=...): each renders into <main>.
import * as api from "./api.js";
import { clock, coverImage, h, plural, replace, toast } from "./dom.js";
import { heartButton } from "./favorites.js";
import {
  PAGE, albumCard, albumGrid, albumHref, artistHref, artistRow, getPlayer, link, menuButton, pagedList,
  pickPlaylist, playAlbum, trackTable,
} from "./components.js";

const enc = encodeURIComponent;

function heading(main, title, ...rest) {
  const h1 = h("h1", { tabindex: "-1" }, title);
  replace(main, h("div", { class: "view-head" }, h1, ...rest));
  return h1;
}

function albumsView(title, path, params = {}, { mark = false } = {}) {
  return async (main) => {
    heading(main, title);
    const grid = albumGrid();
    main.append(grid);
    await pagedList(grid, (offset) => api.get(path + api.q({ ...params, limit: PAGE, offset })), albumCard,
                    { onFirst: () => mark && performance.mark("streamer:first-view") });
  };
}

const SORTS = { "": "Artist", title: "Title", "-year": "Newest year", year: "Oldest year", "-added": "Recently added" };

async function home(main, params) {
  const sort = params.get("sort") || "";
  const select = h("select", { "aria-label": "Sort albums", onchange: (e) => { location.hash = `#/${api.q({ sort: e.target.value })}`; } },
    Object.entries(SORTS).map(([value, text]) => h("option", { value, selected: value === sort }, text)));
  await albumsView("Albums", "/api/v1/albums", { sort }, { mark: true })(main);
  main.querySelector(".view-head").append(h("label", { class: "sort" }, "Sort ", select));
}

async function artists(main) {
  heading(main, "Artists");
  const list = h("ul", { class: "rows" });
  main.append(list);
  await pagedList(list, (offset) => api.get(`/api/v1/artists${api.q({ limit: PAGE, offset })}`), artistRow);
}

async function artist(main, params, id) {
  const a = await api.get(`/api/v1/artists/${enc(id)}`);
  const playAll = async (shuffle) => {
    const tracks = (await api.get(`/api/v1/tracks${api.q({ artist: id, limit: 500, sort: "album" })}`)).items;
    getPlayer().playTracks(tracks);
    if (shuffle) getPlayer().queue.toggleShuffle();
  };
  heading(main, a.name, heartButton(h, "artists", a, a.name),
    h("button", { type: "button", class: "primary", onclick: () => playAll(false) }, "▶ Play"),
    h("button", { type: "button", onclick: () => playAll(true) }, "Shuffle"));
  main.append(h("p", { class: "muted" }, `${plural(a.album_count ?? a.albums.length, "album")} · ${plural(a.track_count ?? 0, "track")}`));
  main.append(h("h2", {}, "Albums"), h("div", { class: "grid" }, a.albums.map(albumCard)));
  if (a.appears_on.length) main.append(h("h2", {}, "Appears on"), h("div", { class: "grid" }, a.appears_on.map(albumCard)));
}

async function album(main, params, id) {
  const a = await api.get(`/api/v1/albums/${enc(id)}`);
  const player = getPlayer();
  const facts = [a.year, a.genre, plural(a.tracks.length, "track"), clock(a.duration)].filter(Boolean).join(" · ");
  replace(main, h("div", { class: "album-head" }, coverImage(a, 300, "big"),
    h("div", {},
      h("h1", { tabindex: "-1" }, a.title),
      h("p", {}, link(artistHref(a.artist_id), a.artist)),
      h("p", { class: "muted" }, facts),
      h("div", { class: "buttons" },
        h("button", { type: "button", class: "primary", onclick: () => player.playTracks(a.tracks) }, "▶ Play"),
        h("button", { type: "button", onclick: () => playAlbum(a.id, { shuffle: true }) }, "Shuffle"),
        h("button", { type: "button", onclick: () => { player.queue.playNext(a.tracks); toast(`${a.title} plays next`); } }, "Play next"),
        h("button", { type: "button", onclick: () => { player.queue.add(a.tracks); toast(`Added ${a.title} to the queue`); } }, "Add to queue"),
        h("button", { type: "button", onclick: () => pickPlaylist(a.tracks) }, "Add to playlist…"),
        heartButton(h, "albums", a, a.title)))));
  main.append(trackTable(a.tracks, { showAlbum: false }));
}

async function genres(main) {
  heading(main, "Genres");
  const all = await api.get("/api/v1/genres");
  main.append(h("ul", { class: "chips" }, all.items.map((g) => h("li", {},
    link(`#/genre/${enc(g.name)}`, g.name), h("span", { class: "muted" }, ` ${plural(g.album_count, "album")}`)))));
}

const genre = (main, params, name) => albumsView(name, "/api/v1/albums", { genre: name })(main);
const recent = (main) => albumsView("Recently added", "/api/v1/albums", { sort: "-added" })(main);

function needsUser(view) {
  return async (main, ...args) => {
    if (!api.session.token) {
      heading(main, "Sign in to see this");
      main.append(h("p", {}, "Your favorites, playlists and history are kept for your account."),
        h("button", { type: "button", class: "primary", onclick: () => document.dispatchEvent(new Event("signin")) }, "Sign in"));
      return;
    }
    return view(main, ...args);
  };
}

const mostPlayed = needsUser(albumsView("Most played", "/api/v1/plays/albums", { order: "frequent" }));
const history = needsUser(albumsView("Recently played", "/api/v1/plays/albums", { order: "recent" }));

async function favorites(main) {
  heading(main, "Favorites");
  const [tracks, albums, artistsList] = await Promise.all(["tracks", "albums", "artists"].map(
    (kind) => api.get(`/api/v1/favorites/${kind}?limit=500`)));
  main.append(h("h2", {}, "Tracks"), tracks.items.length ? trackTable(tracks.items) : h("p", { class: "muted" }, "No favorite tracks yet."));
  main.append(h("h2", {}, "Albums"), h("div", { class: "grid" }, albums.items.map(albumCard)));
  main.append(h("h2", {}, "Artists"), h("ul", { class: "rows" }, artistsList.items.map(artistRow)));
}

async function playlists(main) {
  heading(main, "Playlists", h("button", { type: "button", class: "primary", onclick: newPlaylist }, "New playlist"));
  const list = h("ul", { class: "rows" });
  main.append(list);
  await pagedList(list, (offset) => api.get(`/api/v1/playlists${api.q({ limit: PAGE, offset })}`),
    (p) => h("li", { class: "row" }, link(`#/playlist/${enc(p.id)}`, p.name), h("span", { class: "muted" }, plural(p.track_count, "track"))));
}

async function newPlaylist() {
  const name = prompt("Name of the new playlist");
  if (!name?.trim()) return;
  try {
    const made = await api.send("POST", "/api/v1/playlists", { name: name.trim(), track_ids: [] });
    location.hash = `#/playlist/${enc(made.id)}`;
  } catch (error) { toast(error.message, "error"); }
}

async function playlist(main, params, id) {
  const p = await api.get(`/api/v1/playlists/${enc(id)}`);
  const tracks = await fetchInOrder(p.track_ids);
  const path = `/api/v1/playlists/${enc(id)}`;
  const change = async (body, message) => {
    try { await api.send("PATCH", path, body); toast(message); render(document.getElementById("main"), location.hash); }
    catch (error) { toast(error.message, "error"); }
  };
  const rename = () => { const name = prompt("New name", p.name); if (name?.trim()) change({ name: name.trim() }, "Renamed"); };
  const remove = async () => {
    if (!confirm(`Delete the playlist ${p.name}?`)) return;
    try { await api.send("DELETE", path); location.hash = "#/playlists"; } catch (error) { toast(error.message, "error"); }
  };
  const move = (i, to) => {
    const ids = [...p.track_ids];
    const [id_] = ids.splice(i, 1);
    ids.splice(to, 0, id_);
    change({ track_ids: ids }, "Moved");
  };
  heading(main, p.name,
    h("button", { type: "button", class: "primary", onclick: () => getPlayer().playTracks(tracks) }, "▶ Play"),
    menuButton(`More for ${p.name}`, [["Rename…", rename], ["Delete…", remove]]));
  main.append(h("p", { class: "muted" }, plural(tracks.length, "track")));
  main.append(trackTable(tracks, { extra: (t, i) => [
    i > 0 ? h("button", { class: "icon", type: "button", "aria-label": `Move ${t.title} up`, onclick: () => move(i, i - 1) }, "↑") : null,
    i < tracks.length - 1 ? h("button", { class: "icon", type: "button", "aria-label": `Move ${t.title} down`, onclick: () => move(i, i + 1) }, "↓") : null,
    h("button", { class: "icon", type: "button", "aria-label": `Remove ${t.title} from the playlist`,
                  onclick: () => change({ remove_positions: [i] }, `Removed ${t.title}`) }, "✕")] }));
}

async function fetchInOrder(ids) {
  const { fetchTracks } = await import("./player.js");
  return fetchTracks(ids);
}

async function folders(main, params) {
  const path = params.get("path") || "";
  const f = await api.get(`/api/v1/folders${api.q({ path })}`);
  const crumbs = [link("#/folders", "Library")];
  let at = "";
  for (const part of f.path ? f.path.split("/") : []) {
    at = at ? `${at}/${part}` : part;
    crumbs.push(" / ", link(`#/folders${api.q({ path: at })}`, part));
  }
  heading(main, f.name || "Folders");
  main.append(h("nav", { class: "crumbs", "aria-label": "Folder path" }, crumbs));
  if (f.folders.length) {
    main.append(h("ul", { class: "rows" }, f.folders.map((d) => h("li", { class: "row" },
      link(`#/folders${api.q({ path: d.path })}`, `📁 ${d.name}`)))));
  }
  if (f.tracks.length) main.append(trackTable(f.tracks));
}

async function search(main, params) {
  const text = params.get("q") || "";
  heading(main, text ? `Search: ${text}` : "Search");
  if (!text.trim()) return main.append(h("p", { class: "muted" }, "Type in the search box (press / to get there)."));
  const found = await api.get(`/api/v1/search${api.q({ q: text, limit: 20 })}`);
  if (!found.tracks.length && !found.albums.length && !found.artists.length) {
    return main.append(h("p", { class: "muted", role: "status" }, `Nothing matches “${text}”.`));
  }
  if (found.artists.length) main.append(h("h2", {}, "Artists"), h("ul", { class: "rows" }, found.artists.map(artistRow)));
  if (found.albums.length) main.append(h("h2", {}, "Albums"), h("div", { class: "grid" }, found.albums.map(albumCard)));
  if (found.tracks.length) main.append(h("h2", {}, "Tracks"), trackTable(found.tracks));
}

const ROUTES = [
  [/^$/, home], [/^albums$/, home], [/^artists$/, artists], [/^artist\/(.+)$/, artist], [/^album\/(.+)$/, album],
  [/^genres$/, genres], [/^genre\/(.+)$/, genre], [/^recent$/, recent], [/^most-played$/, mostPlayed],
  [/^history$/, history], [/^favorites$/, needsUser(favorites)], [/^playlists$/, needsUser(playlists)],
  [/^playlist\/(.+)$/, needsUser(playlist)], [/^folders$/, folders], [/^search$/, search],
];

let rendering = 0;

// Render the view the hash names; `keepFocus` when the search box is being typed in.
export async function render(main, hash, { keepFocus = false } = {}) {
  const [path, query = ""] = hash.replace(/^#\/?/, "").split("?");
  const params = new URLSearchParams(query);
  const found = ROUTES.find(([pattern]) => pattern.test(path));
  const turn = ++rendering;
  document.querySelectorAll("#nav a").forEach((a) => a.toggleAttribute("aria-current", a.getAttribute("href") === `#/${path}`));
  main.setAttribute("aria-busy", "true");
  const view = h("div", { class: "view" }); // a view left behind writes into its own box only
  main.replaceChildren(view);
  try {
    if (!found) { heading(view, "Not found"); return; }
    const [, ...args] = path.match(found[0]);
    await found[1](view, params, ...args.map(decodeURIComponent));
  } catch (error) {
    if (turn !== rendering) return;
    heading(view, error.status === 404 ? "Not found" : "Something went wrong");
    view.append(h("p", { class: "error" }, error.message));
  } finally {
    main.removeAttribute("aria-busy");
    if (turn === rendering && !keepFocus) main.querySelector("h1")?.focus({ preventScroll: true });
  }
}
