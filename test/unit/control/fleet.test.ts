// The push decisions alone, over a fake clock: send only what changed, never twice, never a
// version the sidecar refused; answers matched to their update by nonce.
import { describe, expect, it } from 'vitest';
import { Fleet } from '../../../src/control/fleet.ts';
import { buildPolicySet, selectPolicy, type PolicySet } from '../../../src/control/policy-set.ts';
import type { ControlMessage, Hello } from '../../../src/control/protocol.ts';

const doc = (name: string, extra = ''): string =>
  `apiVersion: sluice.dev/v1alpha1\nkind: SidecarPolicy\nmetadata:\n  name: ${name}\nspec:\n  deadlineHeader: x-${name}\n${extra}`;

function set(commit: string, files: Record<string, string>): PolicySet {
  const r = buildPolicySet(commit, Object.entries(files).map(([path, text]) => ({ path, text })));
  if (!r.ok) throw new Error(r.errors.join('\n'));
  return r.set;
}

const hello = (id: string, over: Partial<Hello> = {}): Hello => ({ sidecarId: id, service: 'orders', labels: {}, appliedVersion: '', appliedCommit: '', sluiceVersion: 't', ...over });

function setup() {
  let now = 1000;
  const events: string[] = [];
  const fleet = new Fleet(
    {
      pushed: (r) => events.push(`push ${r.id} ${r.pending?.version}`),
      acked: (r, ms) => events.push(`ack ${r.id} ${r.appliedVersion} ${ms}ms`),
      nacked: (r) => events.push(`nack ${r.id}`),
    },
    2,
    () => now,
  );
  const sent: ControlMessage[] = [];
  return { fleet, events, sent, send: (m: ControlMessage) => sent.push(m), tick: (ms: number) => (now += ms) };
}

describe('policy sets', () => {
  it('rejects the whole commit for one bad file, and two files with the same selector', () => {
    const r = buildPolicySet('c1', [
      { path: 'a.yaml', text: doc('a') },
      { path: 'b.yaml', text: doc('b', '  selector: {}\n') },
      { path: 'c.yaml', text: doc('c', '  limits: {maxHeaderBytes: 1}\n') },
    ]);
    expect(r.ok).toBe(false);
    if (r.ok) return;
    expect(r.errors).toEqual([
      'b.yaml:1:1: spec.selector: selects the same sidecars as a.yaml; give one of them a narrower selector',
      'c.yaml:7:28: spec.limits.maxHeaderBytes: must be an integer from 1024 to 1048576, got 1',
    ]);
  });

  it('gives each sidecar the most specific matching policy', () => {
    const s = set('c1', {
      'all.yaml': doc('all'),
      'orders.yaml': doc('orders', '  selector: {service: orders}\n'),
      'canary.yaml': doc('canary', "  selector: {matchLabels: {track: canary}}\n"),
      'orders-canary.yaml': doc('orders-canary', "  selector: {service: orders, matchLabels: {track: canary}}\n"),
    });
    const pick = (service: string, labels: Record<string, string> = {}) => selectPolicy(s, { service, labels })?.policy.name;
    expect(pick('billing')).toBe('all');
    expect(pick('billing', { track: 'canary' })).toBe('canary');
    expect(pick('orders')).toBe('orders');
    expect(pick('orders', { track: 'canary' })).toBe('orders-canary');
  });

  it('versions a document by its content, whatever the commit', () => {
    expect(set('c1', { 'a.yaml': doc('a') }).entries[0]?.version).toBe(set('c2', { 'a.yaml': doc('a') }).entries[0]?.version);
  });
});

