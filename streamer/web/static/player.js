// The player: the queue played through the engine, the player bar, plays recorded, the queue
// saved where the listener left it, and the Media Session (lock screens, headset buttons).
import * as api from "./api.js";
import { clock, coverImage, debounce, h, knownCovers, replace, toast } from "./dom.js";
import { Engine } from "./engine.js";
import { heartButton } from "./favorites.js";
import { Queue } from "./queue.js";
import { Waveform } from "./waveform.js";

const SETTINGS = "streamer.player"; // volume, quality, loudness mode: this browser's choice
const LOCAL_QUEUE = "streamer.queue"; // a queue kept here while signed out
const PLAY_RULE = 240; // a play counts after half the track or four minutes
const FAILURES_IN_A_ROW = 3; // tracks that failed one after another before the player stops skipping
const KEEPALIVE_BYTES = 60000; // a request that outlives the page carries at most 64 KiB (all of them)
const $ = (id) => document.getElementById(id);

export class Player {
  constructor() {
    this.engine = new Engine();
    this.queue = new Queue();
    this.settings = { volume: 1, quality: "original", loudness: "auto",
                      ...JSON.parse(localStorage.getItem(SETTINGS) || "{}") };
    this.cued = 0; // the position to start from when nothing has played yet (a restored queue)
    this.listened = 0;
    this.recorded = false;
    this.startedAt = null;
    this.failures = 0; // tracks that failed in a row
    this.saved = null; // the queue as the node last took it (JSON): the same again is not sent
    this.saving = null; // the save under way: saves go one at a time, in order
    this.shown = null; // the track the player bar shows
    this.restoring = null; // the restore under way (a promise)
    this.waveform = new Waveform($("waveform"), (s) => this.seek(s));
    this.saveSoon = debounce(() => this.save(), 800);
    this.wire();
  }

  // --- what the rest of the page calls ---

  playTracks(tracks, start = 0) {
    if (!tracks.length) return;
    this.queue.replace(tracks, start);
    this.playAt(start);
  }

  playAt(index, offset = 0) {
    const track = this.queue.items[index];
    if (!track) return;
    this.queue.index = index;
    this.cued = 0;
    this.resetPlay();
    this.engine.play(this.audio(track), offset, this.gainFor(index));
    this.queue.changed("current");
  }

  play() {
    if (!this.queue.current) return;
    if (!this.engine.current) return this.playAt(this.queue.index, this.cued);
    this.engine.resume();
  }

  toggle() {
    if (this.engine.playing) this.engine.pause(); else this.play();
  }

  next() {
    this.engine.settle(); // the next track may have begun already: "next" is the one after it
    const i = this.queue.repeat === "one" ? this.queue.index + 1 : this.queue.nextIndex();
    if (i >= 0 && i < this.queue.items.length) this.playAt(i);
    else if (this.queue.repeat !== "off" && this.queue.items.length) this.playAt(0);
  }

  previous() {
    this.engine.settle();
    if (this.position > 3 || this.queue.index <= 0) return this.seek(0);
    this.playAt(this.queue.index - 1);
  }

  // Remove a queue entry; the playing one gives way to the one that followed it (decoded
  // already), or, the last one gone, the player stops. Paused, the next is cued, not started.
  removeAt(i) {
    const queue = this.queue, engine = this.engine;
    engine.settle();
    const wasCurrent = i === queue.index, wasLast = i === queue.items.length - 1, playing = engine.playing;
    queue.remove(i);
    if (!wasCurrent) return;
    if (playing && queue.current && !wasLast) return this.playAt(queue.index);
    engine.stop();
    this.cued = 0;
    this.paint();
  }

  seek(seconds) {
    if (!this.engine.current) { this.cued = seconds; this.paint(); this.saveSoon(); return; }
    this.engine.seek(seconds);
    this.paint();
    this.saveSoon();
  }

  get position() { return this.engine.current ? this.engine.position : this.cued; }
  get duration() { return this.engine.current ? this.engine.duration : this.queue.current?.duration || 0; }

  // --- audio ---

  audio(track) {
    const quality = this.settings.quality;
    const url = quality === "original" ? `/stream/${encodeURIComponent(track.id)}`
      : `/stream/${encodeURIComponent(track.id)}?format=opus&bitrate=${quality}`;
    // A whole file is fetched with the token; a stream (a media element) reads with the cookie.
    const headers = api.session.token ? { Authorization: `Bearer ${api.session.token}` } : {};
    return { ...track, url, headers, streamed: quality !== "original" };
  }

