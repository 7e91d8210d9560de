// The seek bar: the track's waveform (peaks from the node), played part in the accent colour.
// A slider for keyboards and screen readers; a click or a drag seeks.
import * as api from "./api.js";
import { clock } from "./dom.js";

const POINTS = 480;

export class Waveform {
  constructor(canvas, seek) {
    this.canvas = canvas;
    this.seek = seek;
    this.peaks = null;
    this.trackId = null;
    this.position = 0;
    this.duration = 0;
    canvas.addEventListener("pointerdown", (event) => this.pointer(event));
    canvas.addEventListener("keydown", (event) => this.key(event));
    new ResizeObserver(() => this.draw()).observe(canvas);
    matchMedia("(prefers-color-scheme: dark)").addEventListener("change", () => this.draw());
  }

  // The track's peaks; while the node is busy (503) asked again when it says, a few times.
  async show(track) {
    if (track?.id === this.trackId) return;
    this.trackId = track?.id ?? null;
    this.peaks = null;
    this.draw();
    for (let tries = 1; track && tries <= 3; tries++) {
      try {
        const answer = await api.get(`/api/v1/tracks/${encodeURIComponent(track.id)}/waveform?points=${POINTS}`);
        if (this.trackId !== track.id) return;
        const top = Math.max(...answer.peaks, 0.001);
        this.peaks = answer.peaks.map((p) => p / top);
        break;
      } catch (error) { // gone, or busy past the tries: a flat bar still seeks
        if (error.status !== 503 || tries === 3) break;
        await new Promise((resolve) => setTimeout(resolve, Math.min(error.retryAfter || 2, 30) * 1000));
        if (this.trackId !== track.id) return;
      }
    }
    this.draw();
  }

  update(position, duration) {
    this.position = position;
    this.duration = duration;
    this.canvas.setAttribute("aria-valuemax", String(Math.round(duration)));
    this.canvas.setAttribute("aria-valuenow", String(Math.round(position)));
    this.canvas.setAttribute("aria-valuetext", `${clock(position)} of ${clock(duration)}`);
    this.draw();
  }

  draw() {
    const { canvas } = this;
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth * ratio, height = canvas.clientHeight * ratio;
    if (!width || !height) return;
    if (canvas.width !== width || canvas.height !== height) Object.assign(canvas, { width, height });
    const g = canvas.getContext("2d");
    const style = getComputedStyle(canvas);
    const played = style.getPropertyValue("--accent").trim() || "#d33";
    const rest = style.getPropertyValue("--muted").trim() || "#888";
    g.clearRect(0, 0, width, height);
    const done = this.duration ? this.position / this.duration : 0;
    const bars = this.peaks || new Array(POINTS).fill(0.08);
    const step = width / bars.length;
    for (let i = 0; i < bars.length; i++) {
      const bar = Math.max(bars[i] * height, ratio * 2);
      g.fillStyle = i / bars.length < done ? played : rest;
      g.fillRect(i * step, (height - bar) / 2, Math.max(step - ratio, 1), bar);
    }
  }

  pointer(event) {
    if (!this.duration) return;
    const box = this.canvas.getBoundingClientRect();
    const at = (e) => Math.min(Math.max((e.clientX - box.left) / box.width, 0), 1) * this.duration;
    this.canvas.setPointerCapture(event.pointerId);
    const move = (e) => this.update(at(e), this.duration);
    const up = (e) => {
      this.canvas.removeEventListener("pointermove", move);
      this.seek(at(e));
    };
    this.canvas.addEventListener("pointermove", move);
    this.canvas.addEventListener("pointerup", up, { once: true });
  }

  key(event) {
    const steps = { ArrowLeft: -5, ArrowRight: 5, PageDown: -30, PageUp: 30 };
    if (event.key in steps) this.seek(Math.max(this.position + steps[event.key], 0));
    else if (event.key === "Home") this.seek(0);
    else if (event.key === "End") this.seek(Math.max(this.duration - 1, 0));
    else return;
    event.preventDefault();
    event.stopPropagation();
  }
}
