// The config service end to end, with real git repositories in temporary folders: commits reach
// the sidecars they select, bad commits never do, a sidecar's NACK shows in the fleet API, and the
// sidecars keep serving through a control-plane outage and a restart during it.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { send } from '../support/http-client.ts';
import { metricSum, parsePrometheus } from '../support/metrics.ts';
import { makeCerts } from '../support/certs.ts';
import { rawRequest } from '../support/raw-client.ts';
import { startScriptedUpstream } from '../support/scripted-upstream.ts';
import { fleet, linkedSidecar, policyDoc, policyRepo, startTestControl, until, type LinkedSidecar } from '../support/control.ts';

const open: { close(): Promise<unknown> }[] = [];
afterEach(async () => {
  for (const o of open.splice(0).reverse()) await o.close().catch(() => undefined);
});
const track = <T extends { close(): Promise<unknown> }>(x: T): T => {
  open.push(x);
  return x;
};

const deadlineOf = (s: LinkedSidecar): string => s.sidecar.policy().deadlineHeader;

describe('sluice control', () => {
  it('pushes a valid commit to every connected sidecar, each its own policy by selector', async () => {
    const repo = track(await policyRepo());
    await repo.commit({
      'all.yaml': policyDoc('all', { deadlineHeader: 'x-all-v1' }),
      'orders.yaml': policyDoc('orders', { selector: { service: 'orders' }, deadlineHeader: 'x-orders-v1' }),
    });
    const control = track(await startTestControl(repo));
    const a = track(await linkedSidecar({ id: 'a', service: 'orders', controlPort: control.grpcPort }));
    const b = track(await linkedSidecar({ id: 'b', service: 'billing', controlPort: control.grpcPort }));
    await until(() => deadlineOf(a) === 'x-orders-v1' && deadlineOf(b) === 'x-all-v1', 'the first commit applied');

    const second = await repo.commit({ 'all.yaml': policyDoc('all', { deadlineHeader: 'x-all-v2' }) });
    await control.refresh();
    await until(() => deadlineOf(b) === 'x-all-v2', 'the second commit applied');
    // orders.yaml did not change: its sidecar was not sent anything, and runs the same version.
    expect(deadlineOf(a)).toBe('x-orders-v1');
    const view = await fleet(control.apiPort);
    expect(view.serving?.commit).toBe(second);
    expect(view.sidecars.map((s) => [s.id, s.connected, s.inSync])).toEqual([
      ['a', true, true],
      ['b', true, true],
    ]);
    const m = parsePrometheus((await send({ port: control.apiPort, path: '/metrics' })).text);
    expect(metricSum(m, 'sluice_control_pushes_total')).toBe(3);
    expect(metricSum(m, 'sluice_control_answers_total', { result: 'ack' })).toBe(3);
  });

  it('refuses an invalid commit with its SHA and errors; the sidecars keep the previous version', async () => {
    const repo = track(await policyRepo());
    const good = await repo.commit({ 'p.yaml': policyDoc('p', { deadlineHeader: 'x-good' }) });
    const control = track(await startTestControl(repo));
    const s = track(await linkedSidecar({ id: 's1', controlPort: control.grpcPort }));
    await until(() => deadlineOf(s) === 'x-good', 'the good commit applied');

    const bad = await repo.commit({ 'p.yaml': policyDoc('p', { deadlineHeader: 'x-bad', outbound: { defaults: { retry: { maxAttempts: 99 } } } }) });
    await control.refresh();
    const view = await fleet(control.apiPort);
    expect(view.serving?.commit).toBe(good);
    expect(view.rejected?.commit).toBe(bad);
    expect(view.rejected?.errors).toEqual([expect.stringMatching(/^p\.yaml:\d+:\d+: spec\.outbound\.defaults\.retry\.maxAttempts: must be an integer from 1 to 10, got 99$/)]);
    expect(deadlineOf(s)).toBe('x-good');
    const m = parsePrometheus((await send({ port: control.apiPort, path: '/metrics' })).text);
    expect(metricSum(m, 'sluice_control_commits_total', { result: 'rejected' })).toBe(1);
    expect(metricSum(m, 'sluice_control_commit_info', { commit: bad, state: 'rejected' })).toBe(1);
  });

  it('shows a NACK in the fleet API when a sidecar refuses what the service accepted', async () => {
    const repo = track(await policyRepo());
    await repo.commit({ 'p.yaml': policyDoc('p', { deadlineHeader: 'x-v1' }) });
    const control = track(await startTestControl(repo));
    const s = track(await linkedSidecar({ id: 'nacker', controlPort: control.grpcPort }));
    await until(() => deadlineOf(s) === 'x-v1', 'v1 applied');
    // Valid, but moves a listener: a running sidecar cannot do that without a restart.
    await repo.commit({ 'p.yaml': policyDoc('p', { deadlineHeader: 'x-v2', inbound: { listener: { address: '0.0.0.0' } } }) });
    await control.refresh();
    await until(async () => (await fleet(control.apiPort)).sidecars[0]?.lastError !== null, 'the NACK reported');
    const [view] = (await fleet(control.apiPort)).sidecars;
    expect(view?.lastError?.message).toMatch(/needs a restart to apply/);
    expect(view?.lastError?.errors[0]).toMatch(/spec\.inbound\.listener: listeners change only on restart \(running 127\.0\.0\.1:0, policy 0\.0\.0\.0:0\)/);
    expect(view?.inSync).toBe(false);
    expect(view?.applied.version).toBe(view?.lastError?.kept);
    expect(deadlineOf(s)).toBe('x-v1');
    expect(metricSum(parsePrometheus((await send({ port: s.adminPort, path: '/metrics' })).text), 'sluice_control_updates_total', { result: 'rejected' })).toBe(1);
  });

  it('keeps sidecars serving with zero failed requests while the service dies and comes back', async () => {
    const app = track(await startScriptedUpstream(() => ({ status: 200, body: 'ok' })));
    const repo = track(await policyRepo());
    await repo.commit({ 'p.yaml': policyDoc('p', { deadlineHeader: 'x-v1', inbound: { app: { address: '127.0.0.1', port: app.port } } }) });
    let control = await startTestControl(repo);
    const grpcPort = control.grpcPort;
    const s = track(await linkedSidecar({ id: 's', controlPort: grpcPort }));
    await until(() => deadlineOf(s) === 'x-v1', 'v1 applied');

    let failed = 0;
    let sent = 0;
    let stop = false;
    const traffic = (async () => {
      while (!stop && sent < 5000) {
        sent++;
        const r = await send({ port: s.inboundPort, path: '/work' }).catch(() => undefined);
        if (r?.status !== 200) failed++;
      }
    })();
    await control.close();
    await until(() => !s.link.client.connected, 'the sidecar noticed the outage');
    await until(() => sent > 50, 'traffic during the outage');
    // The same port again, as a replica restarting behind its Service would be.
    control = await startTestControl(repo, { grpc: { host: '127.0.0.1', port: grpcPort } });
    track(control);
    await repo.commit({ 'p.yaml': policyDoc('p', { deadlineHeader: 'x-v2', inbound: { app: { address: '127.0.0.1', port: app.port } } }) });
    await control.refresh();
    await until(() => deadlineOf(s) === 'x-v2', 'v2 applied after the service came back', 10_000);
    stop = true;
    await traffic;
    expect(sent).toBeGreaterThan(50);
    expect(failed).toBe(0);
  });

  it('starts a sidecar restarted during an outage from its persisted policy', async () => {
    const repo = track(await policyRepo());
    await repo.commit({ 'p.yaml': policyDoc('p', { deadlineHeader: 'x-pushed' }) });
    const control = await startTestControl(repo);
    const stateDir = await mkdtemp(join(tmpdir(), 'sluice-state-'));
    track({ close: () => rm(stateDir, { recursive: true, force: true }) });
    const first = await linkedSidecar({ id: 'p1', controlPort: control.grpcPort, stateDir });
    await until(() => deadlineOf(first) === 'x-pushed', 'pushed policy applied');
    const version = first.link.applied().version;
    await first.close();
    const port = control.grpcPort;
    await control.close();
    // The service is gone; the restarted sidecar runs what it last got, not its file's policy.
    const again = track(await linkedSidecar({ id: 'p1', controlPort: port, stateDir, fromStateDir: true }));
    expect(deadlineOf(again)).toBe('x-pushed');
    expect(again.link.applied().version).toBe(version);
  });
});

