// The web player's start: sign-in, the views by the hash, search as you type, keyboard
// shortcuts, the node's role, and the service worker that keeps the app shell.
import * as api from "./api.js";
import { debounce, h, replace, toast } from "./dom.js";
import { usePlayer } from "./components.js";
import { loadFavorites, toggleFavorite } from "./favorites.js";
import { Player } from "./player.js";
import { QueuePanel } from "./queuepanel.js";
import { render } from "./views.js";

const $ = (id) => document.getElementById(id);
const main = $("main");
const player = new Player();
usePlayer(player);
const queuePanel = new QueuePanel($("queue-panel"), player);
window.streamer = { player }; // for the console (and the browser tests)

// --- signing in ---

function showAccount() {
  const user = api.session.user;
  const button = $("account");
  button.textContent = user ? user.name : "Sign in";
  button.setAttribute("aria-label", user ? `Signed in as ${user.name}: sign out` : "Sign in");
}

function askSignIn() {
  const dialog = $("signin");
  if (dialog.open) return;
  $("signin-error").textContent = "";
  dialog.showModal();
  $("signin-name").focus();
}

async function signedIn() {
  showAccount();
  await Promise.all([loadFavorites(), player.restore()]);
  render(main, location.hash);
}

$("signin-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const token = $("signin-token").value.trim();
  try {
    if (token) await api.signInWithToken(token);
    else await api.signIn($("signin-name").value.trim(), $("signin-password").value);
    $("signin").close();
    $("signin-form").reset();
    toast(`Signed in as ${api.session.user.name}`);
    await signedIn();
  } catch (error) {
    $("signin-error").textContent = error.message;
  }
});

$("account").addEventListener("click", async () => {
  if (!api.session.user) return askSignIn();
  if (!confirm(`Sign out ${api.session.user.name}?`)) return;
  await player.save();
  player.engine.stop();
  player.queue.clear();
  await api.signOut();
  location.reload(); // start as a stranger: the node may not let one read
});

$("signin-cancel").addEventListener("click", () => $("signin").close());
$("help-open").addEventListener("click", () => $("help").showModal());
api.signedOut.addEventListener("signedout", () => { showAccount(); askSignIn(); });
document.addEventListener("signin", askSignIn);

// --- views and search ---

addEventListener("hashchange", () => render(main, location.hash, { keepFocus: document.activeElement === $("search") }));

const search = $("search");
const searchNow = debounce(() => {
  const text = search.value.trim();
  const target = text ? `#/search?${new URLSearchParams({ q: text })}` : "#/";
  if (location.hash.startsWith("#/search")) history.replaceState(null, "", target);
  else history.pushState(null, "", target);
  render(main, location.hash, { keepFocus: true });
}, 200);
search.addEventListener("input", searchNow);
$("search-form").addEventListener("submit", (e) => { e.preventDefault(); searchNow(); });

// The library list on a phone: opened, the focus goes into it; Escape or a choice closes it.
function showNav(open) {
  document.body.classList.toggle("nav-open", open);
  $("menu-toggle").setAttribute("aria-expanded", String(open));
  if (open) $("nav").querySelector("a").focus();
}
$("menu-toggle").addEventListener("click", () => showNav(!document.body.classList.contains("nav-open")));
$("nav").addEventListener("click", (e) => { if (e.target.closest("a")) showNav(false); });
$("nav").addEventListener("keydown", (e) => {
  if (e.key !== "Escape" || !document.body.classList.contains("nav-open")) return;
  showNav(false);
  $("menu-toggle").focus();
});

// --- keyboard ---

const SHORTCUTS = {
  " ": () => player.toggle(),
  ArrowLeft: (e) => player.seek(Math.max(player.position - (e.shiftKey ? 30 : 10), 0)),
  ArrowRight: (e) => player.seek(player.position + (e.shiftKey ? 30 : 10)),
  ArrowUp: () => player.setVolume(player.settings.volume + 0.05),
  ArrowDown: () => player.setVolume(player.settings.volume - 0.05),
  n: () => player.next(),
  p: () => player.previous(),
  f: () => player.queue.current && toggleFavorite("tracks", player.queue.current.id, player.queue.current.title),
  q: () => queuePanel.toggle(),
  "/": () => { search.focus(); search.select(); },
  "?": () => $("help").showModal(),
};

document.addEventListener("keydown", (event) => {
  if (event.ctrlKey || event.metaKey || event.altKey || event.defaultPrevented) return;
  const target = event.target;
  if (target.closest("input, textarea, select, dialog, [role=menu], [role=slider]")) return;
  if (event.key === " " && target.closest("button, a, summary")) return;
  const action = SHORTCUTS[event.key];
  if (!action) return;
  event.preventDefault();
  action(event);
});

// --- the node ---

async function nodeStatus() {
  const box = $("node");
  try {
    const health = await (await fetch("/healthz", { headers: { Accept: "application/json" } })).json();
    let text = health.role || "node", state = "ok";
    if (health.role === "region") {
      const up = health.master_reachable !== false;
      text = up ? "region · master reachable" : "region · master unreachable: changes are kept and sent later";
      state = up ? "ok" : "warn";
    }
    replace(box, h("span", { class: `dot ${state}`, "aria-hidden": "true" }), text);
  } catch {
    replace(box, h("span", { class: "dot bad", "aria-hidden": "true" }), "node unreachable");
  }
}

// --- start ---

// Ask who we are first: on a node that wants a sign-in, nothing is requested (and refused)
// before it; on a loopback node with anonymous reads the page plays at once. No answer (the node
// down while the service worker serves the page, a proxy's 502, a 429) is not "nobody": the
// sign-in is kept and the page offers to ask again.
async function connect() {
  showAccount();
  let who;
  try {
    who = await api.get("/api/v1/session");
  } catch (error) {
    replace(main, h("div", { class: "view" }, h("h1", { tabindex: "-1" }, "The node cannot be reached"),
      h("p", {}, error.status ? error.message : "No answer from it: is it running, and is this network up?"),
      h("button", { type: "button", class: "primary", onclick: connect }, "Try again")));
    main.querySelector("h1").focus();
    return;
  }
  if (who.user) api.session.keep(api.session.token, who.user);
  else if (api.session.token) api.session.forget();
  if (who.user && !who.cookie) await api.renewSession().catch(() => null); // covers and audio read with it
  showAccount();
  if (!who.user && !who.anonymous_reads) {
    replace(main, h("div", { class: "view" }, h("h1", {}, "Sign in to listen"),
      h("p", {}, "This node shares its music with its listeners only."),
      h("button", { type: "button", class: "primary", onclick: askSignIn }, "Sign in")));
    askSignIn();
  } else {
    render(main, location.hash);
    await Promise.all([loadFavorites(), player.restore()]);
  }
}

async function start() {
  await connect();
  nodeStatus();
  setInterval(nodeStatus, 30000);
  if ("serviceWorker" in navigator && isSecureContext) {
    navigator.serviceWorker.register("/sw.js").catch((error) => console.warn("no service worker:", error.message));
  }
}

start();
