// The sidecar's end of the push protocol: one stream to a config service replica, reconnected
// with jittered exponential back-off to the next replica when it ends. Every update is handed to
// `apply` (parse, check, apply, persist) and answered: ACK with the new version, or NACK with the
// version kept and why. The sidecar serves traffic whatever happens here: losing the control
// plane only means no new policies until it is back.
import * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import {
  AUTH_METADATA,
  KEEPALIVE_OPTIONS,
  PolicyDiscovery,
  type ControlMessage,
  type Health,
  type Hello,
  type PolicyUpdate,
  type SidecarMessage,
  type SidecarStream,
} from './protocol.ts';

export type ApplyResult = { readonly ok: true } | { readonly ok: false; readonly message: string; readonly errors: readonly string[] };

export interface ControlClientOptions {
  /** host:port of each replica (or of one Service in front of them). */
  readonly targets: readonly string[];
  readonly identity: Omit<Hello, 'appliedVersion' | 'appliedCommit'>;
  readonly token?: string | undefined;
  /** TLS to the service: its CA, and our certificate for mTLS. Insecure when undefined. */
  readonly tls?: { readonly ca?: Buffer | undefined; readonly cert?: Buffer | undefined; readonly key?: Buffer | undefined } | undefined;
  readonly heartbeatMs: number;
  /** Further grpc-js channel options (a simulator's own connection per client, say). */
  readonly channelOptions?: grpc.ChannelOptions | undefined;
  readonly backoff: { readonly baseMs: number; readonly capMs: number };
  readonly log: Logger;
  /** What runs now. */
  applied(): { readonly version: string; readonly commit: string };
  /** Validates and applies an update; the version answered is applied().version afterwards. */
  apply(update: PolicyUpdate): Promise<ApplyResult>;
  health(): Promise<Health>;
  /** Told when the stream opens or ends (for the connected gauge). */
  onConnected?(connected: boolean): void;
  readonly random?: () => number;
}

/** A stream that stayed up this long was a good connection: back-off starts over. */
const STABLE_MS = 5000;

export class ControlClient {
  readonly #o: ControlClientOptions;
  readonly #random: () => number;
  #target = 0;
  #failures = 0;
  #client: grpc.Client | undefined;
  #stream: SidecarStream | undefined;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #heartbeat: ReturnType<typeof setInterval> | undefined;
  #closed = false;
  #openedAt = 0;
  /** Updates are applied one at a time, in the order they came. */
  #applying: Promise<void> = Promise.resolve();
  #connected = false;

  constructor(options: ControlClientOptions) {
    if (options.targets.length === 0) throw new Error('control: no target to connect to');
    this.#o = options;
    this.#random = options.random ?? Math.random;
  }

  get connected(): boolean {
    return this.#connected;
  }

  start(): void {
    this.#connect();
  }

  #credentials(): grpc.ChannelCredentials {
    const tls = this.#o.tls;
    if (tls === undefined) return grpc.credentials.createInsecure();
    return grpc.credentials.createSsl(tls.ca ?? null, tls.key ?? null, tls.cert ?? null);
  }

  #connect(): void {
    if (this.#closed) return;
    const target = this.#o.targets[this.#target % this.#o.targets.length] as string;
    const client = new PolicyDiscovery(target, this.#credentials(), { ...KEEPALIVE_OPTIONS, ...this.#o.channelOptions });
    this.#client = client;
    const metadata = new grpc.Metadata();
    if (this.#o.token !== undefined) metadata.set(AUTH_METADATA, `Bearer ${this.#o.token}`);
    const stream = (client as unknown as { stream(md: grpc.Metadata): SidecarStream }).stream(metadata);
    this.#stream = stream;
    this.#openedAt = Infinity;
    const applied = this.#o.applied();
    const hello: SidecarMessage = { hello: { ...this.#o.identity, appliedVersion: applied.version, appliedCommit: applied.commit } };
    stream.write(hello);
    stream.on('metadata', () => {
      // Back-off starts over only for a connection that stayed up: measured from here, not
      // from dialling (a black-holed address takes long to fail without ever connecting).
      this.#openedAt = performance.now();
      this.#setConnected(true);
    });
    stream.on('data', (msg: ControlMessage) => {
      this.#setConnected(true);
      const update = msg.update;
      if (update != null) {
        this.#applying = this.#applying
          .then(() => this.#answer(stream, update))
          .catch((err: unknown) => this.#o.log.error({ err }, 'could not answer a policy update'));
      }
    });
    stream.on('error', (err: grpc.ServiceError) => {
      if (this.#closed) return;
      const level = err.code === grpc.status.UNAUTHENTICATED || err.code === grpc.status.PERMISSION_DENIED ? 'error' : 'warn';
      this.#o.log[level]({ target, code: err.code, details: err.details }, 'control stream ended; the current policy keeps serving');
      this.#retry(stream);
    });
    stream.on('end', () => this.#retry(stream));
    this.#heartbeat ??= setInterval(() => {
      this.#beat().catch((err: unknown) => this.#o.log.warn({ err }, 'could not send a heartbeat'));
    }, this.#o.heartbeatMs);
    this.#heartbeat.unref?.();
  }

  async #answer(stream: SidecarStream, update: PolicyUpdate): Promise<void> {
    let result: ApplyResult;
    try {
      result = await this.#o.apply(update);
    } catch (err) {
      result = { ok: false, message: err instanceof Error ? err.message : String(err), errors: [] };
    }
    const applied = this.#o.applied();
    const ack: SidecarMessage = result.ok
      ? { ack: { versionInfo: applied.version, responseNonce: update.nonce } }
      : { ack: { versionInfo: applied.version, responseNonce: update.nonce, errorDetail: { message: result.message, errors: [...result.errors] } } };
    // The stream may have ended meanwhile; the next hello says what runs.
    if (stream === this.#stream && !stream.destroyed) stream.write(ack);
  }

  async #beat(): Promise<void> {
    const stream = this.#stream;
    if (stream === undefined || !this.#connected) return;
    const health = await this.#o.health();
    if (stream === this.#stream && !stream.destroyed) stream.write({ heartbeat: { health } });
  }

  #setConnected(connected: boolean): void {
    if (this.#connected === connected) return;
    this.#connected = connected;
    this.#o.onConnected?.(connected);
  }

  #retry(stream: SidecarStream): void {
    if (stream !== this.#stream || this.#closed) return;
    this.#stream = undefined;
    this.#setConnected(false);
    this.#client?.close();
    this.#client = undefined;
    if (performance.now() - this.#openedAt >= STABLE_MS) this.#failures = 0;
    this.#failures++;
    // The next replica: a replica that is down is not tried again at once.
    this.#target++;
    const ceiling = Math.min(this.#o.backoff.capMs, this.#o.backoff.baseMs * 2 ** Math.min(this.#failures - 1, 20));
    // Full jitter: many sidecars losing one replica together do not come back together.
    const waitMs = Math.floor(this.#random() * ceiling);
    this.#timer = setTimeout(() => this.#connect(), waitMs);
  }

  async close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#timer);
    clearInterval(this.#heartbeat);
    this.#stream?.cancel();
    this.#stream = undefined;
    this.#client?.close();
    this.#setConnected(false);
    await this.#applying;
  }
}
