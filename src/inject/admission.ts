// The mutating admission webhook's decisions, without the server: an AdmissionReview v1 in, the
// AdmissionReview answer out. Pods are injected exactly as `sluice inject` injects a Pod manifest,
// and the answer's patch is the diff between the two, so CLI and webhook cannot disagree.
import { Buffer } from 'node:buffer';
import { InjectError } from './errors.ts';
import { diff } from './json-patch.ts';
import { describeObject, injectWorkload, type WorkloadOptions } from './workloads.ts';

type Json = Record<string, unknown>;

/** A request the webhook cannot answer at all (HTTP 400): the API server sent something else. */
export class ReviewError extends Error {
  override readonly name = 'ReviewError';
}

export interface AdmissionRequest {
  readonly uid: string;
  readonly kind: { readonly group: string; readonly version: string; readonly kind: string };
  readonly operation: string;
  readonly namespace: string | undefined;
  readonly object: unknown;
}

export interface ReviewOutcome {
  /** What to send back, as JSON. */
  readonly review: Json;
  /** For the log: injected, skipped, ignored or denied, and why. */
  readonly outcome: 'injected' | 'skipped' | 'ignored' | 'denied';
  readonly reason: string;
}

function isObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export function parseReview(body: string): AdmissionRequest {
  let value: unknown;
  try {
    value = JSON.parse(body);
  } catch (err) {
    throw new ReviewError(`the body is not JSON: ${(err as Error).message}`);
  }
  if (!isObject(value)) throw new ReviewError('the body is not a JSON object: expected an AdmissionReview');
  if (value.apiVersion !== 'admission.k8s.io/v1' || value.kind !== 'AdmissionReview') {
    throw new ReviewError(
      `expected apiVersion admission.k8s.io/v1, kind AdmissionReview; got ${JSON.stringify(value.apiVersion)}, ${JSON.stringify(value.kind)} ` +
        '(list only v1 in the webhook configuration\'s admissionReviewVersions)',
    );
  }
  const r = value.request;
  if (!isObject(r)) throw new ReviewError('the AdmissionReview has no request object');
  if (typeof r.uid !== 'string' || r.uid === '') throw new ReviewError('request.uid must be a non-empty string');
  const k = r.kind;
  if (!isObject(k) || typeof k.kind !== 'string') throw new ReviewError('request.kind must be a {group, version, kind} object');
  if (typeof r.operation !== 'string') throw new ReviewError('request.operation must be a string');
  return {
    uid: r.uid,
    kind: { group: typeof k.group === 'string' ? k.group : '', version: typeof k.version === 'string' ? k.version : '', kind: k.kind },
    operation: r.operation,
    namespace: typeof r.namespace === 'string' ? r.namespace : undefined,
    object: r.object,
  };
}

function answer(uid: string, response: Json): Json {
  return { apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview', response: { uid, allowed: true, ...response } };
}

/**
 * Namespaces are selected by the webhook configuration (namespaceSelector), which the API server
 * applies before calling: a pod reaching this function is in a selected namespace. Here the pod's
 * own annotations decide: `sluice.dev/inject: "false"` opts out; with requireOptIn, only
 * `"true"` opts in (for a configuration that selects namespaces broadly).
 */
export function review(req: AdmissionRequest, o: WorkloadOptions): ReviewOutcome {
  const ignored = (reason: string): ReviewOutcome => ({ review: answer(req.uid, {}), outcome: 'ignored', reason });
  if (req.kind.group !== '' || req.kind.kind !== 'Pod') return ignored(`not a Pod (${req.kind.group || 'core'}/${req.kind.kind})`);
  if (req.operation !== 'CREATE') return ignored(`operation ${req.operation}: sidecars are added at creation only`);
  if (!isObject(req.object)) throw new ReviewError('request.object must be the Pod being created');
  const pod: Json = { ...req.object, apiVersion: req.object.apiVersion ?? 'v1', kind: req.object.kind ?? 'Pod' };
  const what = `${describeObject(pod)} in ${req.namespace ?? '(no namespace)'}`;
  let result;
  try {
    result = injectWorkload(pod, o);
  } catch (err) {
    if (!(err instanceof InjectError)) throw err;
    // Denied, not let through bare: a pod whose annotations say something sluice cannot do would
    // otherwise run without the protection its owner asked for, and nobody would be told.
    const message = `sluice: ${err.message}`;
    return {
      review: { apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview', response: { uid: req.uid, allowed: false, status: { code: 400, message } } },
      outcome: 'denied',
      reason: `${what}: ${err.message}`,
    };
  }
  if (result.kind === 'ignored') return ignored(`${what}: not a pod sluice can inject`);
  if (result.kind === 'skipped') {
    return { review: answer(req.uid, result.warn ? { warnings: [`sluice: not injected: ${result.reason}`] } : {}), outcome: 'skipped', reason: `${what}: ${result.reason}` };
  }
  const patch = diff(pod, result.object);
  return {
    review: answer(req.uid, {
      patchType: 'JSONPatch',
      patch: Buffer.from(JSON.stringify(patch)).toString('base64'),
    }),
    outcome: 'injected',
    reason: [what, ...result.notes].join('; '),
  };
}
