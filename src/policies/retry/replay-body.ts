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

/**
 * A streamed body sent on as it arrives while a copy of up to `limitBytes` is kept, for calls
 * that cannot wait for their whole body before the first try: a gRPC client or bidirectional
 * stream sends its next message only after an answer. A retry gets the copy and then the rest of
 * the live body; once the body has outgrown the bound there is nothing to replay, and the call is
 * not retried. The try being fed sets the pace: when it stops reading, the client is paused.
 */
export class ReplayTap {
  readonly #source: Readable;
  readonly #limitBytes: number;
  #chunks: Buffer[] = [];
  #size = 0;
  #ended = false;
  #error: Error | undefined;
  #current: PassThrough | undefined;
  /** No retry can come any more: bytes pass on, nothing is copied. */
  #released = false;

  constructor(source: Readable, limitBytes: number) {
    this.#source = source;
    this.#limitBytes = limitBytes;
    source.on('data', (chunk: Buffer) => {
      this.#size += chunk.length;
      if (this.#size <= limitBytes && !this.#released) this.#chunks.push(chunk);
      else this.#chunks = [];
      const out = this.#current;
      if (out !== undefined && !out.write(chunk)) {
        source.pause();
        out.once('drain', () => {
          if (out === this.#current) source.resume();
        });
      }
    });
    source.on('end', () => {
      this.#ended = true;
      this.#current?.end();
    });
    source.on('error', (err: Error) => {
      this.#error = err;
      this.#current?.destroy(err);
    });
  }

  /** A try could be sent the whole body again. */
  get replayable(): boolean {
    return !this.#released && this.#size <= this.#limitBytes && this.#error === undefined;
  }

  /**
   * The call is committed to its last try (it answered, or no retry is left): the copy is
   * dropped and no more is kept, while the body goes on streaming to that try. The copy's memory
   * is bounded by the replay allowance only until here.
   */
  release(): void {
    this.#released = true;
    this.#chunks = [];
  }

  /** The body for the next try (the previous try's feed is cut off): the copy, then the rest. */
  next(): Buffer | Readable {
    const previous = this.#current;
    this.#current = undefined;
    if (previous !== undefined) {
      this.#source.unpipe(previous);
      previous.destroy();
    }
    if (this.#ended) return this.#chunks.length === 1 ? (this.#chunks[0] as Buffer) : Buffer.concat(this.#chunks, this.#size);
    const out = new PassThrough();
    out.on('error', () => undefined);
    for (const chunk of this.#chunks) out.write(chunk);
    this.#current = out;
    this.#source.resume();
    return out;
  }
}
