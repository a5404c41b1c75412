// Audio worklets: the microphone cut into 20 ms frames, and the reply's jitter buffer.

const FRAME = 480; // 20 ms at 24 kHz, the rate the page's AudioContext runs at

class Capture extends AudioWorkletProcessor {
  constructor() {
    super();
    this.frame = new Float32Array(FRAME);
    this.filled = 0;
  }

  process(inputs) {
    const input = inputs[0][0];
    if (!input) return true;
    let read = 0;
    while (read < input.length) {
      const n = Math.min(FRAME - this.filled, input.length - read);
      this.frame.set(input.subarray(read, read + n), this.filled);
      this.filled += n;
      read += n;
      if (this.filled === FRAME) {
        this.port.postMessage(this.frame, [this.frame.buffer]);
        this.frame = new Float32Array(FRAME);
        this.filled = 0;
      }
    }
    return true;
  }
}

// Holds ``prebuffer`` of audio before it starts playing, and again after running dry, so
// that replies arriving unevenly play smoothly; never holds more than ``maxBuffer`` (the
// oldest is dropped), so a burst cannot turn into lasting delay.
class Playback extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const { prebufferMs = 60, maxBufferMs = 300 } = options.processorOptions || {};
    this.prebuffer = Math.round((sampleRate * prebufferMs) / 1000);
    this.capacity = Math.round((sampleRate * maxBufferMs) / 1000);
    this.ring = new Float32Array(this.capacity);
    this.start = 0;
    this.size = 0;
    this.playing = false;
    this.played = 0;
    this.energy = 0;
    this.underruns = 0;
    this.dropped = 0;
    this.sinceReport = 0;
    this.port.onmessage = (event) => this.push(event.data);
  }

  push(samples) {
    for (let i = 0; i < samples.length; i++) {
      if (this.size === this.capacity) {
        this.start = (this.start + 1) % this.capacity;
        this.size--;
        this.dropped++;
      }
      this.ring[(this.start + this.size) % this.capacity] = samples[i];
      this.size++;
    }
  }

  process(_inputs, outputs) {
    const out = outputs[0][0];
    if (!this.playing && this.size >= this.prebuffer) this.playing = true;
    if (this.playing) {
      const n = Math.min(out.length, this.size);
      for (let i = 0; i < n; i++) {
        const s = this.ring[(this.start + i) % this.capacity];
        out[i] = s;
        this.energy += s * s;
      }
      this.start = (this.start + n) % this.capacity;
      this.size -= n;
      this.played += n;
      if (n < out.length) {
        this.playing = false;
        this.underruns++;
      }
    }
    this.sinceReport += out.length;
    if (this.sinceReport >= sampleRate / 10) {
      this.sinceReport = 0;
      this.port.postMessage({
        bufferedMs: (this.size * 1000) / sampleRate,
        played: this.played,
        energy: this.energy,
        underruns: this.underruns,
        dropped: this.dropped,
      });
    }
    return true;
  }
}

registerProcessor("xswarm-capture", Capture);
registerProcessor("xswarm-playback", Playback);
