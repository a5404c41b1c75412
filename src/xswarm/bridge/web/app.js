// The xswarm web client: microphone -> Opus (WebCodecs) -> Ogg pages -> /api/chat, and back.
// Kyutai's Moshi protocol: binary messages whose first byte is the kind (0x00 handshake from
// the bridge once the call is admitted, 0x01 Ogg-Opus pages, 0x02 the model's words).
import { OggOpusWriter, OggReader, isOpusHeader } from "./ogg.js";

const RATE = 24000; // the model's rate; the AudioContext, encoder and decoder all run at it
const FRAME_US = 20000;
const VOICED_RMS = 0.02; // about -34 dBFS: above it a 20 ms frame counts as voice
const SILENT_FRAMES_TO_END = 10; // 200 ms of quiet ends a burst of speech
const KIND = { HANDSHAKE: 0x00, AUDIO: 0x01, TEXT: 0x02 };

const $ = (id) => document.getElementById(id);
const ui = {
  call: $("call"),
  hangup: $("hangup"),
  token: $("token"),
  state: $("state"),
  latency: $("latency"),
  buffer: $("buffer"),
  transcript: $("transcript"),
};

// What happened on the call, for the read-outs; the browser test reads it as window.__xswarm.
const stats = {
  state: "idle",
  sentPages: 0,
  sentSamples: 0,
  receivedPackets: 0,
  decodedSamples: 0,
  decodedEnergy: 0,
  playedSamples: 0,
  playedEnergy: 0,
  underruns: 0,
  bufferedMs: 0,
  latencyMs: null,
  text: "",
  errors: [],
  closeCode: null,
  closeReason: "",
};
if (new URLSearchParams(location.search).has("test")) window.__xswarm = stats;

// Speech onsets and ends, with a short hang-over so that the gap between words is not an end.
class VoiceActivity {
  constructor() {
    this.voiced = false;
    this.quiet = 0;
    this.changedAt = null;
  }

  // Returns "onset", "end" or null for one frame measured at ``now``.
  frame(samples, now) {
    let sum = 0;
    for (let i = 0; i < samples.length; i++) sum += samples[i] * samples[i];
    const loud = Math.sqrt(sum / samples.length) > VOICED_RMS;
    if (loud) {
      this.quiet = 0;
      if (!this.voiced) {
        this.voiced = true;
        this.changedAt = now;
        return "onset";
      }
    } else if (this.voiced && ++this.quiet >= SILENT_FRAMES_TO_END) {
      this.voiced = false;
      this.changedAt = now - (SILENT_FRAMES_TO_END * FRAME_US) / 1000;
      return "end";
    }
    return null;
  }
}

// Linear interpolation between rates: enough for a voice already band-limited by Opus.
function resample(samples, from, to) {
  if (from === to) return samples;
  const out = new Float32Array(Math.round((samples.length * to) / from));
  const step = from / to;
  for (let i = 0; i < out.length; i++) {
    const at = i * step;
    const j = Math.floor(at);
    const next = samples[Math.min(j + 1, samples.length - 1)];
    out[i] = samples[j] + (next - samples[j]) * (at - j);
  }
  return out;
}

function setState(text, state) {
  ui.state.textContent = text;
  if (state) stats.state = state;
  document.body.dataset.state = stats.state;
}

function fail(error) {
  const message = error instanceof Error ? error.message : String(error);
  stats.errors.push(message);
  setState(`Error: ${message}`, "error");
  if (call) call.end();
}

async function checkCodecs() {
  if (!("AudioEncoder" in window && "AudioDecoder" in window)) {
    throw new Error(
      "this browser has no WebCodecs audio (AudioEncoder/AudioDecoder); use a current Chrome, Edge, Firefox or Safari",
    );
  }
  const config = { codec: "opus", sampleRate: RATE, numberOfChannels: 1 };
  const [encoder, decoder] = await Promise.all([
    AudioEncoder.isConfigSupported({ ...config, bitrate: 32000 }),
    AudioDecoder.isConfigSupported(config),
  ]);
  if (!encoder.supported || !decoder.supported) {
    throw new Error("this browser's WebCodecs cannot encode and decode Opus at 24 kHz");
  }
}

class Call {
  constructor(token) {
    this.token = token;
    this.admitted = false;
    this.ended = false;
    this.caller = new VoiceActivity();
    this.reply = new VoiceActivity();
    this.captureUs = 0;
    this.replyUs = 0;
  }

