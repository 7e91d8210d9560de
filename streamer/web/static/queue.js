// The play queue: tracks in play order, the current one, shuffle and repeat. Pure state; the
// player saves it on the server (the queue Subsonic apps share) or, signed out, in this browser.

export class Queue extends EventTarget {
  constructor() {
    super();
    this.items = []; // track objects; an entry may appear twice
    this.index = -1;
    this.repeat = "off"; // off | all | one
    this.shuffled = null; // the order before shuffling, to put back
    this.version = 0; // counts changes: whoever waited on the network can tell it moved on
  }

  get current() { return this.items[this.index] || null; }

  changed(what = "items") { this.version++; this.dispatchEvent(new CustomEvent("change", { detail: what })); }

  nextIndex(step = 1) {
    if (!this.items.length) return -1;
    if (this.repeat === "one") return this.index;
    const i = this.index + step;
    if (i >= 0 && i < this.items.length) return i;
    return this.repeat === "all" ? (i + this.items.length) % this.items.length : -1;
  }

  get following() { const i = this.nextIndex(); return i >= 0 ? this.items[i] : null; }

  replace(tracks, index = 0) {
    this.items = [...tracks];
    this.index = tracks.length ? Math.min(Math.max(index, 0), tracks.length - 1) : -1;
    this.shuffled = null;
    this.changed();
  }

  playNext(tracks) {
    this.items.splice(this.index + 1, 0, ...tracks);
    if (this.index < 0) this.index = 0;
    this.changed();
  }

  add(tracks) {
    this.items.push(...tracks);
    if (this.index < 0) this.index = 0;
    this.changed();
  }

  remove(i) {
    if (i < 0 || i >= this.items.length) return;
    const wasCurrent = i === this.index;
    this.items.splice(i, 1);
    if (i < this.index || (wasCurrent && this.index === this.items.length)) this.index--;
    if (!this.items.length) this.index = -1;
    this.changed(wasCurrent ? "current" : "items");
  }

  move(from, to) {
    if (from === to || from < 0 || to < 0 || from >= this.items.length || to >= this.items.length) return;
    const [item] = this.items.splice(from, 1);
    this.items.splice(to, 0, item);
    if (this.index === from) this.index = to;
    else if (from < this.index && to >= this.index) this.index--;
    else if (from > this.index && to <= this.index) this.index++;
    this.changed();
  }

  clear() {
    this.items = [];
    this.index = -1;
    this.shuffled = null;
    this.changed();
  }

  // Shuffle what is still to come (the current track stays current); again: the order comes back.
  toggleShuffle() {
    if (this.shuffled) {
      const current = this.current;
      this.items = this.shuffled;
      this.index = Math.max(this.items.indexOf(current), 0);
      this.shuffled = null;
    } else {
      this.shuffled = [...this.items];
      const rest = this.items.splice(this.index + 1);
      for (let i = rest.length - 1; i > 0; i--) {
        const j = Math.floor(Math.random() * (i + 1));
        [rest[i], rest[j]] = [rest[j], rest[i]];
      }
      this.items.push(...rest);
    }
    this.changed();
  }

  cycleRepeat() {
    this.repeat = { off: "all", all: "one", one: "off" }[this.repeat];
    this.changed("repeat");
  }
}
