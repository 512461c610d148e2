// The part of opossum 10 this project uses. @types/opossum describes opossum 8 and lacks the
// Status methods and the mutable options the breaker relies on, so the surface is declared here.
declare module 'opossum' {
  import type { EventEmitter } from 'node:events';

  interface StatusOptions {
    rollingCountTimeout?: number;
    rollingCountBuckets?: number;
    rollingPercentilesEnabled?: boolean;
    enableSnapshots?: boolean;
  }

  interface Options extends StatusOptions {
    /** false: opossum does not time the action. */
    timeout?: number | false;
    errorThresholdPercentage?: number;
    volumeThreshold?: number;
    /** Read when the breaker opens, to arm the timer that moves it to half-open. */
    resetTimeout?: number;
  }

  namespace CircuitBreaker {
    class Status extends EventEmitter {
      /** Counts one event in the newest bucket. */
      increment(property: 'fires' | 'failures' | 'successes'): void;
      /** Sums over the window (a new object each read). */
      readonly stats: { readonly fires: number; readonly failures: number; readonly successes: number };
      shutdown(): void;
    }
  }

  class CircuitBreaker<A extends unknown[] = unknown[], R = unknown> extends EventEmitter {
    static newStatus(options: StatusOptions): CircuitBreaker.Status;
    constructor(action: (...args: A) => Promise<R>, options?: Options);
    readonly options: Options;
    fire(...args: A): Promise<R>;
    open(): void;
    close(): void;
    shutdown(): void;
  }

  export default CircuitBreaker;
}
