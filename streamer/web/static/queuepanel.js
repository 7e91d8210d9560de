// The queue beside the page: play any entry, reorder by drag or by keyboard (Alt+↑/↓), remove,
// clear, shuffle. Every change goes through the Queue, which the player saves. The focus stays on
// the entry it was on when the list is painted again; Escape closes the panel, back to its button.
import { clock, h, plural, replace, toast } from "./dom.js";

export class QueuePanel {
  constructor(panel, player) {
    this.panel = panel;
    this.player = player;
    this.list = panel.querySelector("ol");
    this.dragged = -1;
    player.queue.addEventListener("change", () => this.paint());
    panel.querySelector("#queue-clear").addEventListener("click", () => { player.engine.stop(); player.queue.clear(); });
    panel.querySelector("#queue-shuffle").addEventListener("click", () => player.queue.toggleShuffle());
    panel.querySelector("#queue-close").addEventListener("click", () => this.toggle(false));
    panel.addEventListener("keydown", (e) => {
      if (e.key !== "Escape") return;
      e.preventDefault();
      this.toggle(false);
    });
    document.getElementById("queue-toggle").addEventListener("click", () => this.toggle());
    this.paint();
  }

  toggle(open = this.panel.hidden) {
    const button = document.getElementById("queue-toggle");
    const hadFocus = this.panel.contains(document.activeElement);
    this.panel.hidden = !open;
    button.setAttribute("aria-expanded", String(open));
    if (open) (this.list.querySelector("[aria-current]") || this.panel.querySelector("h2")).focus();
    else if (hadFocus) button.focus(); // not lost to the page's body
  }

  paint() {
    const { queue } = this.player;
    const focused = [...this.list.children].findIndex((li) => li.contains(document.activeElement));
    this.panel.querySelector(".queue-count").textContent = plural(queue.items.length, "track");
    replace(this.list, queue.items.map((track, i) => this.item(track, i)));
    if (focused >= 0) (this.list.children[Math.min(focused, queue.items.length - 1)] || this.panel.querySelector("h2")).focus();
  }

  item(track, i) {
    const { queue } = this.player;
    const li = h("li", { class: "q-item", draggable: "true", tabindex: "0", "aria-current": i === queue.index ? "true" : null,
                         "aria-label": `${track.title} by ${track.artist}${i === queue.index ? ", playing" : ""}` },
      h("button", { type: "button", class: "q-play", tabindex: "-1", onclick: () => this.player.playAt(i) },
        h("span", { class: "q-title" }, track.title), h("span", { class: "muted" }, `${track.artist} · ${clock(track.duration)}`)),
      h("button", { type: "button", class: "icon", "aria-label": `Move ${track.title} up`, onclick: () => this.move(i, i - 1) }, "↑"),
      h("button", { type: "button", class: "icon", "aria-label": `Move ${track.title} down`, onclick: () => this.move(i, i + 1) }, "↓"),
      h("button", { type: "button", class: "icon", "aria-label": `Remove ${track.title} from the queue`, onclick: () => this.remove(i) }, "✕"));
    li.addEventListener("keydown", (e) => this.key(e, i));
    li.addEventListener("dragstart", (e) => { this.dragged = i; e.dataTransfer.effectAllowed = "move"; li.classList.add("dragging"); });
    li.addEventListener("dragend", () => li.classList.remove("dragging"));
    li.addEventListener("dragover", (e) => { e.preventDefault(); e.dataTransfer.dropEffect = "move"; });
    li.addEventListener("drop", (e) => { e.preventDefault(); if (this.dragged >= 0) this.move(this.dragged, i); this.dragged = -1; });
    return li;
  }

  key(event, i) {
    if (event.target !== event.currentTarget) return;
    if (event.altKey && event.key === "ArrowUp") this.move(i, i - 1);
    else if (event.altKey && event.key === "ArrowDown") this.move(i, i + 1);
    else if (event.key === "ArrowUp") this.list.children[i - 1]?.focus();
    else if (event.key === "ArrowDown") this.list.children[i + 1]?.focus();
    else if (event.key === "Enter") this.player.playAt(i);
    else if (event.key === "Delete" || event.key === "Backspace") this.remove(i);
    else return;
    event.preventDefault();
    event.stopPropagation();
  }

  move(from, to) {
    const { queue } = this.player;
    if (to < 0 || to >= queue.items.length) return;
    queue.move(from, to);
    this.list.children[to]?.focus();
    toast(`Moved ${queue.items[to].title} to position ${to + 1}`);
  }

  remove(i) {
    this.player.removeAt(i);
    (this.list.children[Math.min(i, this.player.queue.items.length - 1)] || this.panel.querySelector("h2")).focus();
  }
}
