// The admission webhook over real HTTPS on 127.0.0.1, as the API server calls it. Golden files:
// test/golden/inject/webhook/<case>.review.json in, <case>.response.json out (the patch shown
// decoded; on the wire it is base64). Every patch is applied by a separate RFC 6902 applier to the
// pod in the review, the result validated offline and compared with what `sluice inject` writes
// for the same Pod; a review of the patched pod answers with no patch.
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, writeFile } from 'node:fs/promises';
import https from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseAllDocuments, stringify } from 'yaml';
import { CONTROL_ADDRESS, TOKEN_SECRET, type InjectSettings } from '../../src/inject/annotations.ts';
import { injectStream } from '../../src/inject/manifests.ts';
import { startWebhook, type Webhook } from '../../src/inject/webhook-server.ts';
import { createLogger } from '../../src/telemetry/log.ts';
import { makeCerts, type TestCerts } from '../support/certs.ts';
import { ROOT, runCli } from '../support/cli.ts';
import { expectGolden } from '../support/golden.ts';
import { applyJsonPatch, k8sProblems } from '../support/inject-k8s.ts';

const DIR = 'test/golden/inject/webhook';
const SETTINGS: InjectSettings = { image: 'ghcr.io/sluice-dev/sluice:0.1.0', control: CONTROL_ADDRESS, tokenSecret: TOKEN_SECRET, legacy: false };
const log = createLogger('silent');

type Json = Record<string, unknown>;
interface Answer {
  readonly status: number;
  readonly body: string;
  readonly headers: Record<string, string | string[] | undefined>;
}

function call(port: number, ca: Buffer, opts: { method?: string; path?: string; body?: string }): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = https.request(
      { host: '127.0.0.1', port, ca, method: opts.method ?? 'POST', path: opts.path ?? '/inject?timeout=10s', agent: false, headers: { 'content-type': 'application/json' } },
      (res) => {
        let body = '';
        res.on('data', (c: Buffer) => (body += c.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body, headers: res.headers }));
      },
    );
    req.on('error', reject);
    req.end(opts.body);
  });
}