  async start() {
    await checkCodecs();
    setState("Asking for the microphone…", "starting");
    this.media = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true },
    });
    this.context = new AudioContext({ sampleRate: RATE, latencyHint: "interactive" });
    await this.context.audioWorklet.addModule("/web/worklets.js");
    this.startAudio();
    this.startCodecs();
    this.connect();
  }

  startAudio() {
    const source = this.context.createMediaStreamSource(this.media);
    const capture = new AudioWorkletNode(this.context, "xswarm-capture");
    const mute = this.context.createGain();
    mute.gain.value = 0; // the capture node must be pulled, but the caller should not hear it
    source.connect(capture).connect(mute).connect(this.context.destination);
    capture.port.onmessage = (event) => this.captured(event.data);
    this.playback = new AudioWorkletNode(this.context, "xswarm-playback", {
      outputChannelCount: [1],
      processorOptions: { prebufferMs: 60, maxBufferMs: 300 },
    });
    this.playback.connect(this.context.destination);
    this.playback.port.onmessage = (event) => this.played(event.data);
  }

  startCodecs() {
    this.writer = new OggOpusWriter({ channels: 1, inputRate: RATE });
    this.reader = new OggReader();
    this.encoder = new AudioEncoder({
      output: (chunk) => {
        const packet = new Uint8Array(chunk.byteLength);
        chunk.copyTo(packet);
        this.send(this.writer.packetPage(packet, chunk.duration ?? FRAME_US));
      },
      error: fail,
    });
    this.encoder.configure({ codec: "opus", sampleRate: RATE, numberOfChannels: 1, bitrate: 32000 });
    this.decoder = new AudioDecoder({ output: (data) => this.decoded(data), error: fail });
    this.decoder.configure({ codec: "opus", sampleRate: RATE, numberOfChannels: 1 });
  }

  connect() {
    const url = new URL("/api/chat", location.href);
    url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    if (this.token) url.searchParams.set("token", this.token);
    setState("Calling…", "calling");
    this.ws = new WebSocket(url);
    this.ws.binaryType = "arraybuffer";
    this.ws.onmessage = (event) => this.received(new Uint8Array(event.data));
    this.ws.onclose = (event) => this.closed(event);
  }

  send(page) {
    if (this.ws.readyState !== WebSocket.OPEN) return;
    const message = new Uint8Array(1 + page.length);
    message[0] = KIND.AUDIO;
    message.set(page, 1);
    this.ws.send(message);
    stats.sentPages++;
  }

  received(message) {
    const kind = message[0];
    if (kind === KIND.HANDSHAKE && !this.admitted) {
      this.admitted = true;
      for (const page of this.writer.headerPages()) this.send(page);
      setState("In call: speak, the model answers.", "in-call");
      ui.hangup.disabled = false;
    } else if (kind === KIND.AUDIO) {
      for (const packet of this.reader.push(message.subarray(1))) {
        if (isOpusHeader(packet)) continue;
        stats.receivedPackets++;
        this.decoder.decode(new EncodedAudioChunk({ type: "key", timestamp: this.replyUs, data: packet }));
        this.replyUs += FRAME_US;
      }
    } else if (kind === KIND.TEXT) {
      const words = new TextDecoder().decode(message.subarray(1));
      stats.text += words;
      ui.transcript.append(document.createTextNode(words));
    }
  }

  captured(frame) {
    this.caller.frame(frame, performance.now());
    if (!this.admitted || this.ended) return;
    this.encoder.encode(
      new AudioData({
        format: "f32-planar",
        sampleRate: RATE,
        numberOfFrames: frame.length,
        numberOfChannels: 1,
        timestamp: this.captureUs,
        data: frame,
      }),
    );
    this.captureUs += FRAME_US;
    stats.sentSamples += frame.length;
  }

  decoded(data) {
    const raw = new Float32Array(data.numberOfFrames);
    data.copyTo(raw, { planeIndex: 0, format: "f32-planar" });
    // Chrome's Opus decoder answers at 48 kHz whatever rate it was configured with.
    const pcm = resample(raw, data.sampleRate, this.context.sampleRate);
    data.close();
    stats.decodedSamples += pcm.length;
    for (let i = 0; i < pcm.length; i++) stats.decodedEnergy += pcm[i] * pcm[i];
    // Latency: from the caller's last change (speech starting or ending) to when the reply's
    // voice will be heard, i.e. now plus what waits ahead of it in the jitter buffer.
    if (this.reply.frame(pcm, performance.now()) === "onset" && this.caller.changedAt !== null) {
      stats.latencyMs = Math.round(performance.now() + stats.bufferedMs - this.caller.changedAt);
      ui.latency.textContent = `${stats.latencyMs} ms`;
    }
    this.playback.port.postMessage(pcm, [pcm.buffer]);
  }

  played(report) {
    stats.playedSamples = report.played;
    stats.playedEnergy = report.energy;
    stats.underruns = report.underruns;
    stats.bufferedMs = report.bufferedMs;
    ui.buffer.textContent = `${Math.round(report.bufferedMs)} ms, ${report.underruns} underruns`;
  }

  closed(event) {
    stats.closeCode = event.code;
    stats.closeReason = event.reason;
    const why = event.reason || (this.admitted ? "" : "refused: the bridge is full, or the token is wrong or missing");
    if (!this.ended) setState(`Call ended (${event.code}${why ? `: ${why}` : ""}).`, "ended");
    this.end();
  }

  hangup() {
    setState("Call ended: you hung up.", "ended");
    this.end();
  }

  end() {
    if (this.ended) return;
    this.ended = true;
    if (this.ws && this.ws.readyState <= WebSocket.OPEN) this.ws.close(1000, "caller hung up");
    this.media?.getTracks().forEach((track) => track.stop());
    for (const codec of [this.encoder, this.decoder]) {
      if (codec && codec.state !== "closed") codec.close();
    }
    // The context stays open a moment so that the last words in the buffer are heard.
    setTimeout(() => this.context?.close(), 500);
    ui.call.disabled = false;
    ui.hangup.disabled = true;
    call = null;
  }
}

let call = null;

ui.call.addEventListener("click", () => {
  if (call) return;
  ui.call.disabled = true;
  ui.transcript.textContent = "";
  ui.latency.textContent = "–";
  call = new Call(ui.token.value.trim());
  call.start().catch(fail);
});
ui.hangup.addEventListener("click", () => call?.hangup());
