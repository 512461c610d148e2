// Deterministic bulk data made on the fly, so streaming tests move 100 MiB without ever holding
// it: byte i of a stream is i % 251 (a prime, so chunk boundaries never line up with the period).
import { createHash, type Hash } from 'node:crypto';
import { Readable } from 'node:stream';

const PERIOD = 251;
const MAX_CHUNK = 64 * 1024;
// One shared buffer one period longer than the largest chunk: every chunk is a view into it.
const SOURCE = Buffer.alloc(MAX_CHUNK + PERIOD);
for (let i = 0; i < SOURCE.length; i++) SOURCE[i] = i % PERIOD;

/** The bytes [offset, offset + length) of the pattern, as a view (length ≤ 64 KiB). */
export function patternChunk(offset: number, length: number): Buffer {
  if (length > MAX_CHUNK) throw new RangeError(`pattern chunk ${length} > ${MAX_CHUNK}`);
  const start = offset % PERIOD;
  return SOURCE.subarray(start, start + length);
}

/** A Readable of `totalBytes` pattern bytes in chunks of `chunkBytes`, honouring backpressure. */
export function patternStream(totalBytes: number, chunkBytes = MAX_CHUNK): Readable {
  let sent = 0;
  return new Readable({
    read() {
      if (sent >= totalBytes) {
        this.push(null);
        return;
      }
      const n = Math.min(chunkBytes, totalBytes - sent);
      const chunk = patternChunk(sent, n);
      sent += n;
      this.push(chunk);
    },
  });
}

/** sha256 of the first `totalBytes` pattern bytes, computed in chunks (no big allocation). */
export function patternDigest(totalBytes: number): string {
  const h = createHash('sha256');
  for (let off = 0; off < totalBytes; off += MAX_CHUNK) h.update(patternChunk(off, Math.min(MAX_CHUNK, totalBytes - off)));
  return h.digest('hex');
}

/** Counts and hashes bytes as they pass, keeping none of them. */
export class ByteTally {
  bytes = 0;
  private readonly hash: Hash = createHash('sha256');
  add(chunk: Buffer): void {
    this.bytes += chunk.length;
    this.hash.update(chunk);
  }
  digest(): string {
    return this.hash.digest('hex');
  }
}
