// A retry must resend the request body, and the client's stream can be read only once. Bodies up
// to a bound are read into memory before the first try; a body that turns out larger is passed on
// as a stream (prefix plus the rest) and that request is simply not retried. Memory per request
// is therefore never more than the bound, whatever the client sends.
import { PassThrough, type Readable } from 'node:stream';
import type { RequestContext } from '../../stack/types.ts';

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
      ctx.onCancel = undefined;
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
    ctx.onCancel = (reason) => {
      cleanup();
      reject(reason);
    };
    source.on('data', onData);
    source.on('end', onEnd);
    source.on('error', onError);
    source.on('aborted', onAborted);
  });
}
