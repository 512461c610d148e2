// One key in flight: waiters get the lead's outcome, leave on cancellation or a passed deadline,
// and the oldest takes over when the lead ends with nothing stored.
import { describe, expect, it } from 'vitest';
import { InFlight, type FlightOutcome } from '../../../../src/policies/idempotency/in-flight.ts';
import type { StoredResponse } from '../../../../src/policies/idempotency/stored-response.ts';
import { SluiceError } from '../../../../src/stack/errors.ts';
import { cancel } from '../../../../src/stack/types.ts';
import { testContext } from '../../../support/context.ts';
import { FakeClock } from '../../../support/fake-clock.ts';

const STORED: StoredResponse = { statusCode: 201, headers: { 'content-type': 'text/plain' }, body: Buffer.from('made'), trailers: null };

describe('InFlight', () => {
  it('every waiter gets the stored outcome, and the cancellation slot is free again', async () => {
    const clock = new FakeClock();
    const flight = new InFlight('POST a/x', 10);
    const ctxs = [testContext(), testContext()];
    const waits = ctxs.map((c) => flight.wait(c, clock));
    expect(flight.waiting).toBe(2);
    flight.complete(STORED);
    const got = await Promise.all(waits);
    expect(got).toEqual([
      { kind: 'stored', response: STORED },
      { kind: 'stored', response: STORED },
    ]);
    expect(ctxs.map((c) => c.onCancel)).toEqual([undefined, undefined]);
    expect(flight.waiting).toBe(0);
  });

  it('fail() gives every waiter the error', async () => {
    const flight = new InFlight('POST a/x', 10);
    const wait = flight.wait(testContext(), new FakeClock());
    const err = new SluiceError('idempotency-conflict', 'too big');
    flight.fail(err);
    expect(await wait).toEqual({ kind: 'error', error: err });
  });

  it('promote() hands the lead to the oldest waiter only; the others keep waiting', async () => {
    const clock = new FakeClock();
    const flight = new InFlight('POST a/x', 10);
    const first = flight.wait(testContext(), clock);
    const second = flight.wait(testContext(), clock);
    expect(flight.promote()).toBe(true);
    expect(await first).toEqual({ kind: 'lead' });
    expect(flight.waiting).toBe(1);
    flight.complete(STORED);
    expect((await second).kind).toBe('stored');
    expect(flight.promote()).toBe(false);
  });

  it('is full at maxWaiters', () => {
    const flight = new InFlight('POST a/x', 2);
    const clock = new FakeClock();
    void flight.wait(testContext(), clock);
    expect(flight.full).toBe(false);
    void flight.wait(testContext(), clock);
    expect(flight.full).toBe(true);
  });

  it('a cancelled waiter leaves at once with the reason and is not promoted later', async () => {
    const clock = new FakeClock();
    const flight = new InFlight('POST a/x', 10);
    const ctx = testContext();
    const wait = flight.wait(ctx, clock);
    const other = flight.wait(testContext(), clock);
    const reason = new SluiceError('client-closed');
    cancel(ctx, reason);
    await expect(wait).rejects.toBe(reason);
    expect(flight.waiting).toBe(1);
    expect(flight.promote()).toBe(true);
    expect(await other).toEqual({ kind: 'lead' } satisfies FlightOutcome);
  });

  it('refuses to wait when already cancelled or past the deadline', async () => {
    const clock = new FakeClock(1000);
    const flight = new InFlight('POST a/x', 10);
    const gone = new SluiceError('client-closed');
    await expect(flight.wait(testContext({ cancelled: gone }), clock)).rejects.toBe(gone);
    await expect(flight.wait(testContext({ deadlineMs: 1000 }), clock)).rejects.toMatchObject({ code: 'deadline-exceeded' });
    expect(flight.waiting).toBe(0);
  });

  it('a waiter whose deadline comes first leaves with deadline-exceeded', async () => {
    const clock = new FakeClock(0);
    const flight = new InFlight('POST a/x', 10);
    // 1 ms of real timer: the backstop for a layer tested without the deadline layer around it.
    const ctx = testContext({ deadlineMs: 1 });
    await expect(flight.wait(ctx, clock)).rejects.toMatchObject({ code: 'deadline-exceeded' });
    expect(flight.waiting).toBe(0);
    expect(ctx.onCancel).toBeUndefined();
  });
});
