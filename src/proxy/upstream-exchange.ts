// One try against one endpoint, on undici's low-level dispatch API. Using dispatch rather than
// pool.request() skips a Readable per response: body chunks go straight from undici's parser to
// the client socket, and backpressure is undici's own pause/resume, so a slow client slows the
// upstream read instead of growing a buffer.
import type { Dispatcher } from 'undici';
import { grpcStatusOf } from '../stack/grpc.ts';
import { releaseCancel, type BodySink, type ProxyResponse, type RequestContext, type ResponseBody } from '../stack/types.ts';
import { stripResponseHopByHop } from './headers.ts';

/** Bytes held while no sink is attached yet (headers resolved, layers still deciding). */
const PRE_SINK_HIGH_WATER = 64 * 1024;

type Controller = Dispatcher.DispatchController;
type HeldHead = { readonly statusCode: number; readonly headers: Record<string, string | string[] | undefined> };
type Trailers = Record<string, string | string[]>;

/** Told how each try settled (status at its headers, or the failure), for balancing and ejection. */
export type TryObserver = (
  statusCode: number | undefined,
  error: unknown,
  headers?: Record<string, string | string[] | undefined>,
) => void;

export class UpstreamExchange implements Dispatcher.DispatchHandler, ResponseBody {
  readonly #ctx: RequestContext;
  readonly #observe: TryObserver | undefined;
  readonly #resolve: (r: ProxyResponse) => void;
  readonly #reject: (e: Error) => void;
  readonly #noBody: boolean;
  #controller: Controller | undefined;
  #answered = false;
  #sink: BodySink | undefined;
  #held: Buffer[] | undefined;
  #heldBytes = 0;
  #ended = false;
  #trailers: Trailers | null = null;
  #error: Error | undefined;
  #discarded = false;
  /** Cancelled while still queued in the pool (undici has no controller for it yet). */
  #cancelledEarly: Error | undefined;
  /** This exchange's entry in the context's cancellation slot. */
  readonly #onCancel = (reason: Error): void => this.#cancel(reason);
  /** A drain listener is registered: don't add another per write that returns false. */
  #awaitingDrain = false;
  #failed = false;
  /**
   * A gRPC answer's headers, held until its first message or its trailers: until a message
   * reaches the client the call can still be retried, and an answer that ends in trailers alone
   * is judged (and retried) by the grpc-status in them.
   */
  #heldHead: HeldHead | undefined;

  constructor(
    ctx: RequestContext,
    noBody: boolean,
    resolve: (r: ProxyResponse) => void,
    reject: (e: Error) => void,
    observe?: TryObserver,
  ) {
    this.#ctx = ctx;
    this.#observe = observe;
    this.#noBody = noBody;
    this.#resolve = resolve;
    this.#reject = reject;
    // Registered before dispatch: a try waiting for a pooled connection must still end on time.
    ctx.onCancel = this.#onCancel;
  }

  onRequestStart(controller: Controller): void {
    this.#controller = controller;
    if (this.#cancelledEarly !== undefined) controller.abort(this.#cancelledEarly);
  }

  #cancel(reason: Error): void {
    if (this.#controller !== undefined) {
      this.#controller.abort(reason);
      return;
    }
    this.#cancelledEarly = reason;
    releaseCancel(this.#ctx, this.#onCancel);
    this.#fail(reason);
  }

  onResponseStart(_c: Controller, statusCode: number, headers: Record<string, string | string[] | undefined>): void {
    // 1xx informational answers (100 Continue is answered locally; 103 Early Hints) are dropped.
    if (statusCode < 200) return;
    stripResponseHopByHop(headers);
    this.#answered = true;
    this.#ctx.answered = true;
    if (this.#ctx.grpc && statusCode === 200) {
      // grpc-status in the headers: a trailers-only answer, which has no body by definition.
      if (grpcStatusOf(headers) !== undefined) {
        this.#observe?.(statusCode, undefined, headers);
        this.#resolve({ statusCode, headers, body: null });
        return;
      }
      this.#heldHead = { statusCode, headers };
      return;
    }
    this.#observe?.(statusCode, undefined, headers);
    this.#resolve({ statusCode, headers, body: this.#noBody || statusCode === 204 || statusCode === 304 ? null : this });
  }

  /** The held gRPC head goes out: a message arrived, so the call is committed to this try. */
  #commitHead(): void {
    const head = this.#heldHead as HeldHead;
    this.#heldHead = undefined;
    this.#observe?.(head.statusCode, undefined, head.headers);
    this.#resolve({ statusCode: head.statusCode, headers: head.headers, body: this });
  }