function reviewOf(request: Json): string {
  return JSON.stringify({ apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview', request });
}

function decodePatch(response: Json): Json[] | undefined {
  return typeof response.patch === 'string' ? (JSON.parse(Buffer.from(response.patch, 'base64').toString('utf8')) as Json[]) : undefined;
}

/** What `sluice inject` writes for the same Pod, as an object. */
function cliInjected(pod: Json): unknown {
  const r = injectStream(stringify(pod), 'pod.yaml', { settings: SETTINGS });
  expect(r.errors).toEqual([]);
  return (parseAllDocuments(r.text) as unknown as { toJS(): unknown }[])[0]?.toJS();
}

let certs: TestCerts;
let webhook: Webhook;
let port: number;
const extra: Webhook[] = [];

beforeAll(async () => {
  certs = await makeCerts();
  webhook = await startWebhook({ host: '127.0.0.1', port: 0, cert: certs.serverCert, key: certs.serverKey, workload: { settings: SETTINGS }, log });
  port = webhook.address.port;
});

afterAll(async () => {
  for (const w of extra) await w.close();
  await webhook?.close();
  await certs?.close();
});

async function another(workload: Parameters<typeof startWebhook>[0]['workload'], maxBodyBytes?: number): Promise<number> {
  const w = await startWebhook({ host: '127.0.0.1', port: 0, cert: certs.serverCert, key: certs.serverKey, workload, log, maxBodyBytes });
  extra.push(w);
  return w.address.port;
}

const cases = readdirSync(`${ROOT}/${DIR}`).filter((f) => f.endsWith('.review.json')).map((f) => f.slice(0, -'.review.json'.length));

describe('webhook: AdmissionReview golden files', () => {
  it('has its cases', () => {
    expect(cases).toEqual(expect.arrayContaining(['replicaset-pod', 'job-pod', 'opted-out-pod', 'host-network-pod', 'bad-annotation-pod', 'deployment', 'pod-update']));
  });

  for (const name of cases) {
    it(name, async () => {
      const text = readFileSync(`${ROOT}/${DIR}/${name}.review.json`, 'utf8');
      const request = (JSON.parse(text) as { request: Json }).request;
      const answer = await call(port, certs.ca, { body: text });
      expect(answer.status).toBe(200);
      expect(answer.headers['content-type']).toBe('application/json');
      const review = JSON.parse(answer.body) as { apiVersion: string; kind: string; response: Json };
      expect(review.apiVersion).toBe('admission.k8s.io/v1');
      expect(review.kind).toBe('AdmissionReview');
      expect(review.response.uid).toBe(request.uid);
      const patch = decodePatch(review.response);
      if (patch !== undefined) expect(review.response.patchType).toBe('JSONPatch');
      const shown = { ...review.response, ...(patch === undefined ? {} : { patch }) };
      expectGolden(`${DIR}/${name}.response.json`, `${JSON.stringify(shown, null, 2)}\n`);
      if (patch === undefined) return;

      const pod = applyJsonPatch(request.object, patch) as Json;
      expect(k8sProblems(pod)).toEqual([]);
      expect(pod).toEqual(cliInjected(request.object as Json));

      // The API server would call again only under reinvocationPolicy: IfNeeded; either way, no-op.
      const again = JSON.parse((await call(port, certs.ca, { body: reviewOf({ ...request, uid: 'again', object: pod }) })).body) as { response: Json };
      expect(again.response).toEqual({ uid: 'again', allowed: true });
    });
  }
});

describe('webhook: what it allows, denies and refuses', () => {
  const pod = (annotations: Record<string, string> = {}, spec: Json = {}): Json => ({
    uid: 'u-1',
    kind: { group: '', version: 'v1', kind: 'Pod' },
    operation: 'CREATE',
    namespace: 'shop',
    object: { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'p', annotations }, spec: { containers: [{ name: 'app', image: 'a', ports: [{ containerPort: 8080 }] }], ...spec } },
  });
  const answer = async (p: number, request: Json) => JSON.parse((await call(p, certs.ca, { body: reviewOf(request) })).body) as { response: Json };

  it('denies a pod whose annotations sluice cannot follow, naming the annotation', async () => {
    const r = await answer(port, pod({ 'sluice.dev/inbound-port': 'x' }));
    expect(r.response).toEqual({ uid: 'u-1', allowed: false, status: { code: 400, message: 'sluice: sluice.dev/inbound-port: must be a port from 1 to 65535, got "x"' } });
  });

  it('a Job pod gets a native sidecar, so the Job still completes', async () => {
    const r = await answer(port, pod({}, { restartPolicy: 'Never' }));
    const patched = applyJsonPatch((pod().object as Json), decodePatch(r.response) ?? []) as { spec: { initContainers: Json[]; containers: Json[] } };
    expect(patched.spec.initContainers[0]).toMatchObject({ name: 'sluice', restartPolicy: 'Always' });
    expect(patched.spec.containers.map((c) => c.name)).toEqual(['app']);
  });

  it('with --legacy: the sidecar is the first container; a run-to-completion pod is let through with a warning', async () => {
    const legacy = await another({ settings: { ...SETTINGS, legacy: true } });
    const r = await answer(legacy, pod());
    const patched = applyJsonPatch(pod().object, decodePatch(r.response) ?? []) as { spec: { initContainers?: Json[]; containers: Json[] } };
    expect(patched.spec.containers.map((c) => c.name)).toEqual(['sluice', 'app']);
    expect(patched.spec.initContainers).toBeUndefined();
    expect(k8sProblems(patched)).toEqual([]);
    const job = await answer(legacy, pod({}, { restartPolicy: 'OnFailure' }));
    expect(job.response.patch).toBeUndefined();
    expect(job.response.allowed).toBe(true);
    expect(job.response.warnings).toEqual([expect.stringContaining('sluice: not injected: restartPolicy OnFailure with sluice.dev/legacy')]);
  });

  it('with --opt-in-only: only pods annotated sluice.dev/inject: "true"', async () => {
    const optIn = await another({ settings: SETTINGS, requireOptIn: true });
    expect((await answer(optIn, pod())).response).toEqual({ uid: 'u-1', allowed: true });
    expect((await answer(optIn, pod({ 'sluice.dev/inject': 'true' }))).response.patchType).toBe('JSONPatch');
    // Without it, a pod in a selected namespace is injected unless it opts out.
    expect((await answer(port, pod())).response.patchType).toBe('JSONPatch');
    expect((await answer(port, pod({ 'sluice.dev/inject': 'false' }))).response).toEqual({ uid: 'u-1', allowed: true });
  });

  it('fills in apiVersion and kind when the object leaves them out, without patching them', async () => {
    const request = pod();
    const object = { ...(request.object as Json) };
    delete object.apiVersion;
    delete object.kind;
    const patch = decodePatch((await answer(port, { ...request, object })).response) ?? [];
    expect(patch.length).toBeGreaterThan(0);
    expect(patch.some((op) => op.path === '/apiVersion' || op.path === '/kind')).toBe(false);
  });

  const malformed: [string, string, string][] = [
    ['a body that is not JSON', '{"apiVersion":', 'malformed AdmissionReview: the body is not JSON'],
    ['a JSON array', '[]', 'malformed AdmissionReview: the body is not a JSON object: expected an AdmissionReview'],
    ['an AdmissionReview v1beta1', JSON.stringify({ apiVersion: 'admission.k8s.io/v1beta1', kind: 'AdmissionReview', request: {} }), 'expected apiVersion admission.k8s.io/v1, kind AdmissionReview; got "admission.k8s.io/v1beta1", "AdmissionReview"'],
    ['no request', JSON.stringify({ apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview' }), 'the AdmissionReview has no request object'],
    ['no uid', reviewOf({ kind: { kind: 'Pod' }, operation: 'CREATE' }), 'request.uid must be a non-empty string'],
    ['no kind', reviewOf({ uid: 'u', operation: 'CREATE' }), 'request.kind must be a {group, version, kind} object'],
    ['a Pod CREATE without the pod', reviewOf({ uid: 'u', kind: { group: '', version: 'v1', kind: 'Pod' }, operation: 'CREATE' }), 'request.object must be the Pod being created'],
  ];
  for (const [what, body, message] of malformed) {
    it(`answers 400 to ${what}`, async () => {
      const r = await call(port, certs.ca, { body });
      expect(r.status).toBe(400);
      expect(r.body).toContain(message);
    });
  }

  it('answers /healthz, 405 to a GET on /inject, 404 elsewhere, 413 to an oversized review', async () => {
    expect(await call(port, certs.ca, { method: 'GET', path: '/healthz' })).toMatchObject({ status: 200, body: 'ok\n' });
    expect(await call(port, certs.ca, { method: 'GET', path: '/inject' })).toMatchObject({ status: 405, headers: { allow: 'POST' } });
    expect((await call(port, certs.ca, { method: 'GET', path: '/mutate' })).status).toBe(404);
    const small = await another({ settings: SETTINGS }, 1000);
    expect((await call(small, certs.ca, { body: reviewOf({ ...pod(), pad: 'x'.repeat(2000) }) })).status).toBe(413);
  });

  it('serves a new certificate to new connections once it is set', async () => {
    const next = await makeCerts();
    try {
      const own = await startWebhook({ host: '127.0.0.1', port: 0, cert: certs.serverCert, key: certs.serverKey, workload: { settings: SETTINGS }, log });
      extra.push(own);
      const p = own.address.port;
      expect((await call(p, certs.ca, { method: 'GET', path: '/healthz' })).status).toBe(200);
      own.setCertificate(next.serverCert, next.serverKey);
      expect((await call(p, next.ca, { method: 'GET', path: '/healthz' })).status).toBe(200);
      await expect(call(p, certs.ca, { method: 'GET', path: '/healthz' })).rejects.toThrow(/certificate/);
    } finally {
      await next.close();
    }
  });
});

describe('sluice webhook, the command', () => {
  it('starts on mounted certificates, answers /healthz, drains on SIGTERM; refuses to start without TLS', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'sluice-webhook-'));
    await writeFile(join(dir, 'tls.crt'), certs.serverCert);
    await writeFile(join(dir, 'tls.key'), certs.serverKey);
    const main = fileURLToPath(new URL('../../src/main.ts', import.meta.url));
    const child = spawn(process.execPath, [main, 'webhook', '--tls-cert', join(dir, 'tls.crt'), '--tls-key', join(dir, 'tls.key'), '--port', '0', '--address', '127.0.0.1'], {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const exited = new Promise<number | null>((r) => child.once('close', (code) => r(code)));
    try {
      const started = await new Promise<number>((resolve, reject) => {
        let out = '';
        const timer = setTimeout(() => reject(new Error(`sluice webhook did not start:\n${out}`)), 15_000);
        child.stdout.on('data', (c: Buffer) => {
          out += c.toString();
          const line = out.split('\n').find((l) => l.includes('"sluice webhook started"'));
          if (line === undefined) return;
          clearTimeout(timer);
          resolve((JSON.parse(line) as { port: number }).port);
        });
      });
      expect((await call(started, certs.ca, { method: 'GET', path: '/healthz' })).status).toBe(200);
    } finally {
      child.kill('SIGTERM');
    }
    expect(await exited).toBe(0);

    const noTls = await runCli(['webhook', '--port', '0']);
    expect(noTls.code).toBe(2);
    expect(noTls.stderr).toContain('--tls-cert and --tls-key are required');
  });
});
