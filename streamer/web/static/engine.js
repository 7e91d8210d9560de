// The audio engine: Web Audio decks, so consecutive tracks join sample-exactly (gapless).
//
// A track is fetched whole and decoded into an AudioBuffer; the next one is decoded while the
// current plays and scheduled to start on the very sample the current ends. Each deck has its
// own GainNode (the track's loudness gain) into a master GainNode (the volume). Pausing suspends
// the AudioContext, which keeps that schedule. A pause or a seek asked for while a track loads is
// kept: the track is cued where it was asked for and starts (or not) as the listener said.
//
// Playing must start at once, though, and a whole file can take seconds to arrive on a slow
// link: a track that would (its size over the throughput seen so far) starts streaming through
// a media element, while the whole file is fetched and decoded behind it; then the decoded copy
// takes over under a short crossfade, and the joins after it are exact. A track too big to hold
// decoded (a long mix, a hi-res file) or a transcode asked for a slow link stays a stream: its
// joins are not gapless.

const DECODED_BUDGET = 200 * 1024 * 1024; // bytes of float samples one deck may hold
const LEAD = 0.03; // seconds between asking for a start and the start: time to schedule it
const FADE = 0.03; // the crossfade from a stream to its decoded copy
const QUICK = 0.35; // seconds a whole file may take to arrive before it starts as a stream

export class Engine extends EventTarget {
  constructor() {
    super();
    this.ctx = null;
    this.current = null; // the deck playing (or cued)
    this.next = null; // the deck decoded or scheduled after it
    this.volume = 1;
    this.generation = 0; // bumped on every play(): late loads of an older one are dropped
    this.paused = false; // the listener paused (a track loading then is cued, not started)
    this.throughput = 4e6; // bytes a second whole files arrived at (a guess until one has)
  }

  context(rate) {
    if (!this.ctx) {
      const options = { latencyHint: "playback" };
      if (rate >= 8000 && rate <= 192000) options.sampleRate = rate;
      this.ctx = new AudioContext(options);
      this.master = this.ctx.createGain();
      this.master.gain.value = this.volume;
      this.master.connect(this.ctx.destination);
      this.ctx.onstatechange = () => this.emit("state");
    }
    return this.ctx;
  }

  // The listener wants sound: a track plays, or loads to play (a pause then holds it).
  get playing() {
    const deck = this.current;
    return !!deck && !this.paused && !deck.stopped && (!deck.ready || this.ctx?.state === "running");
  }

  // Sound is coming out: started and not paused (what counts towards a play).
  get sounding() { return this.playing && this.current.ready && this.current.startAt !== null; }

  get position() {
    const deck = this.current;
    if (!deck) return 0;
    if (!deck.ready || deck.startAt === null) return deck.cuedAt || 0;
    if (deck.element) return deck.element.currentTime;
    return Math.min(Math.max(this.ctx.currentTime - deck.startAt, 0), deck.buffer.duration);
  }

  get duration() {
    const deck = this.current;
    if (!deck) return 0;
    if (!deck.ready) return deck.track.duration;
    if (deck.element) return Number.isFinite(deck.element.duration) ? deck.element.duration : deck.track.duration;
    return deck.buffer.duration;
  }

  // Play `track` (a catalog track with `url` set by the caller) from `offset` seconds.
  async play(track, offset = 0, gain = 1) {
    const generation = ++this.generation;
    const ctx = this.context(track.sample_rate);
    this.paused = false;
    this.drop(this.current);
    let deck = null;
    if (this.next && this.next.track.url === track.url) {
      this.unschedule();
      deck = this.next;
      this.next = null;
    }
    this.drop(this.next);
    this.next = null;
    this.current = deck || this.deck(track, { soon: true });
    this.current.cuedAt = offset; // a seek before it is ready moves this
    this.emit("loading");
    deck = await this.current.whenReady;
    if (generation !== this.generation) return;
    if (!deck) return this.failed(this.current);
    this.setGain(deck, gain);
    if (!this.paused && ctx.state !== "running") await ctx.resume();
    if (generation !== this.generation) return;
    if (!this.paused) this.start(deck, deck.cuedAt, ctx.currentTime + LEAD); // paused: cued, resume() starts it
    this.schedule(); // the next may have been decoded before this one was
    this.emit("track");
  }