  onResponseData(controller: Controller, chunk: Buffer): void {
    if (this.#heldHead !== undefined) this.#commitHead();
    const sink = this.#sink;
    if (sink !== undefined) {
      if (!sink.write(chunk)) this.#pauseUntilDrain(controller, sink);
      return;
    }
    if (this.#discarded) return;
    (this.#held ??= []).push(chunk);
    this.#heldBytes += chunk.length;
    if (this.#heldBytes >= PRE_SINK_HIGH_WATER) controller.pause();
  }

  onResponseEnd(_c: Controller, trailers: Trailers): void {
    releaseCancel(this.#ctx, this.#onCancel);
    if (!this.#answered) {
      // A response with no body and a status < 200 only: treat as protocol failure.
      this.#fail(new Error('upstream ended without a final response'));
      return;
    }
    const hasTrailers = trailers !== null && Object.keys(trailers).length > 0 ? trailers : null;
    const head = this.#heldHead;
    if (head !== undefined) {
      // Headers, then trailers, no message: answered as trailers-only, the trailers merged into
      // the headers, so every layer judges the call by its grpc-status.
      this.#heldHead = undefined;
      const headers = hasTrailers === null ? head.headers : { ...head.headers, ...hasTrailers };
      this.#observe?.(head.statusCode, undefined, headers);
      this.#resolve({ statusCode: head.statusCode, headers, body: null });
      return;
    }
    if (this.#sink !== undefined) this.#sink.end(hasTrailers);
    else {
      this.#ended = true;
      this.#trailers = hasTrailers;
    }
  }

  onResponseError(_c: Controller, err: Error): void {
    releaseCancel(this.#ctx, this.#onCancel);
    if (!this.#answered || this.#heldHead !== undefined) {
      this.#heldHead = undefined;
      this.#fail(err);
      return;
    }
    if (this.#sink !== undefined) this.#sink.fail(err);
    else this.#error = err;
  }

  pipeTo(sink: BodySink): void {
    this.#sink = sink;
    const held = this.#held;
    this.#held = undefined;
    this.#heldBytes = 0;
    if (this.#ended) {
      // The whole body is already here (the usual case for small bodies): hand the last chunk
      // to end() so headers and body leave in one write.
      const last = held?.pop();
      if (held !== undefined) for (const chunk of held) sink.write(chunk);
      sink.end(this.#trailers, last);
      return;
    }
    let flowing = true;
    if (held !== undefined) for (const chunk of held) flowing = sink.write(chunk) && flowing;
    // Node sends the head with the first body write; a body that has not started yet must not
    // keep the client from seeing the status (a stream may stall, or be long-lived by design).
    else sink.flush();
    if (this.#error !== undefined) sink.fail(this.#error);
    else if (!flowing && this.#controller !== undefined) this.#pauseUntilDrain(this.#controller, sink);
    else this.#controller?.resume();
  }

  discard(): void {
    this.#discarded = true;
    this.#held = undefined;
    releaseCancel(this.#ctx, this.#onCancel);
    if (!this.#ended && this.#error === undefined) this.#controller?.abort(new Error('response discarded for retry'));
  }

  /** The try failed before an answer; observed once (a late report of a given-up try is not). */
  #fail(err: Error): void {
    if (this.#failed) return;
    this.#failed = true;
    this.#observe?.(undefined, err);
    this.#reject(err);
  }

  #pauseUntilDrain(controller: Controller, sink: BodySink): void {
    controller.pause();
    if (this.#awaitingDrain) return;
    this.#awaitingDrain = true;
    sink.onDrain(() => {
      this.#awaitingDrain = false;
      controller.resume();
    });
  }
}

/**
 * Sends one try to a dispatcher; resolves with the response at its headers, or rejects with the
 * failure as `mapError` names it (done here rather than in a .catch: one promise per try).
 */
export function dispatchTry(
  dispatcher: Dispatcher,
  opts: Dispatcher.DispatchOptions,
  ctx: RequestContext,
  mapError: (err: unknown) => Error,
  observe?: TryObserver,
): Promise<ProxyResponse> {
  if (ctx.cancelled !== undefined) {
    // Given up before it was sent (a hedge that lost while the try was being set up): observed
    // as a cancelled try, so its span ends and the endpoint's start is settled.
    observe?.(undefined, ctx.cancelled);
    return Promise.reject(ctx.cancelled);
  }
  return new Promise((resolve, reject) => {
    const exchange = new UpstreamExchange(ctx, opts.method === 'HEAD', resolve, (err) => reject(mapError(err)), observe);
    dispatcher.dispatch(opts, exchange);
  });
}
