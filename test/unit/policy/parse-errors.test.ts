// Every rejection names the file, line and column, the field and the reason, exactly as
// `sluice validate` prints it. Spec fragments start at line 6, column 3 (see helpers.ts).
import { describe, expect, it } from 'vitest';
import { parsePolicy } from '../../../src/policy/parse.ts';
import { HEADER, doc, errorsOf } from './helpers.ts';

const UP = 'spec.outbound.upstreams';

interface Case {
  name: string;
  /** A spec fragment, or a whole file when it starts with `apiVersion` or is `raw`. */
  spec?: string;
  raw?: string;
  errors: string[];
}

const cases: Case[] = [
  {
    name: 'typo in a field name',
    spec: 'admn:\n  port: 1',
    errors: ['t.yaml:6:3: spec.admn: unknown field; did you mean admin?'],
  },
  {
    name: 'typo deep in a section',
    spec: 'outbound:\n  defaults:\n    retry:\n      maxAttempt: 2',
    errors: ['t.yaml:9:9: spec.outbound.defaults.retry.maxAttempt: unknown field; did you mean maxAttempts?'],
  },
  {
    name: 'unknown field with no close name lists the known ones',
    spec: 'shutdown:\n  drainMode: fast',
    errors: ['t.yaml:7:5: spec.shutdown.drainMode: unknown field; known fields are graceMs'],
  },
  {
    name: 'an access log sample rate above 1',
    spec: 'accessLog:\n  sampleRate: 5',
    errors: ['t.yaml:7:17: spec.accessLog.sampleRate: must be a number from 0 to 1, got 5'],
  },
  {
    name: 'string where an integer belongs',
    spec: 'limits:\n  maxHeaderBytes: 16k',
    errors: ['t.yaml:7:21: spec.limits.maxHeaderBytes: must be an integer from 1024 to 1048576, got "16k"'],
  },
  {
    name: 'integer out of range',
    spec: 'outbound:\n  defaults:\n    retry: {maxAttempts: 0}',
    errors: ['t.yaml:8:28: spec.outbound.defaults.retry.maxAttempts: must be an integer from 1 to 10, got 0'],
  },
  {
    name: 'fraction out of range and window too short, both reported',
    spec: 'outbound:\n  defaults:\n    retryBudget: {ratio: 1.5, windowMs: 500}',
    errors: [
      't.yaml:8:28: spec.outbound.defaults.retryBudget.ratio: must be a number from 0 to 1, got 1.5',
      't.yaml:8:43: spec.outbound.defaults.retryBudget.windowMs: must be an integer from 1000 to 600000, got 500',
    ],
  },
  {
    name: 'list where a map belongs',
    spec: 'inbound: [a]',
    errors: ['t.yaml:6:12: spec.inbound: must be a map, got a list'],
  },
  {
    name: 'yes is not a boolean in YAML 1.2',
    spec: 'outbound:\n  defaults:\n    retry:\n      retryNonIdempotent: yes',
    errors: ['t.yaml:9:29: spec.outbound.defaults.retry.retryNonIdempotent: must be true or false, got "yes"'],
  },
  {
    name: 'connectMs cannot be off',
    spec: 'outbound:\n  defaults:\n    timeouts: {connectMs: off}',
    errors: [
      't.yaml:8:29: spec.outbound.defaults.timeouts.connectMs: cannot be off; must be an integer from 1 to 86400000',
    ],
  },
  {
    name: 'admin listener cannot be off',
    spec: 'admin: off',
    errors: ['t.yaml:6:10: spec.admin: cannot be off; must be a map'],
  },
  {
    name: 'the app cannot be off',
    spec: 'inbound: {app: off}',
    errors: ['t.yaml:6:18: spec.inbound.app: cannot be off; must be a map'],
  },
  {
    name: 'a timeout with a unit suffix',
    spec: 'inbound:\n  timeouts: {requestMs: 5s}',
    errors: ['t.yaml:7:27: spec.inbound.timeouts.requestMs: must be an integer from 1 to 86400000 or off, got "5s"'],
  },
  {
    name: 'retry: true is neither a section nor off',
    spec: 'outbound:\n  defaults: {retry: true}',
    errors: ['t.yaml:7:23: spec.outbound.defaults.retry: must be a map or off, got true'],
  },
  {
    name: 'duplicate upstream name',
    spec: `
outbound:
  upstreams:
    - name: orders
      hosts: [a]
      endpoints: [127.0.0.1:1]
    - name: orders
      hosts: [b]
      endpoints: [127.0.0.1:2]`,
    errors: [`t.yaml:11:15: ${UP}[1].name: duplicate upstream name "orders", first used at line 8`],
  },
  {
    name: 'one host claimed by two upstreams, compared case-insensitively',
    spec: `
outbound:
  upstreams:
    - name: a
      hosts: [orders]
      endpoints: [127.0.0.1:1]
    - name: b
      hosts: [search, Orders]
      endpoints: [127.0.0.1:2]`,
    errors: [`t.yaml:12:25: ${UP}[1].hosts[1]: host "orders" is already claimed by upstream a (line 9)`],
  },
  {
    name: 'malformed host',
    spec: 'outbound:\n  upstreams:\n    - {name: a, hosts: [orders/v1], endpoints: [127.0.0.1:1]}',
    errors: [`t.yaml:8:27: ${UP}[0].hosts[0]: must be host or host:port, got "orders/v1" ("orders/v1" is not a valid host name)`],
  },
  {
    name: 'bad endpoints',
    spec: `
outbound:
  upstreams:
    - name: a
      hosts: [a]
      endpoints:
        - orders
        - "127.0.0.1:0"
        - "[zz]:80"
        - 8080`,
    errors: [
      `t.yaml:11:13: ${UP}[0].endpoints[0]: must be host:port, got "orders" (missing port)`,
      `t.yaml:12:13: ${UP}[0].endpoints[1]: must be host:port, got "127.0.0.1:0" (port must be from 1 to 65535)`,
      `t.yaml:13:13: ${UP}[0].endpoints[2]: must be host:port, got "[zz]:80" ("zz" is not an IPv6 address)`,
      `t.yaml:14:13: ${UP}[0].endpoints[3]: must be a non-empty string, got 8080`,
    ],
  },
  {
    name: 'missing hosts and empty endpoints',
    spec: 'outbound:\n  upstreams:\n    - name: a\n      endpoints: []',
    errors: [
      `t.yaml:8:9: ${UP}[0].hosts: is required`,
      `t.yaml:9:20: ${UP}[0].endpoints: must list at least one host:port`,
    ],
  },
  {
    name: 'an upstream that is not a map',
    spec: 'outbound:\n  upstreams: [orders]',
    errors: [`t.yaml:7:17: ${UP}[0]: must be a map, got "orders"`],
  },
  {
    name: 'capMs below baseMs in one section',
    spec: 'outbound:\n  defaults:\n    retry:\n      backoff: {baseMs: 100, capMs: 50}',
    errors: ['t.yaml:9:39: spec.outbound.defaults.retry.backoff.capMs: must be at least backoff.baseMs (100), got 50'],
  },
  {
    name: 'a route baseMs above the inherited capMs',
    spec: `
outbound:
  upstreams:
    - name: a
      hosts: [a]
      endpoints: [127.0.0.1:1]
      routes:
        - name: slow
          retry: {backoff: {baseMs: 5000}}`,
    errors: [`t.yaml:13:39: ${UP}[0].routes[0].retry.backoff.baseMs: must be at most backoff.capMs (1000), got 5000`],
  },
  {
    name: 'unknown retry condition and status out of range',
    spec: 'outbound:\n  defaults:\n    retry: {retryOn: [rest], retryOnStatuses: [99]}',
    errors: [
      't.yaml:8:25: spec.outbound.defaults.retry.retryOn[0]: must be one of connect-failure, reset, refused-stream, per-try-timeout, got "rest"; did you mean reset?',
      't.yaml:8:50: spec.outbound.defaults.retry.retryOnStatuses[0]: must be an integer from 100 to 599, got 99',
    ],
  },
  {
    name: 'route names and matches',
    spec: `
outbound:
  upstreams:
    - name: a
      hosts: [a]
      endpoints: [127.0.0.1:1]
      routes:
        - name: default
        - name: r
          match: {pathPrefix: api, methods: []}
        - name: r`,
    errors: [
      `t.yaml:12:19: ${UP}[0].routes[0].name: "default" is reserved for the catch-all route every upstream ends with`,
      `t.yaml:14:33: ${UP}[0].routes[1].match.pathPrefix: must start with '/', got "api"`,
      `t.yaml:14:47: ${UP}[0].routes[1].match.methods: must list at least one HTTP method`,
      `t.yaml:15:19: ${UP}[0].routes[2].name: duplicate route name "r" in this upstream, first used at line 13`,
    ],
  },
  {
    name: 'upstream name that is not a DNS label',
    spec: 'outbound:\n  upstreams:\n    - {name: Orders_1, hosts: [a], endpoints: [127.0.0.1:1]}',
    errors: [
      `t.yaml:8:16: ${UP}[0].name: must be a DNS label (lower-case letters, digits and '-', at most 63 characters), got "Orders_1"`,
    ],
  },
  {
    name: 'unknownHosts typo',
    spec: 'outbound: {unknownHosts: rejct}',
    errors: ['t.yaml:6:28: spec.outbound.unknownHosts: must be one of forward, reject, got "rejct"; did you mean reject?'],
  },
  {
    name: 'deadline header not lower-case',
    spec: 'deadlineHeader: X-Deadline',
    errors: ['t.yaml:6:19: spec.deadlineHeader: must be a lower-case HTTP header name, got "X-Deadline"'],
  },
  {
    name: 'listener address and port',
    spec: 'outbound:\n  listener: {address: "not a host", port: 70000}',
    errors: [
      't.yaml:7:25: spec.outbound.listener.address: must be an IP address or a host name, got "not a host"',
      't.yaml:7:45: spec.outbound.listener.port: must be an integer from 0 to 65535, got 70000',
    ],
  },
  {
    name: 'two listeners on one port',
    spec: 'admin: {port: 15001}',
    errors: ['t.yaml:6:17: spec.admin.port: port 15001 is used by both spec.admin and spec.outbound.listener'],
  },
  {
    name: 'maxDeadlineMs zero',
    spec: 'inbound: {maxDeadlineMs: 0}',
    errors: ['t.yaml:6:28: spec.inbound.maxDeadlineMs: must be an integer from 1 to 86400000 or off, got 0'],
  },
  {
    name: 'wrong kind: the rest is not checked against our schema',
    raw: 'apiVersion: sluice.dev/v1alpha1\nkind: Deployment\nmetadata: {name: x}\nspec: {replicas: 3}\n',
    errors: ['t.yaml:2:7: kind: must be SidecarPolicy, got "Deployment"'],
  },
  {
    name: 'wrong apiVersion',
    raw: 'apiVersion: sluice.dev/v1\nkind: SidecarPolicy\nmetadata: {name: x}\n',
    errors: ['t.yaml:1:13: apiVersion: must be sluice.dev/v1alpha1, got "sluice.dev/v1"'],
  },
  {
    name: 'missing metadata.name',
    raw: 'apiVersion: sluice.dev/v1alpha1\nkind: SidecarPolicy\nmetadata: {}\n',
    errors: ['t.yaml:3:11: metadata.name: is required'],
  },
  {
    name: 'metadata.name not a DNS name',
    raw: 'apiVersion: sluice.dev/v1alpha1\nkind: SidecarPolicy\nmetadata:\n  name: Orders Producer\n',
    errors: [
      `t.yaml:4:9: metadata.name: must be a DNS-1123 name (lower-case letters, digits, '-' and '.', at most 253 characters), got "Orders Producer"`,
    ],
  },
  {
    name: 'a second document',
    raw: `${HEADER}---\n${HEADER}`,
    errors: ['t.yaml:6:1: a policy file holds exactly one document; this is a second one'],
  },
  {
    name: 'an empty file',
    raw: '# nothing here\n',
    errors: ['t.yaml:1:1: no SidecarPolicy document in the file'],
  },
  {
    name: 'a document that is not a map',
    raw: '- a\n',
    errors: ['t.yaml:1:1: the document must be a map of apiVersion, kind, metadata and spec, got a list'],
  },
  {
    name: 'YAML syntax error',
    raw: 'apiVersion: sluice.dev/v1alpha1\nkind: [SidecarPolicy\nmetadata: {name: x}\n',
    errors: ['t.yaml:3:1: Flow sequence in block collection must be sufficiently indented and end with a ]'],
  },
  {
    name: 'duplicate key',
    spec: 'admin: {port: 1}\nadmin: {port: 2}',
    errors: ['t.yaml:7:3: Map keys must be unique'],
  },
];

describe('parsePolicy rejects', () => {
  it.each(cases)('$name', ({ spec, raw, errors }) => {
    expect(errorsOf(raw ?? doc(spec ?? ''))).toEqual(errors);
  });
});

describe('error records', () => {
  it('carry file, 1-based line and column, and the dotted field', () => {
    const r = parsePolicy(doc('outbound:\n  defaults:\n    retry: {maxAttempts: 11}'), 'p/orders.yaml');
    expect(r).toEqual({
      ok: false,
      errors: [
        {
          file: 'p/orders.yaml',
          line: 8,
          col: 28,
          field: 'spec.outbound.defaults.retry.maxAttempts',
          reason: 'must be an integer from 1 to 10, got 11',
        },
      ],
    });
  });

  it('are all collected and sorted by position', () => {
    const errors = errorsOf(
      doc(`
shutdown: {graceMs: -1}
limits: {maxHeaderBytes: 1}
admin: {port: x}`),
    );
    expect(errors.map((e) => e.split(': ')[0])).toEqual(['t.yaml:6:23', 't.yaml:7:28', 't.yaml:8:17']);
  });
});