  // Decode `track` ahead and start it where the current one ends (null: nothing follows). The
  // same track again (repeat one) plays the current deck's decoded copy: no second fetch.
  async follow(track, gain = 1) {
    const next = this.next, current = this.current;
    if (next && track && next.track.url === track.url) {
      if (next.ready && !next.scheduled) this.setGain(next, gain); // its neighbours may have changed
      return this.schedule();
    }
    this.drop(next);
    let deck = null;
    if (track && this.ctx) deck = current?.buffer && current.track.url === track.url ? this.twin(current, track) : this.deck(track);
    this.next = deck;
    if (!deck || !(await deck.whenReady) || deck !== this.next) return;
    this.setGain(deck, gain);
    this.schedule();
  }

  // The next deck has started (its first sample is past) though the current one's `ended` has
  // not come yet: make it the current one now, before anything reads or changes what follows.
  settle() {
    const current = this.current, next = this.next;
    if (current && next?.scheduled && this.ctx.currentTime >= next.startAt) this.ended(current, current.source);
  }

  // The current track's gain, changed while it plays (a short ramp: no click).
  regain(gain) {
    const deck = this.current;
    if (deck?.gainNode) deck.gainNode.gain.setTargetAtTime(gain, this.ctx.currentTime, 0.05);
  }

  pause() {
    this.paused = true;
    if (this.current?.element) this.current.element.pause();
    this.emit("state");
    return this.ctx?.state === "running" ? this.ctx.suspend() : Promise.resolve();
  }

  async resume() {
    if (!this.ctx) return;
    this.paused = false;
    this.emit("state");
    const deck = this.current;
    if (this.ctx.state !== "running") await this.ctx.resume();
    if (deck !== this.current || this.paused || !deck?.ready) return;
    if (deck.startAt === null) { // cued while paused
      this.start(deck, deck.cuedAt, this.ctx.currentTime + LEAD);
      this.schedule();
    } else if (deck.element) {
      await deck.element.play().catch(() => null);
    }
  }

  seek(seconds) {
    const deck = this.current;
    if (!deck) return;
    seconds = Math.max(0, Math.min(seconds, this.duration - 0.05));
    if (!deck.ready || deck.startAt === null) { deck.cuedAt = seconds; this.emit("seeked"); return; }
    if (deck.element) { deck.element.currentTime = seconds; return; }
    this.unschedule();
    this.stopSource(deck);
    this.start(deck, seconds, this.ctx.currentTime + LEAD);
    this.schedule();
    this.emit("seeked");
  }

  setVolume(value) {
    this.volume = value;
    if (this.master) this.master.gain.setTargetAtTime(value, this.ctx.currentTime, 0.01);
  }

  stop() {
    this.generation++;
    this.paused = false;
    this.drop(this.current);
    this.drop(this.next);
    this.current = this.next = null;
    this.emit("state");
  }

  // Record what the engine plays (the first channel, after every gain) until stop() is called:
  // `const tap = await engine.tap(); ...; const samples = await tap.stop()`.
  async tap() {
    const ctx = this.context();
    await ctx.audioWorklet.addModule("/static/tap.js");
    const node = new AudioWorkletNode(ctx, "tap", { numberOfInputs: 1, numberOfOutputs: 1, outputChannelCount: [1] });
    const blocks = [];
    let finish = null;
    node.port.onmessage = (event) => (event.data.done ? finish() : blocks.push(event.data.samples));
    this.master.connect(node);
    node.connect(ctx.destination); // silent: pulled like any node that reaches the speakers
    return {
      rate: ctx.sampleRate,
      stop: () => new Promise((resolve) => {
        finish = () => {
          this.master.disconnect(node);
          node.disconnect();
          const all = new Float32Array(blocks.reduce((n, b) => n + b.length, 0));
          let at = 0;
          for (const block of blocks) { all.set(block, at); at += block.length; }
          resolve(all);
        };
        node.port.postMessage("stop");
      }),
    };
  }

  // --- inside ---

  emit(type, detail) { this.dispatchEvent(new CustomEvent(type, { detail })); }

  deck(track, { soon = false } = {}) {
    const deck = { track, loading: this.load(track, soon) };
    deck.whenReady = this.ready(deck);
    return deck;
  }

  // A deck for `track` that plays `deck`'s decoded copy (an AudioBuffer can feed many sources).
  twin(deck, track) {
    const twin = { track, buffer: deck.buffer, ready: true, startAt: null, stopped: false, loading: null };
    twin.gainNode = this.ctx.createGain();
    twin.gainNode.connect(this.master);
    twin.whenReady = Promise.resolve(twin);
    return twin;
  }

