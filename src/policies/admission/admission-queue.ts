// Who goes in, who waits and who is refused when a request reaches admission: a pure decision
// over the numbers in play, and the bounded queue the waiting requests stand in. Priority
// shapes both: sheddable requests go first (refused before the app is full, never wait),
// critical ones last (served before default waiters, and when the queue is full a critical
// arrival takes the place of the newest default waiter, which has waited least).
import type { AdmissionPolicy, Priority } from '../../policy/types.ts';

/** Why a request was refused: the `reason` label of sluice_admission_shed_total. */
export type ShedReason = 'limit' | 'queue_full' | 'wait_timeout' | 'sheddable_share' | 'deadline';

export const SHED_REASONS: readonly ShedReason[] = Object.freeze(['limit', 'queue_full', 'wait_timeout', 'sheddable_share', 'deadline']);

export type Decision =
  | { readonly kind: 'admit' }
  | { readonly kind: 'wait' }
  /** Wait, in the place of the newest default waiter, which is refused (queue_full). */
  | { readonly kind: 'wait-evicting' }
  | { readonly kind: 'refuse'; readonly reason: ShedReason };

export interface AdmissionState {
  readonly inFlight: number;
  readonly limit: number;
  /** Requests waiting now, all priorities. */
  readonly waiting: number;
  /** Of which default priority (the ones a critical arrival may evict). */
  readonly waitingDefault: number;
}

export type AdmissionRules = Pick<AdmissionPolicy, 'sheddableShare' | 'queue'>;

const ADMIT: Decision = Object.freeze({ kind: 'admit' });
const WAIT: Decision = Object.freeze({ kind: 'wait' });
const WAIT_EVICTING: Decision = Object.freeze({ kind: 'wait-evicting' });
const REFUSE: Readonly<Record<ShedReason, Decision>> = Object.freeze({
  limit: Object.freeze({ kind: 'refuse', reason: 'limit' }),
  queue_full: Object.freeze({ kind: 'refuse', reason: 'queue_full' }),
  wait_timeout: Object.freeze({ kind: 'refuse', reason: 'wait_timeout' }),
  sheddable_share: Object.freeze({ kind: 'refuse', reason: 'sheddable_share' }),
  deadline: Object.freeze({ kind: 'refuse', reason: 'deadline' }),
});

/**
 * The decision for an arriving request.
 * @param remainingMs time left before its deadline (Infinity: none)
 * @param expectedMs the app's latency now when deadline-aware admission is on and the latency
 *   is known, else undefined
 */
export function decide(
  priority: Priority,
  s: AdmissionState,
  rules: AdmissionRules,
  remainingMs: number,
  expectedMs: number | undefined,
): Decision {
  // Starting it would only waste the app's time: it cannot be answered before its deadline.
  if (expectedMs !== undefined && remainingMs < expectedMs) return REFUSE.deadline;
  // Waiters, if any, came first: a new arrival never overtakes them.
  const full = s.inFlight >= s.limit || s.waiting > 0;
  if (priority === 'sheddable') {
    if (full) return REFUSE.limit;
    return s.inFlight >= Math.floor(s.limit * rules.sheddableShare) ? REFUSE.sheddable_share : ADMIT;
  }
  if (!full) return ADMIT;
  if (rules.queue.maxWaiting === 0 || rules.queue.maxWaitMs === 0) return REFUSE.limit;
  if (s.waiting < rules.queue.maxWaiting) return WAIT;
  return priority === 'critical' && s.waitingDefault > 0 ? WAIT_EVICTING : REFUSE.queue_full;
}

type Waiting = Exclude<Priority, 'sheddable'>;

/** A place in the queue; keep it to leave the queue early (cancelled, timed out). */
export interface WaitNode<T> {
  readonly item: T;
  readonly priority: Waiting;
  prev: WaitNode<T> | undefined;
  next: WaitNode<T> | undefined;
  queued: boolean;
}

class Line<T> {
  head: WaitNode<T> | undefined;
  tail: WaitNode<T> | undefined;
  size = 0;

  push(node: WaitNode<T>): void {
    node.prev = this.tail;
    if (this.tail === undefined) this.head = node;
    else this.tail.next = node;
    this.tail = node;
    this.size += 1;
  }

  unlink(node: WaitNode<T>): void {
    if (node.prev === undefined) this.head = node.next;
    else node.prev.next = node.next;
    if (node.next === undefined) this.tail = node.prev;
    else node.next.prev = node.prev;
    node.prev = undefined;
    node.next = undefined;
    this.size -= 1;
  }
}

/**
 * Two FIFO lines, critical before default; every operation is O(1), so leaving early costs the
 * same in a queue of a million as of ten. The bound is the caller's (decide() checks it).
 */
export class WaitQueue<T> {
  readonly #critical = new Line<T>();
  readonly #default = new Line<T>();

  get size(): number {
    return this.#critical.size + this.#default.size;
  }

  get defaults(): number {
    return this.#default.size;
  }

  push(priority: Waiting, item: T): WaitNode<T> {
    const node: WaitNode<T> = { item, priority, prev: undefined, next: undefined, queued: true };
    this.#line(priority).push(node);
    return node;
  }

  /** Leaves the queue; false when the node had already left. */
  remove(node: WaitNode<T>): boolean {
    if (!node.queued) return false;
    node.queued = false;
    this.#line(node.priority).unlink(node);
    return true;
  }

  /** The next to serve: the oldest critical waiter, else the oldest default one. */
  shift(): T | undefined {
    const node = this.#critical.head ?? this.#default.head;
    if (node === undefined) return undefined;
    this.remove(node);
    return node.item;
  }

  /** Takes out the newest default waiter (to make room for a critical one). */
  popNewestDefault(): T | undefined {
    const node = this.#default.tail;
    if (node === undefined) return undefined;
    this.remove(node);
    return node.item;
  }

  /** Empties the queue, oldest critical first. */
  drain(): T[] {
    const out: T[] = [];
    for (let item = this.shift(); item !== undefined; item = this.shift()) out.push(item);
    return out;
  }

  #line(priority: Waiting): Line<T> {
    return priority === 'critical' ? this.#critical : this.#default;
  }
}