describe('sluice control: bad input', () => {
  it('answers a request target no URL parser takes, and stays up', async () => {
    const repo = track(await policyRepo());
    await repo.commit({ 'p.yaml': policyDoc('p') });
    const control = track(await startTestControl(repo, { token: 't' }));
    for (const target of ['//', '//@', '//x:99999']) {
      const r = await rawRequest(control.apiPort, `GET ${target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`, { untilResponse: true });
      expect(r.response?.status).toBe(401);
    }
    expect((await send({ port: control.apiPort, path: '/healthz' })).status).toBe(200);
  });

  it('takes a webhook without the token (it only schedules a fetch), and nothing else', async () => {
    const repo = track(await policyRepo());
    await repo.commit({ 'p.yaml': policyDoc('p', { deadlineHeader: 'x-1' }) });
    const control = track(await startTestControl(repo, { token: 't' }));
    const next = await repo.commit({ 'p.yaml': policyDoc('p', { deadlineHeader: 'x-2' }) });
    expect((await send({ port: control.apiPort, method: 'POST', path: '/v1/refresh', body: '{"ref":"refs/heads/main"}' })).status).toBe(202);
    await until(async () => (await fleet(control.apiPort, 't')).serving?.commit === next, 'the webhook fetched');
  });

  it('gives a stream with a wrong token nothing, and says why', async () => {
    const repo = track(await policyRepo());
    await repo.commit({ 'p.yaml': policyDoc('p', { deadlineHeader: 'x-secret' }) });
    const control = track(await startTestControl(repo, { token: 'right-token' }));
    const s = track(await linkedSidecar({ id: 'intruder', controlPort: control.grpcPort, token: 'wrong-token' }));
    const m = async () => metricSum(parsePrometheus((await send({ port: control.apiPort, path: '/metrics' })).text), 'sluice_control_streams_refused_total', { why: 'unauthenticated' });
    await until(async () => (await m()) >= 1, 'the stream refused');
    expect(deadlineOf(s)).not.toBe('x-secret');
    expect((await send({ port: control.apiPort, path: '/v1/fleet' })).status).toBe(401);
    expect((await fleet(control.apiPort, 'right-token')).sidecars).toEqual([]);
  });

  it('reports a repository that disappears, and keeps serving the last good commit', async () => {
    const repo = await policyRepo();
    const good = await repo.commit({ 'p.yaml': policyDoc('p', { deadlineHeader: 'x-kept' }) });
    const control = track(await startTestControl(repo));
    const s = track(await linkedSidecar({ id: 's', controlPort: control.grpcPort }));
    await until(() => deadlineOf(s) === 'x-kept', 'applied');
    await repo.close();
    await control.refresh();
    const view = await fleet(control.apiPort);
    expect(view.fetchError?.code).toBe('fetch-failed');
    expect(view.serving?.commit).toBe(good);
    expect(deadlineOf(s)).toBe('x-kept');
  });

  it('refuses a commit whose YAML is malformed or has unknown fields, naming file and line', async () => {
    const repo = track(await policyRepo());
    await repo.commit({ 'p.yaml': policyDoc('p') });
    const control = track(await startTestControl(repo));
    const bad = await repo.commit({
      'broken.yaml': 'apiVersion: sluice.dev/v1alpha1\nkind: SidecarPolicy\nmetadata: {name: b\nspec: {}\n',
      'typo.yaml': policyDoc('typo', { outbound: { defualts: {} } }),
    });
    await control.refresh();
    const view = await fleet(control.apiPort);
    expect(view.rejected?.commit).toBe(bad);
    expect(view.rejected?.errors.some((e) => e.startsWith('broken.yaml:'))).toBe(true);
    expect(view.rejected?.errors).toContainEqual(expect.stringMatching(/^typo\.yaml:\d+:\d+: spec\.outbound\.defualts: unknown field; did you mean defaults\?$/));
  });
});