  // A track that could not be played: said, and no longer the current one (nothing plays).
  failed(deck) {
    if (deck === this.current) this.current = null;
    this.emit("error", { track: deck.track, message: deck.error, kind: deck.errorKind });
    this.emit("state");
  }

  // `soon`: it must sound now (play), not at the end of the current track (follow).
  load(track, soon) {
    const abort = new AbortController();
    const bytes = track.duration * (track.sample_rate || 48000) * Math.max(track.channels || 2, 1) * 4;
    const decodable = !track.streamed && bytes <= DECODED_BUDGET;
    const slow = soon && (track.size || 0) / this.throughput > QUICK;
    const loading = decodable && !slow ? this.loadBuffer(track, abort.signal) : this.loadElement(track, abort.signal);
    loading.abort = abort;
    loading.upgrade = decodable && slow;
    loading.catch(() => null); // seen by ready(); never an unhandled rejection
    return loading;
  }

  async loadBuffer(track, signal) {
    const started = performance.now();
    let response, data;
    try {
      response = await fetch(track.url, { signal, credentials: "same-origin", headers: track.headers || {} });
      if (response.ok) data = await response.arrayBuffer();
    } catch (error) {
      throw error.name === "AbortError" ? error : new LoadError("the node cannot be reached", "network");
    }
    if (!response.ok) {
      throw new LoadError(`the node answered ${response.status}`, response.status === 401 ? "signin" : "refused");
    }
    const seconds = (performance.now() - started) / 1000;
    if (data.byteLength > 256 * 1024) this.throughput = data.byteLength / Math.max(seconds, 0.001);
    try {
      return { buffer: await this.ctx.decodeAudioData(data) };
    } catch {
      throw new LoadError("this browser cannot decode it", "decode");
    }
  }

  // The decoded copy of a streaming deck takes over where the stream is, under a crossfade.
  async upgrade(deck) {
    let buffer;
    try {
      ({ buffer } = await this.loadBuffer(deck.track, deck.loading.abort.signal));
    } catch { return; } // it streams on
    const element = deck.element;
    if (deck !== this.current || deck.stopped || !element) return;
    const ctx = this.ctx, when = ctx.currentTime + LEAD;
    const offset = Math.min(element.currentTime + (element.paused ? 0 : LEAD), buffer.duration);
    const fade = ctx.createGain();
    fade.gain.setValueAtTime(0, when);
    fade.gain.linearRampToValueAtTime(1, when + FADE);
    fade.connect(deck.gainNode);
    deck.elementGain.gain.setValueAtTime(1, when);
    deck.elementGain.gain.linearRampToValueAtTime(0, when + FADE);
    const source = ctx.createBufferSource();
    source.buffer = buffer;
    source.connect(fade);
    source.onended = () => this.ended(deck, source);
    source.start(when, offset);
    const elementGain = deck.elementGain;
    Object.assign(deck, { source, buffer, element: null, elementGain: null, startAt: when - offset, stopped: false });
    // The stream lets go once the fade is over on the context's clock (a pause holds it there).
    const release = () => (ctx.currentTime > when + FADE || deck.stopped ? this.releaseElement(element, elementGain)
      : setTimeout(release, 100));
    setTimeout(release, (LEAD + FADE) * 1000 + 100);
    this.emit("upgraded");
    this.schedule();
  }

  // A media element that streams the track; dropped before it can play, it lets go at once.
  loadElement(track, signal) {
    const element = new Audio();
    element.crossOrigin = "use-credentials";
    element.preload = "auto";
    element.src = track.url;
    return new Promise((resolve, reject) => {
      element.addEventListener("canplay", () => resolve({ element }), { once: true });
      element.addEventListener("error", () => reject(elementError(element)), { once: true });
      signal.addEventListener("abort", () => {
        this.releaseElement(element);
        reject(new DOMException("dropped", "AbortError"));
      }, { once: true });
    });
  }

  async ready(deck) {
    try {
      Object.assign(deck, await deck.loading);
    } catch (error) {
      if (error.name !== "AbortError") Object.assign(deck, { error: error.message, errorKind: error.kind || "decode" });
      return null;
    }
    if (deck.stopped) { // dropped while it loaded: keep nothing of it
      if (deck.element) this.releaseElement(deck.element);
      deck.buffer = deck.element = null;
      return null;
    }
    Object.assign(deck, { ready: true, startAt: null, stopped: false });
    deck.gainNode = this.ctx.createGain();
    deck.gainNode.connect(this.master);
    if (deck.element) this.wireElement(deck);
    return deck;
  }

