// What a scripted upstream can do with one request, and what it records about it.
import type { IncomingHttpHeaders } from 'node:http';

export interface ReplyStep {
  readonly status: number;
  readonly headers?: Record<string, string | string[]>;
  readonly body?: string | Buffer;
  /** Sent chunked with these trailers (a `trailer` header is added naming them). */
  readonly trailers?: Record<string, string>;
}

export interface TrickleStep {
  readonly trickle: {
    readonly chunks: number;
    readonly intervalMs: number;
    readonly chunkBytes: number;
    /** Send with Content-Length (default) or chunked. */
    readonly chunked?: boolean;
  };
  readonly status?: number;
  readonly headers?: Record<string, string>;
}

export interface ResetMidBodyStep {
  /** Bytes of body sent before the socket is destroyed. */
  readonly resetMidBody: number;
  /** Declared Content-Length; default twice resetMidBody (at least resetMidBody + 1). */
  readonly declaredBytes?: number;
  readonly status?: number;
}

export interface EchoStep {
  readonly echo: true;
  /** json (default): {method,url,headers,body,bodyLength}. raw: the request body itself. */
  readonly format?: 'json' | 'raw';
  readonly status?: number;
}

export interface StreamStep {
  /** A large generated body (pattern bytes), written as the client drains it. */
  readonly stream: { readonly totalBytes: number; readonly chunkBytes?: number; readonly chunked?: boolean };
  readonly status?: number;
}

export interface DelayStep {
  readonly delayMs: number;
  readonly then: Step;
}

export interface GateStep {
  /** Hold the request until this settles (the test opens the gate), then run `then`. */
  readonly after: Promise<unknown>;
  readonly then: Step;
}

export type Step =
  | ReplyStep
  | 'hang' // read the request, never answer; torn down by close()
  | 'reset' // destroy the socket instead of answering
  | 'die' // close the server and every socket: the upstream process died
  | ResetMidBodyStep
  | TrickleStep
  | EchoStep
  | StreamStep
  | DelayStep
  | GateStep;

export interface RecordedRequest {
  /** 1-based arrival order. */
  readonly n: number;
  readonly method: string;
  readonly url: string;
  readonly headers: IncomingHttpHeaders;
  readonly rawHeaders: string[];
  readonly httpVersion: string;
  /** performance.now() when the request head arrived. */
  readonly arrivedAt: number;
  /** Total body bytes received. */
  bodyLength: number;
  /** sha256 of the body (hex). */
  bodyDigest: string;
  /** The first `captureBytes` of the body (default 1 MiB); bodyLength says how much there was. */
  body: Buffer;
  /** Response body bytes handed to the socket so far (stream steps; for backpressure tests). */
  sentBytes: number;
  /** Trailers the client sent with a chunked body. */
  trailers: Record<string, string>;
  /** The request head asked to upgrade (WebSocket-style); answered with 101 and an echo. */
  readonly upgraded: boolean;
  /**
   * 'complete' when our response finished; 'closed' when the connection or exchange went away
   * before that (the proxy aborted it, or a step reset it).
   */
  readonly ended: Promise<'complete' | 'closed'>;
}

export type StepFn = (req: RecordedRequest, n: number) => Step;
/** A queue consumed in order then a default, or a function of the request. */
export type Script = readonly Step[] | StepFn | { readonly queue: readonly Step[]; readonly otherwise: Step };
