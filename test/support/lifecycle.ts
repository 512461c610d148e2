// Per-test resource teardown and bounded waiting on outside state.
import { afterEach } from 'vitest';

interface Closable {
  close(): Promise<void>;
}

/**
 * Returns `track(x)`: x is closed after the current test, newest first, even when the test
 * fails, so a failing test never leaks a listener into the next one.
 */
export function closeAfterEach(): <T extends Closable>(x: T) => T {
  let open: Closable[] = [];
  afterEach(async () => {
    const list = open.reverse();
    open = [];
    for (const c of list) await c.close().catch(() => {});
  });
  return <T extends Closable>(x: T): T => {
    open.push(x);
    return x;
  };
}

/**
 * Polls `check` until it returns a value other than undefined/false, for state only observable
 * from outside (an admin endpoint); bounded by `timeoutMs`, and the failure names `what`.
 */
export async function eventually<T>(what: string, check: () => Promise<T | undefined | false>, timeoutMs = 3000, everyMs = 20): Promise<T> {
  const until = performance.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v !== undefined && v !== false) return v;
    } catch (e) {
      last = e;
    }
    if (performance.now() > until) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${String(last)}` : ''}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
