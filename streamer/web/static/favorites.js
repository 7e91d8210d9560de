// The listener's hearts (tracks, albums, artists), read once and kept in step with each toggle.
import * as api from "./api.js";
import { toast } from "./dom.js";

const kinds = { tracks: new Set(), albums: new Set(), artists: new Set() };
export const favoritesChanged = new EventTarget();

export async function loadFavorites() {
  for (const set of Object.values(kinds)) set.clear();
  if (!api.session.token) return;
  const all = await api.get("/api/v1/favorites").catch(() => null);
  for (const kind of Object.keys(kinds)) for (const id of all?.[kind] || []) kinds[kind].add(id);
  favoritesChanged.dispatchEvent(new Event("change"));
}

export const isFavorite = (kind, id) => kinds[kind].has(id);

export async function toggleFavorite(kind, id, name = "") {
  if (!api.session.token) return toast("Sign in to keep favorites", "error");
  const on = !kinds[kind].has(id);
  on ? kinds[kind].add(id) : kinds[kind].delete(id);
  favoritesChanged.dispatchEvent(new Event("change"));
  try {
    await api.send(on ? "PUT" : "DELETE", `/api/v1/favorites/${kind}/${encodeURIComponent(id)}`);
    toast(on ? `Added ${name} to favorites` : `Removed ${name} from favorites`);
  } catch (error) {
    on ? kinds[kind].delete(id) : kinds[kind].add(id);
    favoritesChanged.dispatchEvent(new Event("change"));
    toast(error.message, "error");
  }
}

// A heart button that follows the state of its item wherever it is shown. One listener repaints
// every heart of the page: one per button would keep each button (and its view) alive for good.
export function heartButton(h, kind, item, name) {
  const button = h("button", { class: "icon heart", type: "button", dataset: { kind, id: item.id, name } });
  paintHeart(button);
  button.addEventListener("click", (event) => { event.stopPropagation(); toggleFavorite(kind, item.id, name); });
  return button;
}

function paintHeart(button) {
  const { kind, id, name } = button.dataset;
  const on = isFavorite(kind, id);
  button.textContent = on ? "♥" : "♡";
  button.setAttribute("aria-pressed", String(on));
  button.setAttribute("aria-label", `${on ? "Remove" : "Add"} ${name} ${on ? "from" : "to"} favorites`);
}

favoritesChanged.addEventListener("change", () => document.querySelectorAll("button.heart").forEach(paintHeart));
