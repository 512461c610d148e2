// A streamed ResponseBody the test drives by hand (chunks, end, failure), and a sink that
// collects what reaches "the client", so the layer's tee is tested without sockets or timers.
import type { BodySink, ProxyResponse, ResponseBody } from '../../../../src/stack/types.ts';

type Trailers = Record<string, string | string[]>;

/** Body events before pipeTo are held, as the upstream exchange holds early chunks. */
export class FakeBody implements ResponseBody {
  sink: BodySink | undefined;
  discarded = false;
  readonly #held: ((s: BodySink) => void)[] = [];

  pipeTo(sink: BodySink): void {
    if (this.sink !== undefined) throw new Error('FakeBody piped twice');
    this.sink = sink;
    for (const step of this.#held.splice(0)) step(sink);
  }

  discard(): void {
    this.discarded = true;
  }

  /** What the sink answered for this chunk (true while held). */
  write(chunk: string | Buffer): boolean {
    const c = Buffer.from(chunk);
    if (this.sink === undefined) {
      this.#held.push((s) => s.write(c));
      return true;
    }
    return this.sink.write(c);
  }

  end(trailers: Trailers | null = null, last?: string | Buffer): void {
    const l = last === undefined ? undefined : Buffer.from(last);
    if (this.sink === undefined) this.#held.push((s) => s.end(trailers, l));
    else this.sink.end(trailers, l);
  }

  fail(err: Error): void {
    if (this.sink === undefined) this.#held.push((s) => s.fail(err));
    else this.sink.fail(err);
  }
}

/** The client's side: collects chunks, reports backpressure when told to. */
export class CollectSink implements BodySink {
  readonly chunks: Buffer[] = [];
  trailers: Trailers | null = null;
  ended = false;
  failed: Error | undefined;
  flushed = false;
  /** What write() answers: false simulates a slow client. */
  flowing = true;
  readonly #drains: (() => void)[] = [];
  readonly #done: Promise<void>;
  #finish: () => void = () => {};

  constructor() {
    this.#done = new Promise((resolve) => (this.#finish = resolve));
  }

  get body(): Buffer {
    return Buffer.concat(this.chunks);
  }

  write(chunk: Buffer): boolean {
    this.chunks.push(chunk);
    return this.flowing;
  }

  flush(): void {
    this.flushed = true;
  }

  onDrain(resume: () => void): void {
    this.#drains.push(resume);
  }

  /** The slow client caught up. */
  drain(): void {
    this.flowing = true;
    for (const r of this.#drains.splice(0)) r();
  }

  get drainWaiters(): number {
    return this.#drains.length;
  }

  end(trailers: Trailers | null, last?: Buffer): void {
    if (last !== undefined) this.chunks.push(last);
    this.trailers = trailers;
    this.ended = true;
    this.#finish();
  }

  fail(err: Error): void {
    this.failed = err;
    this.#finish();
  }

  /** Resolves when the body ended or failed. */
  done(): Promise<void> {
    return this.#done;
  }
}

/** The whole body of a response as a client would read it (trailers too). */
export async function readBody(res: ProxyResponse): Promise<{ body: Buffer | null; trailers: Trailers | null }> {
  const b = res.body;
  if (b === null) return { body: null, trailers: null };
  if (Buffer.isBuffer(b)) return { body: b, trailers: null };
  const sink = new CollectSink();
  b.pipeTo(sink);
  await sink.done();
  if (sink.failed) throw sink.failed;
  return { body: sink.body, trailers: sink.trailers };
}