  wireElement(deck) {
    const element = deck.element;
    deck.elementGain = this.ctx.createGain();
    deck.source = this.ctx.createMediaElementSource(element);
    deck.source.connect(deck.elementGain).connect(deck.gainNode);
    const mine = () => deck.element === element && deck === this.current && !deck.stopped;
    element.addEventListener("ended", () => mine() && this.ended(deck, deck.source));
    element.addEventListener("error", () => { // the stream broke off as it played
      if (!mine()) return;
      Object.assign(deck, { error: elementError(element).message, errorKind: elementError(element).kind });
      this.drop(deck);
      this.failed(deck);
    });
  }

  setGain(deck, gain) { deck.gainNode.gain.value = gain; }

  start(deck, offset, when) {
    deck.stopped = false;
    if (deck.element) {
      deck.element.currentTime = offset;
      deck.startAt = when - offset;
      if (deck.loading.upgrade && !deck.upgrading) {
        deck.upgrading = true;
        this.upgrade(deck);
      }
      deck.element.play().catch((error) => {
        // An AbortError is a pause (or the next track) coming before the start: no failure.
        if (error.name === "AbortError" || deck !== this.current || deck.stopped) return;
        Object.assign(deck, { error: error.message, errorKind: error.name === "NotAllowedError" ? "blocked" : "decode" });
        this.drop(deck);
        this.failed(deck);
      });
      return;
    }
    const source = this.ctx.createBufferSource();
    source.buffer = deck.buffer;
    source.connect(deck.gainNode);
    source.onended = () => this.ended(deck, source);
    source.start(when, Math.min(offset, deck.buffer.duration));
    deck.source = source;
    deck.startAt = when - offset;
  }

  // Start the next deck on the sample the current one ends, when both are decoded buffers.
  schedule() {
    const current = this.current, next = this.next;
    if (!current?.ready || !next?.ready || next.scheduled || current.element || next.element) return;
    if (current.startAt === null) return;
    const end = current.startAt + current.buffer.duration;
    if (end < this.ctx.currentTime + 0.02) return; // too late to join exactly: ended() starts it
    const source = this.ctx.createBufferSource();
    source.buffer = next.buffer;
    source.connect(next.gainNode);
    source.onended = () => this.ended(next, source);
    source.start(end);
    Object.assign(next, { source, startAt: end, scheduled: true });
  }

  unschedule() {
    const next = this.next;
    if (!next?.scheduled) return;
    this.stopSource(next);
    next.scheduled = false;
    next.startAt = null;
  }

  ended(deck, source) {
    if (deck !== this.current || source !== deck.source || deck.stopped) return;
    const next = this.next;
    deck.stopped = true;
    if (next?.scheduled) {
      this.release(deck);
      this.current = next;
      this.next = null;
      this.emit("advance");
    } else {
      this.emit("ended");
    }
  }

  stopSource(deck) {
    const source = deck.source;
    deck.source = null;
    if (!source) return;
    if (deck.element) { deck.element.pause(); deck.source = source; return; }
    source.onended = null;
    try { source.stop(); } catch { /* never started */ }
    source.disconnect();
  }

  drop(deck) {
    if (!deck) return;
    deck.stopped = true;
    deck.loading?.abort?.abort(); // a load under way stops, and ready() keeps nothing of it
    if (deck.ready) { this.stopSource(deck); this.release(deck); }
  }

  release(deck) {
    if (deck.element) this.releaseElement(deck.element, deck.elementGain);
    deck.gainNode?.disconnect();
    deck.buffer = null;
  }

  releaseElement(element, gain) {
    element.pause();
    element.removeAttribute("src");
    element.load(); // lets go of the connection and what it buffered
    gain?.disconnect();
  }
}

// Why a track could not be played: `kind` says what to do next: "network" (the node cannot be
// reached: stop), "signin" (the session ended: stop), "refused" or "decode" (skip this track).
class LoadError extends Error {
  constructor(message, kind) { super(message); this.kind = kind; }
}

function elementError(element) {
  const code = element.error?.code;
  if (code === MediaError.MEDIA_ERR_NETWORK) return new LoadError("the node cannot be reached", "network");
  // A refusal (404, 401) looks like a format this browser cannot play, too: the element says no more.
  return new LoadError("it cannot be played here (a format this browser cannot play, or the node refused it)", "decode");
}
