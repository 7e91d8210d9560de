// An AudioWorklet that hands the player's output to the page in blocks: what reaches the
// speakers, sample for sample, to measure a join (engine.tap(); the browser tests use it).
class Tap extends AudioWorkletProcessor {
  constructor() {
    super();
    this.block = new Float32Array(4096);
    this.filled = 0;
    this.on = true;
    this.port.onmessage = () => { this.on = false; this.flush(); this.port.postMessage({ done: true }); };
  }

  flush() {
    if (this.filled) this.port.postMessage({ samples: this.block.slice(0, this.filled) });
    this.filled = 0;
  }

  process(inputs) {
    if (!this.on) return false;
    const channel = inputs[0] && inputs[0][0];
    for (let i = 0; i < 128; i++) {
      this.block[this.filled++] = channel ? channel[i] : 0; // no input yet: silence, counted
      if (this.filled === this.block.length) this.flush();
    }
    return true;
  }
}
registerProcessor("tap", Tap);
