// A retry must resend the request body, and the client's stream can be read only once. Bodies up
// to a bound are read into memory before the first try; a body that turns out larger is passed on
// as a stream (prefix plus the rest) and that request is simply not retried. Memory per request
// is therefore never more than the bound, whatever the client sends.
import { PassThrough, type Readable } from 'node:stream';
import { releaseCancel, type RequestContext } from '../../stack/types.ts';

/**
 * The sidecar-wide bound on bytes held for replay. A request reserves its worst case (its
 * Content-Length, or the per-request bound when chunked) before reading; when the total would be
 * exceeded the request is sent unbuffered and not retried, so a burst of uploads cannot grow
 * memory past the configured total.
 */
export class ReplayAllowance {
  #limitBytes: number;
  #usedBytes = 0;

  constructor(limitBytes: number) {
    this.#limitBytes = limitBytes;
  }

  setLimit(limitBytes: number): void {
    this.#limitBytes = limitBytes;
  }

  get usedBytes(): number {
    return this.#usedBytes;
  }

  tryReserve(bytes: number): boolean {
    if (this.#usedBytes + bytes > this.#limitBytes) return false;
    this.#usedBytes += bytes;
    return true;
  }

  release(bytes: number): void {
    this.#usedBytes = Math.max(0, this.#usedBytes - bytes);
  }
}

export type Replayable = { readonly kind: 'buffer'; readonly body: Buffer } | { readonly kind: 'stream'; readonly body: Readable };

export function bufferForReplay(source: Readable, limitBytes: number, ctx: RequestContext): Promise<Replayable> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const cleanup = (): void => {
      source.off('data', onData);
      source.off('end', onEnd);
      source.off('error', onError);
      source.off('aborted', onAborted);
      releaseCancel(ctx, onCancel);
    };
    const onData = (chunk: Buffer): void => {
      size += chunk.length;
      chunks.push(chunk);
      if (size <= limitBytes) return;
      // Over the bound: hand on what was read and the rest of the stream, unbuffered.
      source.pause();
      cleanup();
      const rest = new PassThrough();
      for (const c of chunks) rest.write(c);
      source.pipe(rest);
      source.on('error', (err) => rest.destroy(err));
      resolve({ kind: 'stream', body: rest });
    };
    const onEnd = (): void => {
      cleanup();
      resolve({ kind: 'buffer', body: chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks, size) });
    };
    const onError = (err: Error): void => {
      cleanup();
      reject(err);
    };
    const onAborted = (): void => onError(new Error('client aborted the request body'));
    const onCancel = (reason: Error): void => {
      cleanup();
      reject(reason);
    };
    ctx.onCancel = onCancel;
    source.on('data', onData);
    source.on('end', onEnd);
    source.on('error', onError);
    source.on('aborted', onAborted);
  });
}
