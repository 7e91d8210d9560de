// The audio engine: Web Audio decks, so consecutive tracks join sample-exactly (gapless).
//
// A track is fetched whole and decoded into an AudioBuffer; the next one is decoded while the
// current plays and scheduled to start on the very sample the current ends. Each deck has its
// own GainNode (the track's loudness gain) into a master GainNode (the volume). Pausing suspends
// the AudioContext, which keeps that schedule.
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

  get playing() { return !!this.current && this.ctx?.state === "running" && !this.current.stopped; }

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
    this.emit("loading");
    deck = await this.current.whenReady;
    if (generation !== this.generation) return;
    if (!deck) return this.emit("error", { track, message: this.current.error });
    if (ctx.state !== "running") await ctx.resume();
    this.setGain(deck, gain);
    this.start(deck, offset, ctx.currentTime + LEAD);
    this.schedule(); // the next may have been decoded before this one was
    this.emit("track");
  }

  // Decode `track` ahead and start it where the current one ends (null: nothing follows).
  async follow(track, gain = 1) {
    if (this.next && track && this.next.track.url === track.url) return this.schedule();
    this.drop(this.next);
    const deck = this.next = track && this.ctx ? this.deck(track) : null;
    if (!deck || !(await deck.whenReady) || deck !== this.next) return;
    this.setGain(deck, gain);
    this.schedule();
  }

  // The current track's gain, changed while it plays (a short ramp: no click).
  regain(gain) {
    const deck = this.current;
    if (deck?.gainNode) deck.gainNode.gain.setTargetAtTime(gain, this.ctx.currentTime, 0.05);
  }

  pause() {
    if (this.current?.element) this.current.element.pause();
    return this.ctx?.state === "running" ? this.ctx.suspend() : Promise.resolve();
  }

  async resume() {
    if (!this.ctx) return;
    if (this.current?.element) await this.current.element.play().catch(() => null);
    await this.ctx.resume();
  }

  seek(seconds) {
    const deck = this.current;
    if (!deck?.ready) { if (deck) deck.cuedAt = seconds; return; }
    seconds = Math.max(0, Math.min(seconds, this.duration - 0.05));
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

  // `soon`: it must sound now (play), not at the end of the current track (follow).
  load(track, soon) {
    const abort = new AbortController();
    const bytes = track.duration * (track.sample_rate || 48000) * Math.max(track.channels || 2, 1) * 4;
    const decodable = !track.streamed && bytes <= DECODED_BUDGET;
    const slow = soon && (track.size || 0) / this.throughput > QUICK;
    const loading = decodable && !slow ? this.loadBuffer(track, abort.signal) : this.loadElement(track);
    loading.abort = abort;
    loading.upgrade = decodable && slow;
    loading.catch(() => null); // seen by ready(); never an unhandled rejection
    return loading;
  }

  async loadBuffer(track, signal) {
    const started = performance.now();
    const response = await fetch(track.url, { signal, credentials: "same-origin" });
    if (!response.ok) throw new Error(`the node answered ${response.status} for ${track.title}`);
    const data = await response.arrayBuffer();
    const seconds = (performance.now() - started) / 1000;
    if (data.byteLength > 256 * 1024) this.throughput = data.byteLength / Math.max(seconds, 0.001);
    return { buffer: await this.ctx.decodeAudioData(data) };
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
    Object.assign(deck, { source, buffer, element: null, startAt: when - offset, stopped: false });
    setTimeout(() => this.releaseElement(element, deck.elementGain), (LEAD + FADE) * 1000 + 100);
    this.emit("upgraded");
    this.schedule();
  }

  loadElement(track) {
    const element = new Audio();
    element.crossOrigin = "use-credentials";
    element.preload = "auto";
    element.src = track.url;
    return new Promise((resolve, reject) => {
      element.addEventListener("canplay", () => resolve({ element }), { once: true });
      element.addEventListener("error", () => reject(new Error(`${track.title} cannot be played here`)), { once: true });
    });
  }

  async ready(deck) {
    try {
      Object.assign(deck, await deck.loading, { ready: true, startAt: null, stopped: false });
      deck.gainNode = this.ctx.createGain();
      deck.gainNode.connect(this.master);
      if (deck.element) {
        const element = deck.element;
        deck.elementGain = this.ctx.createGain();
        deck.source = this.ctx.createMediaElementSource(element);
        deck.source.connect(deck.elementGain).connect(deck.gainNode);
        element.addEventListener("ended", () => deck.element === element && this.ended(deck, deck.source));
      }
      return deck;
    } catch (error) {
      if (error.name !== "AbortError") deck.error = error.message || String(error);
      return null;
    }
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
      deck.element.play().catch((error) => this.emit("error", { track: deck.track, message: error.message }));
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
    deck.loading?.abort?.abort();
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
