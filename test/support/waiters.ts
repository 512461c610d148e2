// Event-driven waits for test servers: a waiter's check re-runs whenever the server pokes (a
// request arrived, a query was answered), so tests wait on what happened, never on a sleep.

export interface Waiters {
  /** Re-runs every waiter's check; call it after each event that could satisfy one. */
  poke(): void;
  /** Resolves once `check` holds; rejects after `timeoutMs` naming `what` and `seen()`. */
  waitUntil(check: () => boolean, what: string, timeoutMs?: number): Promise<void>;
  /** Drops every waiter (the server is closing). */
  clear(): void;
}

/** `owner` and `seen` name the server and what it saw so far in a timeout's message. */
export function waiters(owner: string, seen: () => string): Waiters {
  const checks = new Set<() => void>();
  return {
    poke() {
      for (const c of [...checks]) c();
    },
    waitUntil(check, what, timeoutMs = 5000) {
      if (check()) return Promise.resolve();
      return new Promise<void>((resolve, reject) => {
        const t = setTimeout(() => {
          checks.delete(run);
          reject(new Error(`${owner}: timed out after ${timeoutMs} ms waiting for ${what} (saw ${seen()})`));
        }, timeoutMs);
        const run = (): void => {
          if (!check()) return;
          checks.delete(run);
          clearTimeout(t);
          resolve();
        };
        checks.add(run);
      });
    },
    clear() {
      checks.clear();
    },
  };
}
