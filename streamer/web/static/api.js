// The node's JSON API: the token kept in this browser, errors as the server words them.
import { newKey } from "./dom.js";

const TOKEN = "streamer.token", USER = "streamer.user";

export class ApiError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}

export const session = {
  get token() { return localStorage.getItem(TOKEN); },
  get user() { try { return JSON.parse(localStorage.getItem(USER)); } catch { return null; } },
  keep(token, user) { localStorage.setItem(TOKEN, token); localStorage.setItem(USER, JSON.stringify(user)); },
  forget() { localStorage.removeItem(TOKEN); localStorage.removeItem(USER); },
};

export const signedOut = new EventTarget();

function headers(extra = {}) {
  const all = { Accept: "application/json", ...extra };
  if (session.token) all.Authorization = `Bearer ${session.token}`;
  return all;
}

async function answer(response) {
  if (response.status === 204) return null;
  const body = await response.json().catch(() => null);
  if (response.ok) return body;
  const error = body?.error || {};
  if (response.status === 401 && session.token) {
    session.forget();
    signedOut.dispatchEvent(new Event("signedout"));
  }
  const failure = new ApiError(response.status, error.code || "http_" + response.status,
                               error.message || `${response.status} ${response.statusText}`);
  failure.retryAfter = Number(response.headers.get("Retry-After")) || 0; // seconds, for a 429 or a 503
  throw failure;
}

export async function get(path, { signal } = {}) {
  return answer(await fetch(path, { headers: headers(), signal }));
}

export async function send(method, path, body, { keepalive = false } = {}) {
  const init = { method, keepalive, headers: headers({ "Idempotency-Key": newKey() }) };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  return answer(await fetch(path, init));
}

export async function signIn(name, password) {
  const response = await fetch("/api/v1/session", {
    method: "POST", headers: { "Content-Type": "application/json", Accept: "application/json" },
    body: JSON.stringify({ name, password }),
  });
  const body = await answer(response);
  session.keep(body.token, body.user);
  return body.user;
}

export async function signInWithToken(token) {
  const response = await fetch("/api/v1/session", {
    method: "POST", headers: { Authorization: `Bearer ${token}`, Accept: "application/json" },
  });
  const body = await answer(response);
  session.keep(body.token, body.user);
  return body.user;
}

// A new session for the one held, which sets the session cookie again (a browser dropped it).
export const renewSession = () => signInWithToken(session.token);

export async function signOut() {
  session.forget();
  await fetch("/api/v1/session", { method: "DELETE" }).catch(() => null);
}

export const q = (params) => {
  const search = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") search.set(k, v);
  const text = search.toString();
  return text ? `?${text}` : "";
};
