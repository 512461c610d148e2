// What the service knows of each sidecar, and the push decision: send a sidecar its policy only
// when the version it should run differs from what it runs, is not already on its way, and is not
// one it refused (xDS: a NACKed version is not resent until the policy changes). No sockets here:
// `send` is given by the server, so the decisions are tested alone.
import { randomBytes } from 'node:crypto';
import type { Ack, ControlMessage, Health, Hello } from './protocol.ts';
import { selectPolicy, type PolicySet } from './policy-set.ts';

export interface LastError {
  /** The version refused, and the one kept. */
  readonly version: string;
  readonly commit: string;
  readonly kept: string;
  readonly message: string;
  readonly errors: readonly string[];
  readonly atMs: number;
}

export interface SidecarRecord {
  readonly id: string;
  service: string;
  labels: Readonly<Record<string, string>>;
  sluiceVersion: string;
  connected: boolean;
  connectedAtMs: number;
  lastSeenMs: number;
  appliedVersion: string;
  appliedCommit: string;
  /** The policy it should run (its selector's match in the good set), if any. */
  desired: { readonly version: string; readonly commit: string; readonly file: string } | undefined;
  pending: { readonly nonce: string; readonly version: string; readonly commit: string; readonly sentAtMs: number } | undefined;
  /** A version it NACKed: not sent again until the desired version changes. */
  rejectedVersion: string | undefined;
  lastError: LastError | undefined;
  health: Health | undefined;
  /** Sends on the sidecar's stream while it is connected. */
  send: ((m: ControlMessage) => void) | undefined;
}

export interface FleetEvents {
  pushed(record: SidecarRecord): void;
  acked(record: SidecarRecord, latencyMs: number): void;
  nacked(record: SidecarRecord): void;
}

/** Disconnected sidecars are remembered this long, so the fleet view shows who went away. */
const FORGET_AFTER_MS = 10 * 60_000;

export class Fleet {
  readonly #records = new Map<string, SidecarRecord>();
  readonly #events: FleetEvents;
  readonly #now: () => number;
  readonly #maxSidecars: number;
  #set: PolicySet | undefined;

  constructor(events: FleetEvents, maxSidecars: number, now: () => number = Date.now) {
    this.#events = events;
    this.#maxSidecars = maxSidecars;
    this.#now = now;
  }

  get set(): PolicySet | undefined {
    return this.#set;
  }

  get connected(): number {
    let n = 0;
    for (const r of this.#records.values()) if (r.connected) n++;
    return n;
  }

  records(): SidecarRecord[] {
    this.#forget();
    return [...this.#records.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }

  /** A sidecar said hello on a new stream. undefined when the fleet is full. */
  connect(hello: Hello, send: (m: ControlMessage) => void): SidecarRecord | undefined {
    this.#forget();
    const now = this.#now();
    // What the hello says is the truth now, also on a reconnect (to this replica or from another).
    const said = {
      service: hello.service,
      labels: hello.labels,
      sluiceVersion: hello.sluiceVersion,
      connected: true,
      connectedAtMs: now,
      lastSeenMs: now,
      appliedVersion: hello.appliedVersion,
      appliedCommit: hello.appliedCommit,
      pending: undefined,
      // A new stream starts over, as in xDS: a version refused before (by an older release of
      // the sidecar, say) is offered again.
      rejectedVersion: undefined,
      send,
    };
    let r = this.#records.get(hello.sidecarId);
    if (r === undefined) {
      if (this.connected >= this.#maxSidecars) return undefined;
      // Room is for connected sidecars: the oldest one remembered after leaving makes way.
      if (this.#records.size >= this.#maxSidecars) this.#evictOldestGone();
      r = { id: hello.sidecarId, ...said, desired: undefined, lastError: undefined, health: undefined };
      this.#records.set(r.id, r);
    } else Object.assign(r, said);
    // The first answer on a stream is always the current policy, even one it already runs: the
    // sidecar then knows it is in sync (a sidecar that waits for its first policy becomes ready).
    this.#sync(r, true);
    return r;
  }

  /** The stream of `record` ended; a newer stream of the same sidecar is left alone. */
  disconnect(record: SidecarRecord, send: (m: ControlMessage) => void): void {
    if (record.send !== send) return;
    record.connected = false;
    record.send = undefined;
    record.pending = undefined;
    record.lastSeenMs = this.#now();
  }

  ack(record: SidecarRecord, ack: Ack): void {
    record.lastSeenMs = this.#now();
    const pending = record.pending;
    // An answer to an update that was since replaced is stale: the newer one's answer decides.
    if (pending === undefined || ack.responseNonce !== pending.nonce) return;
    record.pending = undefined;
    const detail = ack.errorDetail;
    if (detail != null && (detail.message !== '' || detail.errors.length > 0)) {
      record.rejectedVersion = pending.version;
      record.appliedVersion = ack.versionInfo;
      record.lastError = {
        version: pending.version,
        commit: pending.commit,
        kept: ack.versionInfo,
        message: detail.message,
        errors: detail.errors,
        atMs: this.#now(),
      };
      this.#events.nacked(record);
    } else {
      record.appliedVersion = pending.version;
      record.appliedCommit = pending.commit;
      record.lastError = undefined;
      record.rejectedVersion = undefined;
      this.#events.acked(record, this.#now() - pending.sentAtMs);
    }
    // The policy may have moved on while this update was on its way (a revert): catch up.
    this.#sync(record);
  }

  heartbeat(record: SidecarRecord, health: Health): void {
    record.lastSeenMs = this.#now();
    record.health = health;
  }

  /** A new good set: every connected sidecar whose policy changed gets it. */
  apply(set: PolicySet): void {
    this.#set = set;
    for (const r of this.#records.values()) this.#sync(r);
  }

  /** `confirm`: send the desired policy even when the sidecar runs it (the first answer on a stream). */
  #sync(r: SidecarRecord, confirm = false): void {
    const set = this.#set;
    if (set === undefined) return;
    const entry = selectPolicy(set, r);
    if (entry === undefined) {
      r.desired = undefined;
      return;
    }
    if (r.desired?.version !== entry.version) r.rejectedVersion = undefined;
    r.desired = { version: entry.version, commit: set.commit, file: entry.file };
    if (!r.connected || r.send === undefined) return;
    if (entry.version === r.appliedVersion && !confirm) {
      // Same text in a later commit: nothing to send; the commit it came from moves on.
      r.appliedCommit = set.commit;
      return;
    }
    if (entry.version === r.pending?.version || entry.version === r.rejectedVersion) return;
    const nonce = randomBytes(8).toString('hex');
    r.pending = { nonce, version: entry.version, commit: set.commit, sentAtMs: this.#now() };
    r.send({ update: { version: entry.version, commit: set.commit, file: entry.file, nonce, policyYaml: entry.yaml } });
    this.#events.pushed(r);
  }

  #evictOldestGone(): void {
    let oldest: SidecarRecord | undefined;
    for (const r of this.#records.values()) if (!r.connected && (oldest === undefined || r.lastSeenMs < oldest.lastSeenMs)) oldest = r;
    if (oldest !== undefined) this.#records.delete(oldest.id);
  }

  #forget(): void {
    const cutoff = this.#now() - FORGET_AFTER_MS;
    for (const [id, r] of this.#records) if (!r.connected && r.lastSeenMs < cutoff) this.#records.delete(id);
  }
}