  // Loudness: the album's gain within an album played in order, else the track's; never past
  // the peak (no clipping). ReplayGain tags, or what the node measured (EBU R128).
  gainFor(index) {
    const items = this.queue.items, track = items[index];
    const gain = track?.gain;
    const mode = this.settings.loudness;
    if (!gain || mode === "off") return 1;
    const neighbour = (i) => items[i] && items[i].album_id === track.album_id;
    const album = mode === "album" || (mode === "auto" && (neighbour(index - 1) || neighbour(index + 1)));
    const db = album ? gain.album ?? gain.track : gain.track ?? gain.album;
    const peak = album ? gain.album_peak ?? gain.track_peak : gain.track_peak ?? gain.album_peak;
    if (db === null || db === undefined) return 1;
    const linear = 10 ** (db / 20);
    return peak > 0 ? Math.min(linear, 1 / peak) : linear;
  }

  // Have the engine decode what follows the current track. Not while the engine is on another
  // track than the queue's (a new list is about to play) or still loads it ("track" comes then):
  // the next file would be fetched for nothing, or compete with the one wanted now.
  follow() {
    const engine = this.engine;
    engine.settle();
    if (!engine.current?.ready || engine.current.track.id !== this.queue.current?.id) return;
    const i = this.queue.nextIndex();
    engine.follow(i >= 0 ? this.audio(this.queue.items[i]) : null, i >= 0 ? this.gainFor(i) : 1);
  }

  advanced() {
    this.queue.index = this.queue.nextIndex();
    this.resetPlay();
    this.queue.changed("current");
  }

  ended() {
    const i = this.queue.nextIndex();
    if (i >= 0) return this.playAt(i);
    this.engine.stop();
    this.cued = 0;
    this.paint();
    this.save();
  }

  // A track could not be played: say so, and skip it when it is the track's own fault (it cannot
  // be decoded, the node refused it), a few in a row at most; stop when the node is away.
  failed({ track, message, kind }) {
    if (track.id !== this.queue.current?.id) return;
    this.failures++;
    const { queue } = this;
    const more = queue.repeat === "off" ? queue.index + 1 < queue.items.length : queue.items.length > 1;
    const skip = (kind === "decode" || kind === "refused") && more && this.failures < FAILURES_IN_A_ROW;
    const why = kind === "signin" ? "sign in again" : message;
    if (kind === "signin" && api.session.token) { // the node refused the token: ask for a new sign-in
      api.session.forget();
      api.signedOut.dispatchEvent(new Event("signedout"));
    }
    toast(`Cannot play ${track.title}: ${why}.${skip ? " Playing the next track." : ""}`, "error");
    if (skip) this.next(); else this.paint();
  }

  // --- plays ---

  resetPlay() {
    this.listened = 0;
    this.recorded = false;
    this.startedAt = new Date();
  }

  tick(seconds) {
    if (!this.engine.sounding || this.recorded) return;
    this.listened += Math.min(seconds, 1);
    const track = this.queue.current;
    if (track && this.listened >= Math.min(track.duration / 2, PLAY_RULE)) {
      this.recorded = true;
      if (!api.session.token) return;
      api.send("POST", "/api/v1/plays", { track_id: track.id, played_at: this.startedAt.toISOString(),
                                          seconds: Math.round(this.listened) })
        .catch((error) => toast(`The play was not recorded: ${error.message}`, "error"));
    }
  }

  // --- the queue kept ---

  snapshot() {
    return { track_ids: this.queue.items.map((t) => t.id),
             current_index: this.queue.index >= 0 ? this.queue.index : null,
             position_ms: Math.round(this.position * 1000), changed_by: "web player" };
  }

  // Saves go one at a time and in order (two PUTs under way could land in either order), each
  // with the queue as it is when its turn comes; the queue as last saved is not sent again. The
  // page going away sends at once, as a request that outlives the page (when it is small enough).
  save({ keepalive = false } = {}) {
    if (!api.session.token) return localStorage.setItem(LOCAL_QUEUE, JSON.stringify(this.snapshot()));
    if (keepalive) return this.saveNow(true);
    if (!this.saveWaiting) {
      this.saveWaiting = true;
      const turn = () => { this.saveWaiting = false; return this.saveNow(false); };
      this.saving = (this.saving || Promise.resolve()).then(turn, turn);
    }
    return this.saving;
  }

