// The original's body, streamed to its own client exactly as before (same chunks, same
// backpressure: write() answers what the client's sink answers) while a copy of up to
// `maxBytes` is kept for duplicates. The copy never slows the original: it is taken after the
// chunk was handed on, and past the cap copying stops and only counting goes on.
import type { BodySink, ResponseBody } from '../../stack/types.ts';
import type { Trailers } from './stored-response.ts';

/** How the copy ended; exactly one of complete/cut is told, oversize at most once before it. */
export interface TeeEvents {
  /** The body ended whole within the cap. */
  complete(body: Buffer, trailers: Trailers | null): void;
  /** The body passed the cap: it will not be stored (the original still streams on). */
  oversize(): void;
  /** The body failed, or was thrown away, before its end. */
  cut(reason: Error | undefined): void;
}

export class TeeBody implements ResponseBody {
  readonly #inner: ResponseBody;
  readonly #copy: BodyCopy;

  constructor(inner: ResponseBody, maxBytes: number, events: TeeEvents) {
    this.#inner = inner;
    this.#copy = new BodyCopy(maxBytes, events);
  }

  pipeTo(sink: BodySink): void {
    this.#inner.pipeTo(new TeeSink(sink, this.#copy));
  }

  discard(): void {
    this.#inner.discard();
    this.#copy.cut(undefined);
  }
}

class BodyCopy {
  readonly #maxBytes: number;
  readonly #events: TeeEvents;
  #chunks: Buffer[] = [];
  #bytes = 0;
  #over = false;
  #ended = false;

  constructor(maxBytes: number, events: TeeEvents) {
    this.#maxBytes = maxBytes;
    this.#events = events;
  }

  add(chunk: Buffer): void {
    if (this.#over || this.#ended) return;
    this.#bytes += chunk.length;
    if (this.#bytes > this.#maxBytes) {
      this.#over = true;
      this.#chunks = [];
      this.#events.oversize();
      return;
    }
    // A copy, not the chunk: a chunk may be a view into a larger socket read buffer, which
    // would otherwise stay alive (uncounted) as long as the stored entry does.
    if (chunk.length > 0) this.#chunks.push(Buffer.from(chunk));
  }

  end(trailers: Trailers | null): void {
    if (this.#ended) return;
    this.#ended = true;
    if (this.#over) return;
    const chunks = this.#chunks;
    this.#chunks = [];
    const body = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, this.#bytes);
    this.#events.complete(body, trailers);
  }

  cut(reason: Error | undefined): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#chunks = [];
    this.#events.cut(reason);
  }
}

class TeeSink implements BodySink {
  readonly #sink: BodySink;
  readonly #copy: BodyCopy;

  constructor(sink: BodySink, copy: BodyCopy) {
    this.#sink = sink;
    this.#copy = copy;
  }

  write(chunk: Buffer): boolean {
    const flowing = this.#sink.write(chunk);
    this.#copy.add(chunk);
    return flowing;
  }

  flush(): void {
    this.#sink.flush();
  }

  onDrain(resume: () => void): void {
    this.#sink.onDrain(resume);
  }

  end(trailers: Record<string, string | string[]> | null, last?: Buffer): void {
    // The client gets its last bytes first; storing (and waking duplicates) comes after.
    this.#sink.end(trailers, last);
    if (last !== undefined) this.#copy.add(last);
    this.#copy.end(trailers);
  }

  fail(err: Error): void {
    this.#sink.fail(err);
    this.#copy.cut(err);
  }
}