describe('fleet', () => {
  it('pushes once, ACK settles it, and an unchanged policy in a new commit sends nothing', () => {
    const t = setup();
    t.fleet.apply(set('c1', { 'a.yaml': doc('a') }));
    const r = t.fleet.connect(hello('s1'), t.send)!;
    expect(t.sent).toHaveLength(1);
    const update = t.sent[0]!.update!;
    t.fleet.apply(set('c1', { 'a.yaml': doc('a') }));
    expect(t.sent).toHaveLength(1); // still pending: not sent twice
    t.tick(40);
    t.fleet.ack(r, { versionInfo: update.version, responseNonce: update.nonce });
    expect(t.events).toEqual([`push s1 ${update.version}`, `ack s1 ${update.version} 40ms`]);
    t.fleet.apply(set('c2', { 'a.yaml': doc('a') }));
    expect(t.sent).toHaveLength(1);
    expect(r.appliedCommit).toBe('c2');
  });

  it('does not resend a NACKed version, and sends the next one', () => {
    const t = setup();
    t.fleet.apply(set('c1', { 'a.yaml': doc('a') }));
    const r = t.fleet.connect(hello('s1'), t.send)!;
    const u1 = t.sent[0]!.update!;
    t.fleet.ack(r, { versionInfo: '', responseNonce: u1.nonce, errorDetail: { message: 'no', errors: ['x'] } });
    expect(r.lastError).toMatchObject({ version: u1.version, kept: '', errors: ['x'] });
    t.fleet.apply(set('c2', { 'a.yaml': doc('a') }));
    expect(t.sent).toHaveLength(1);
    t.fleet.apply(set('c3', { 'a.yaml': doc('a', '  limits: {maxHeaderBytes: 2048}\n') }));
    expect(t.sent).toHaveLength(2);
  });

  it('ignores a stale answer, and a reconnect says what runs', () => {
    const t = setup();
    t.fleet.apply(set('c1', { 'a.yaml': doc('a') }));
    const r = t.fleet.connect(hello('s1'), t.send)!;
    t.fleet.ack(r, { versionInfo: 'zzz', responseNonce: 'not-the-nonce' });
    expect(r.appliedVersion).toBe('');
    const v = t.sent[0]!.update!.version;
    t.fleet.disconnect(r, t.send);
    const again = t.fleet.connect(hello('s1', { appliedVersion: v, appliedCommit: 'c1' }), t.send)!;
    expect(again).toBe(r);
    // The first answer on a new stream confirms what it runs, so it knows it is in sync.
    expect(t.sent).toHaveLength(2);
    expect(t.sent[1]?.update?.version).toBe(v);
  });

  it('catches up after a revert that came while an update was on its way', () => {
    const t = setup();
    const a = set('c1', { 'a.yaml': doc('a') });
    t.fleet.apply(a);
    const r = t.fleet.connect(hello('s1'), t.send)!;
    const ua = t.sent[0]!.update!;
    t.fleet.ack(r, { versionInfo: ua.version, responseNonce: ua.nonce });
    t.fleet.apply(set('c2', { 'a.yaml': doc('b') }));
    const ub = t.sent[1]!.update!;
    t.fleet.apply(set('c3', { 'a.yaml': doc('a') })); // reverted before B was ACKed
    t.fleet.ack(r, { versionInfo: ub.version, responseNonce: ub.nonce });
    expect(t.sent[2]?.update?.version).toBe(ua.version);
  });

  it('offers a NACKed version again on a new stream (an upgraded sidecar may take it)', () => {
    const t = setup();
    t.fleet.apply(set('c1', { 'a.yaml': doc('a') }));
    const r = t.fleet.connect(hello('s1'), t.send)!;
    const u = t.sent[0]!.update!;
    t.fleet.ack(r, { versionInfo: '', responseNonce: u.nonce, errorDetail: { message: 'old release', errors: [] } });
    t.fleet.disconnect(r, t.send);
    t.fleet.connect(hello('s1', { sluiceVersion: 'newer' }), t.send);
    expect(t.sent).toHaveLength(2);
  });

  it('refuses connected sidecars beyond its bound; the ones that left make way', () => {
    const t = setup();
    const a = t.fleet.connect(hello('a'), t.send)!;
    expect(t.fleet.connect(hello('b'), t.send)).toBeDefined();
    expect(t.fleet.connect(hello('c'), t.send)).toBeUndefined();
    // A rolling restart: a leaves, a new pod takes its room at once.
    t.fleet.disconnect(a, t.send);
    expect(t.fleet.connect(hello('c'), t.send)).toBeDefined();
    expect(t.fleet.records().map((r) => r.id)).toEqual(['b', 'c']);
  });
});

describe('the example policy repository (config/examples/policy-repo)', () => {
  it('is a valid set, and selects as its comments say', async () => {
    const { readdir, readFile } = await import('node:fs/promises');
    const dir = new URL('../../../config/examples/policy-repo/', import.meta.url);
    const names = (await readdir(dir)).filter((n) => n.endsWith('.yaml')).sort();
    const files = await Promise.all(names.map(async (path) => ({ path, text: await readFile(new URL(path, dir), 'utf8') })));
    const r = buildPolicySet('example', files);
    if (!r.ok) throw new Error(r.errors.join('\n'));
    const pick = (service: string, labels: Record<string, string> = {}) => selectPolicy(r.set, { service, labels })?.policy.name;
    expect(pick('billing')).toBe('defaults');
    expect(pick('orders')).toBe('orders');
    expect(pick('orders', { track: 'canary' })).toBe('orders-canary');
  });
});