describe('sluice control: replicas and TLS', () => {
  it('lets a sidecar fail over to another replica, which pushes the next commit', async () => {
    const repo = track(await policyRepo());
    await repo.commit({ 'p.yaml': policyDoc('p', { deadlineHeader: 'x-v1' }) });
    const a = await startTestControl(repo);
    const b = track(await startTestControl(repo));
    const s = track(await linkedSidecar({ id: 's', controlPort: a.grpcPort, morePorts: [b.grpcPort] }));
    await until(() => deadlineOf(s) === 'x-v1', 'v1 from replica a');
    expect((await fleet(a.apiPort)).sidecars.map((x) => x.id)).toEqual(['s']);
    await a.close();
    await until(async () => (await fleet(b.apiPort)).sidecars[0]?.connected === true, 'the sidecar on replica b');
    // b's first answer confirms what the sidecar runs; it is ACKed without a reload.
    expect(metricSum(parsePrometheus((await send({ port: b.apiPort, path: '/metrics' })).text), 'sluice_control_pushes_total')).toBe(1);
    expect(metricSum(parsePrometheus((await send({ port: s.adminPort, path: '/metrics' })).text), 'sluice_control_updates_total', { result: 'applied' })).toBe(1);
    await repo.commit({ 'p.yaml': policyDoc('p', { deadlineHeader: 'x-v2' }) });
    await b.refresh();
    await until(() => deadlineOf(s) === 'x-v2', 'v2 from replica b');
    // Health arrives on the stream.
    await until(async () => (await fleet(b.apiPort)).sidecars[0]?.health?.state === 'ready', 'a heartbeat');
  });

  it('serves over TLS, and with mTLS refuses a sidecar without a client certificate', async () => {
    const certs = track(await makeCerts());
    const repo = track(await policyRepo());
    await repo.commit({ 'p.yaml': policyDoc('p', { deadlineHeader: 'x-tls' }) });
    const tlsOnly = track(await startTestControl(repo, { tls: { cert: certs.serverCert, key: certs.serverKey } }));
    const ok = track(await linkedSidecar({ id: 'tls', controlPort: tlsOnly.grpcPort, tls: { ca: certs.ca } }));
    await until(() => deadlineOf(ok) === 'x-tls', 'the push over TLS');
    const distrustful = track(await linkedSidecar({ id: 'wrong-ca', controlPort: tlsOnly.grpcPort, tls: { ca: certs.otherCa } }));

    const mtls = track(await startTestControl(repo, { tls: { cert: certs.serverCert, key: certs.serverKey, clientCa: certs.ca } }));
    const withCert = track(await linkedSidecar({ id: 'mtls', controlPort: mtls.grpcPort, tls: { ca: certs.ca, cert: certs.clientCert, key: certs.clientKey } }));
    const without = track(await linkedSidecar({ id: 'no-cert', controlPort: mtls.grpcPort, tls: { ca: certs.ca } }));
    await until(() => deadlineOf(withCert) === 'x-tls', 'the push over mTLS');
    // Give the refused ones the time the accepted one took, and more: still nothing.
    await until(async () => (await fleet(mtls.apiPort)).sidecars.length === 1, 'only the sidecar with a certificate known');
    expect(deadlineOf(without)).not.toBe('x-tls');
    expect(deadlineOf(distrustful)).not.toBe('x-tls');
    expect((await fleet(tlsOnly.apiPort)).sidecars.map((x) => x.id)).toEqual(['tls']);
  });
});
