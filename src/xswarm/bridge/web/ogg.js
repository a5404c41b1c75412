// Ogg page framing for Opus (RFC 3533, RFC 7845): what the bridge's sphn reader accepts.
// Pure functions and two small classes, no browser API, so the test can check the bytes.

const CRC_TABLE = (() => {
  // CRC-32 with polynomial 0x04C11DB7, not reflected, initial value 0, no final xor (Ogg's).
  const table = new Uint32Array(256);
  for (let i = 0; i < 256; i++) {
    let r = i << 24;
    for (let bit = 0; bit < 8; bit++) {
      r = r & 0x80000000 ? (r << 1) ^ 0x04c11db7 : r << 1;
    }
    table[i] = r >>> 0;
  }
  return table;
})();

export function oggCrc(bytes) {
  let crc = 0;
  for (let i = 0; i < bytes.length; i++) {
    crc = ((crc << 8) ^ CRC_TABLE[((crc >>> 24) ^ bytes[i]) & 0xff]) >>> 0;
  }
  return crc >>> 0;
}

export const BOS = 0x02;
export const EOS = 0x04;
const CONTINUED = 0x01;
const OPUS_GRANULE_RATE = 48000; // RFC 7845: granule positions count 48 kHz samples

// One page holding one whole packet (the lacing values end with one below 255).
export function oggPage(packet, { granule, serial, sequence, flags = 0 }) {
  const lacing = [];
  let left = packet.length;
  while (left >= 255) {
    lacing.push(255);
    left -= 255;
  }
  lacing.push(left);
  if (lacing.length > 255) throw new Error(`Opus packet of ${packet.length} bytes is too big for one Ogg page`);
  const page = new Uint8Array(27 + lacing.length + packet.length);
  const view = new DataView(page.buffer);
  page.set([0x4f, 0x67, 0x67, 0x53], 0); // "OggS"
  page[4] = 0; // stream structure version
  page[5] = flags;
  view.setBigUint64(6, BigInt(granule), true);
  view.setUint32(14, serial >>> 0, true);
  view.setUint32(18, sequence >>> 0, true);
  page[26] = lacing.length;
  page.set(lacing, 27);
  page.set(packet, 27 + lacing.length);
  view.setUint32(22, oggCrc(page), true); // computed with the CRC field still zero
  return page;
}

export function opusHead({ channels, inputRate, preSkip }) {
  const head = new Uint8Array(19);
  const view = new DataView(head.buffer);
  head.set(new TextEncoder().encode("OpusHead"), 0);
  head[8] = 1; // version
  head[9] = channels;
  view.setUint16(10, preSkip, true);
  view.setUint32(12, inputRate, true);
  view.setInt16(16, 0, true); // output gain
  head[18] = 0; // channel mapping family: mono or stereo
  return head;
}

export function opusTags(vendor = "xswarm web client") {
  const name = new TextEncoder().encode(vendor);
  const tags = new Uint8Array(8 + 4 + name.length + 4);
  const view = new DataView(tags.buffer);
  tags.set(new TextEncoder().encode("OpusTags"), 0);
  view.setUint32(8, name.length, true);
  tags.set(name, 12);
  view.setUint32(12 + name.length, 0, true); // no user comments
  return tags;
}

// Turns Opus packets into an Ogg stream: the two header pages first, then a page per packet.
export class OggOpusWriter {
  constructor({ channels = 1, inputRate, preSkip = 312, serial }) {
    this.channels = channels;
    this.inputRate = inputRate;
    this.preSkip = preSkip;
    this.serial = serial ?? (Math.random() * 0x100000000) >>> 0;
    this.sequence = 0;
    this.granule = 0;
  }

  headerPages() {
    const head = opusHead(this);
    return [
      this._page(head, BOS),
      this._page(opusTags(), 0),
    ];
  }

  // ``durationUs``: the packet's audio in microseconds (EncodedAudioChunk.duration).
  packetPage(packet, durationUs) {
    this.granule += Math.round((durationUs * OPUS_GRANULE_RATE) / 1e6);
    return this._page(packet, 0);
  }

  _page(packet, flags) {
    return oggPage(packet, { granule: this.granule, serial: this.serial, sequence: this.sequence++, flags });
  }
}

// Splits an Ogg byte stream, fed in arbitrary pieces, back into packets (header packets too).
export class OggReader {
  constructor() {
    this.buffer = new Uint8Array(0);
    this.partial = [];
  }

  push(bytes) {
    const joined = new Uint8Array(this.buffer.length + bytes.length);
    joined.set(this.buffer, 0);
    joined.set(bytes, this.buffer.length);
    this.buffer = joined;
    const packets = [];
    for (;;) {
      if (this.buffer.length < 27) break;
      if (this.buffer[0] !== 0x4f || this.buffer[1] !== 0x67 || this.buffer[2] !== 0x67 || this.buffer[3] !== 0x53) {
        throw new Error("Ogg stream out of sync: expected a page starting with OggS");
      }
      const segments = this.buffer[26];
      const headerLength = 27 + segments;
      if (this.buffer.length < headerLength) break;
      let bodyLength = 0;
      for (let i = 0; i < segments; i++) bodyLength += this.buffer[27 + i];
      if (this.buffer.length < headerLength + bodyLength) break;
      if (!(this.buffer[5] & CONTINUED)) this.partial = [];
      let offset = headerLength;
      for (let i = 0; i < segments; i++) {
        const size = this.buffer[27 + i];
        this.partial.push(this.buffer.subarray(offset, offset + size));
        offset += size;
        if (size < 255) {
          packets.push(concat(this.partial));
          this.partial = [];
        }
      }
      this.buffer = this.buffer.slice(headerLength + bodyLength);
    }
    return packets;
  }
}

function concat(parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

export function isOpusHeader(packet) {
  const magic = new TextDecoder().decode(packet.subarray(0, 8));
  return magic === "OpusHead" || magic === "OpusTags";
}