  async saveNow(keepalive) {
    const body = JSON.stringify(this.snapshot());
    if (body === this.saved || !api.session.token) return;
    if (keepalive && (body === this.leaving || new Blob([body]).size > KEEPALIVE_BYTES)) return;
    if (keepalive) this.leaving = body; // hidden, then closed: the same queue is sent once
    try {
      await api.send("PUT", "/api/v1/playqueue", JSON.parse(body), { keepalive });
      this.saved = body;
      this.saveFailed = false;
    } catch (error) {
      if (keepalive) return;
      if (error.status === 429) { // writes_per_minute: once the node says, with what the queue is then
        clearTimeout(this.saveLater);
        this.saveLater = setTimeout(() => this.save(), (error.retryAfter || 5) * 1000);
      } else if (!this.saveFailed) { // said once, not at every try while the node is away
        this.saveFailed = true;
        toast(`The queue was not saved: ${error.message}`, "error");
      }
    }
  }

  restore() {
    this.restoring = this.restoreNow();
    return this.restoring;
  }

  // The queue saved on the node (or, signed out, in this browser). Tracks take a while to come
  // for a long queue: if the listener has started something meanwhile, theirs stays.
  async restoreNow() {
    const before = this.queue.version;
    const untouched = () => this.queue.version === before && !this.engine.current;
    let state = null;
    if (api.session.token) state = await api.get("/api/v1/playqueue").catch(() => null);
    else state = JSON.parse(localStorage.getItem(LOCAL_QUEUE) || "null");
    if (!untouched()) return;
    if (!state?.track_ids?.length) return this.paint();
    const tracks = await fetchTracks(state.track_ids);
    if (!untouched()) return;
    const wanted = state.track_ids[state.current_index ?? 0];
    let index = tracks.findIndex((t, i) => t.id === wanted && i <= (state.current_index ?? 0));
    if (index < 0) index = 0;
    this.queue.replace(tracks, index);
    this.cued = (state.position_ms || 0) / 1000;
    if (api.session.token) this.saved = JSON.stringify(this.snapshot()); // as the node has it
    this.paint();
  }

  // --- the player bar ---

  wire() {
    const e = this.engine;
    e.addEventListener("advance", () => this.advanced());
    e.addEventListener("ended", () => this.ended());
    e.addEventListener("track", () => { this.failures = 0; this.follow(); this.paint(); this.saveSoon(); });
    e.addEventListener("state", () => { this.paint(); if (!e.playing) this.saveSoon(); });
    e.addEventListener("loading", () => this.paint());
    e.addEventListener("error", (event) => this.failed(event.detail));
    this.queue.addEventListener("change", (event) => {
      if (event.detail !== "current" && this.queue.current) e.regain(this.gainFor(this.queue.index));
      this.follow();
      this.nowPlaying();
      this.saveSoon();
    });
    $("play").addEventListener("click", () => this.toggle());
    $("next").addEventListener("click", () => this.next());
    $("previous").addEventListener("click", () => this.previous());
    $("shuffle").addEventListener("click", () => this.queue.toggleShuffle());
    $("repeat").addEventListener("click", () => this.queue.cycleRepeat());
    this.wireSettings();
    this.wireMediaSession();
    let last = performance.now();
    setInterval(() => {
      const now = performance.now();
      this.tick((now - last) / 1000);
      last = now;
      this.paintTime();
    }, 250);
    setInterval(() => e.playing && this.save(), 10000);
    addEventListener("pagehide", () => this.save({ keepalive: true }));
    addEventListener("visibilitychange", () => document.visibilityState === "hidden" && this.save({ keepalive: true }));
  }

  wireSettings() {
    const volume = $("volume"), quality = $("quality"), loudness = $("loudness");
    volume.value = this.settings.volume;
    quality.value = this.settings.quality;
    loudness.value = this.settings.loudness;
    this.engine.setVolume(this.settings.volume ** 2);
    const keep = () => localStorage.setItem(SETTINGS, JSON.stringify(this.settings));
    volume.addEventListener("input", () => { this.setVolume(Number(volume.value)); });
    quality.addEventListener("change", () => { this.settings.quality = quality.value; keep(); this.follow(); });
    loudness.addEventListener("change", () => {
      this.settings.loudness = loudness.value;
      keep();
      this.engine.regain(this.gainFor(this.queue.index));
      this.engine.next = this.engine.next && (this.engine.drop(this.engine.next), null);
      this.follow();
    });
    this.keepSettings = keep;
  }

