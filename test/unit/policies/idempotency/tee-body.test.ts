// The tee alone: the client's stream is unchanged (chunks, backpressure, head flush, trailers)
// and the copy ends exactly one way.
import { describe, expect, it } from 'vitest';
import { TeeBody, type TeeEvents } from '../../../../src/policies/idempotency/tee-body.ts';
import { CollectSink, FakeBody } from './fake-body.ts';

function recorder() {
  const events: string[] = [];
  let stored: Buffer | undefined;
  let trailers: unknown;
  const e: TeeEvents = {
    complete(body, t) {
      stored = body;
      trailers = t;
      events.push('complete');
    },
    oversize() {
      events.push('oversize');
    },
    cut(reason) {
      events.push(`cut:${reason?.message ?? 'discarded'}`);
    },
  };
  return { e, events, stored: () => stored, trailers: () => trailers };
}

describe('TeeBody', () => {
  it('passes every chunk on and keeps a copy of the whole body', () => {
    const inner = new FakeBody();
    const r = recorder();
    const tee = new TeeBody(inner, 100, r.e);
    const sink = new CollectSink();
    inner.write('held before the client attached, ');
    tee.pipeTo(sink);
    inner.write('then ');
    inner.end({ 'x-sum': 'abc' }, 'the end');
    expect(sink.body.toString()).toBe('held before the client attached, then the end');
    expect(sink.trailers).toEqual({ 'x-sum': 'abc' });
    expect(r.events).toEqual(['complete']);
    expect(r.stored()?.toString()).toBe('held before the client attached, then the end');
    expect(r.trailers()).toEqual({ 'x-sum': 'abc' });
  });

  it('keeps the client\'s backpressure: write answers what the client answers, drain reaches the source', () => {
    const inner = new FakeBody();
    const tee = new TeeBody(inner, 100, recorder().e);
    const sink = new CollectSink();
    tee.pipeTo(sink);
    sink.flowing = false;
    expect(inner.write('a')).toBe(false);
    let resumed = false;
    inner.sink!.onDrain(() => (resumed = true));
    sink.drain();
    expect(resumed).toBe(true);
    inner.sink!.flush();
    expect(sink.flushed).toBe(true);
  });

  it('past the cap: says oversize once, streams on to the client, never completes', () => {
    const inner = new FakeBody();
    const r = recorder();
    const tee = new TeeBody(inner, 4, r.e);
    const sink = new CollectSink();
    tee.pipeTo(sink);
    inner.write('abc');
    inner.write('de');
    inner.write('fgh');
    inner.end(null);
    expect(sink.body.toString()).toBe('abcdefgh');
    expect(sink.ended).toBe(true);
    expect(r.events).toEqual(['oversize']);
  });

  it('a body exactly at the cap is kept', () => {
    const inner = new FakeBody();
    const r = recorder();
    const tee = new TeeBody(inner, 4, r.e);
    tee.pipeTo(new CollectSink());
    inner.end(null, 'abcd');
    expect(r.stored()?.toString()).toBe('abcd');
  });

  it('a failure mid-body reaches the client and cuts the copy', () => {
    const inner = new FakeBody();
    const r = recorder();
    const tee = new TeeBody(inner, 100, r.e);
    const sink = new CollectSink();
    tee.pipeTo(sink);
    inner.write('part');
    inner.fail(new Error('reset'));
    expect(sink.failed?.message).toBe('reset');
    expect(r.events).toEqual(['cut:reset']);
  });

  it('discard throws the source away and cuts the copy', () => {
    const inner = new FakeBody();
    const r = recorder();
    new TeeBody(inner, 100, r.e).discard();
    expect(inner.discarded).toBe(true);
    expect(r.events).toEqual(['cut:discarded']);
  });

  it('keeps copies, not views of the source\'s buffers', () => {
    const inner = new FakeBody();
    const r = recorder();
    const tee = new TeeBody(inner, 100, r.e);
    tee.pipeTo(new CollectSink());
    const chunk = Buffer.from('abcd');
    inner.sink!.write(chunk);
    chunk.fill(0x7a);
    inner.end(null);
    expect(r.stored()?.toString()).toBe('abcd');
  });
});