  setVolume(value) {
    value = Math.min(Math.max(value, 0), 1);
    this.settings.volume = value;
    $("volume").value = value;
    this.engine.setVolume(value ** 2); // a perceptual curve
    this.keepSettings();
  }

  nowPlaying() {
    const track = this.queue.current;
    if (this.shown && track === this.shown) return this.paint(); // the same entry: nothing to redo
    this.shown = track;
    const box = $("now");
    if (!track) {
      replace(box, h("span", { class: "muted" }, "Nothing playing"));
      document.title = "streamer";
    } else {
      replace(box,
        coverImage({ id: track.album_id, title: track.album, has_cover: knownCovers.get(track.album_id) ?? track.has_art }, 96, "small"),
        h("div", { class: "now-text" },
          h("a", { class: "now-title", href: `#/album/${encodeURIComponent(track.album_id)}` }, track.title),
          h("a", { class: "now-artist muted", href: `#/artist/${encodeURIComponent(track.artist_id)}` }, track.artist)),
        heartButton(h, "tracks", track, track.title));
      document.title = `${track.title} · ${track.artist}`;
    }
    this.waveform.show(track);
    this.mediaMetadata(track);
    this.paint();
  }

  paint() {
    const playing = this.engine.playing;
    const play = $("play");
    play.querySelector("use").setAttribute("href", playing ? "#i-pause" : "#i-play");
    play.setAttribute("aria-label", playing ? "Pause" : "Play");
    $("shuffle").setAttribute("aria-pressed", String(!!this.queue.shuffled));
    const repeat = $("repeat");
    repeat.setAttribute("aria-pressed", String(this.queue.repeat !== "off"));
    repeat.setAttribute("aria-label", `Repeat: ${this.queue.repeat}`);
    repeat.querySelector("use").setAttribute("href", this.queue.repeat === "one" ? "#i-repeat-one" : "#i-repeat");
    document.body.classList.toggle("is-playing", playing);
    if ("mediaSession" in navigator) navigator.mediaSession.playbackState = playing ? "playing" : "paused";
    this.paintTime();
  }

  paintTime() {
    const position = this.position, duration = this.duration;
    $("elapsed").textContent = clock(position);
    $("total").textContent = clock(duration);
    this.waveform.update(position, duration);
    if ("mediaSession" in navigator && duration && this.engine.current && this.engine.playing) {
      try {
        navigator.mediaSession.setPositionState({ duration, playbackRate: 1, position: Math.min(position, duration) });
      } catch { /* position past duration while switching tracks */ }
    }
  }

  // --- Media Session ---

  wireMediaSession() {
    if (!("mediaSession" in navigator)) return;
    const ms = navigator.mediaSession;
    const handlers = {
      play: () => this.play(), pause: () => this.engine.pause(),
      previoustrack: () => this.previous(), nexttrack: () => this.next(),
      seekto: (d) => this.seek(d.seekTime), seekbackward: (d) => this.seek(this.position - (d.seekOffset || 10)),
      seekforward: (d) => this.seek(this.position + (d.seekOffset || 10)),
    };
    for (const [action, handler] of Object.entries(handlers)) {
      try { ms.setActionHandler(action, handler); } catch { /* not supported here */ }
    }
  }

  mediaMetadata(track) {
    if (!("mediaSession" in navigator)) return;
    if (!track) { navigator.mediaSession.metadata = null; return; }
    const cover = `${location.origin}/api/v1/albums/${encodeURIComponent(track.album_id)}/cover?size=`;
    navigator.mediaSession.metadata = new MediaMetadata({
      title: track.title, artist: track.artist, album: track.album,
      artwork: !(knownCovers.get(track.album_id) ?? track.has_art) ? [] : [96, 256, 512].map((s) => ({ src: cover + s, sizes: `${s}x${s}` })),
    });
  }
}

// Track objects for ids, a few requests at a time; ids gone from the library are left out.
export async function fetchTracks(ids) {
  const found = new Array(ids.length);
  let next = 0;
  const worker = async () => {
    while (next < ids.length) {
      const i = next++;
      found[i] = await api.get(`/api/v1/tracks/${encodeURIComponent(ids[i])}`).catch(() => null);
    }
  };
  await Promise.all(Array.from({ length: 6 }, worker));
  return found.filter(Boolean);
}
