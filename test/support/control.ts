// A policy repository in a temporary folder, a config service following it, and sidecars linked
// to the service, all in this process on ephemeral ports, for the control-plane tests.
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import type { FleetView } from '../../src/control/fleet-view.ts';
import { startControl, type ControlOptions, type ControlService } from '../../src/control/server.ts';
import { linkToControl, type ControlLink } from '../../src/control/sidecar-link.ts';
import { loadPersisted } from '../../src/control/state-dir.ts';
import type { SidecarPolicy } from '../../src/policy/types.ts';
import { startSidecar } from '../../src/proxy/sidecar.ts';
import { silentLogger } from '../../src/telemetry/log.ts';
import type { Tracing } from '../../src/telemetry/tracing.ts';
import { send } from './http-client.ts';
import { eventually } from './lifecycle.ts';
import { buildPolicy, deepMerge, type SpecOverrides } from './sidecar.ts';

const exec = promisify(execFile);
const GIT_ENV = {
  ...process.env,
  GIT_AUTHOR_NAME: 'test',
  GIT_AUTHOR_EMAIL: 'test@example.com',
  GIT_COMMITTER_NAME: 'test',
  GIT_COMMITTER_EMAIL: 'test@example.com',
  GIT_TERMINAL_PROMPT: '0',
};

export interface PolicyRepo {
  readonly dir: string;
  /** Writes files (path -> text; null deletes) and commits them; resolves with the commit SHA. */
  commit(files: Record<string, string | null>, message?: string): Promise<string>;
  close(): Promise<void>;
}

export async function policyRepo(): Promise<PolicyRepo> {
  const dir = await mkdtemp(join(tmpdir(), 'sluice-policies-'));
  const git = (...args: string[]) => exec('git', args, { cwd: dir, env: GIT_ENV });
  await git('init', '-q', '-b', 'main');
  return {
    dir,
    async commit(files, message = 'update policies') {
      for (const [path, text] of Object.entries(files)) {
        const full = join(dir, path);
        if (text === null) await rm(full, { force: true });
        else {
          await mkdir(dirname(full), { recursive: true });
          await writeFile(full, text);
        }
      }
      await git('add', '-A');
      await git('commit', '-q', '--allow-empty', '-m', message);
      return (await git('rev-parse', 'HEAD')).stdout.trim();
    },
    close: () => rm(dir, { recursive: true, force: true }),
  };
}

/**
 * A policy document for the repository. Listeners are on 127.0.0.1 port 0, as the test
 * sidecars run (a pushed policy that moved a listener would need a restart and be refused).
 */
export function policyDoc(name: string, spec: Record<string, unknown> = {}): string {
  const body = {
    apiVersion: 'sluice.dev/v1alpha1',
    kind: 'SidecarPolicy',
    metadata: { name },
    spec: deepMerge(
      {
        admin: { address: '127.0.0.1', port: 0 },
        inbound: { listener: { address: '127.0.0.1', port: 0 } },
        outbound: { listener: { address: '127.0.0.1', port: 0 } },
      },
      spec,
    ),
  };
  return `${JSON.stringify(body, null, 2)}\n`;
}

export async function startTestControl(repo: PolicyRepo, over: Partial<ControlOptions> = {}): Promise<ControlService & { workDir: string }> {
  const workDir = await mkdtemp(join(tmpdir(), 'sluice-control-'));
  const service = await startControl({
    repo: repo.dir,
    branch: 'main',
    workDir,
    pollMs: 60_000,
    debounceMs: 10,
    gitTimeoutMs: 10_000,
    grpc: { host: '127.0.0.1', port: 0 },
    api: { host: '127.0.0.1', port: 0 },
    token: undefined,
    maxSidecars: 1000,
    log: silentLogger,
    ...over,
  });
  const closeService = service.close.bind(service);
  return Object.assign(service, {
    workDir,
    close: async () => {
      await closeService();
      await rm(workDir, { recursive: true, force: true });
    },
  });
}

export interface LinkedSidecar {
  readonly sidecar: Awaited<ReturnType<typeof startSidecar>>;
  readonly link: ControlLink;
  readonly outboundPort: number;
  readonly inboundPort: number;
  readonly adminPort: number;
  close(): Promise<void>;
}

/** Ports stay 0, as the CLI's port flags keep a pod's ports whatever the policy says. */
const keepPorts = (p: SidecarPolicy): SidecarPolicy => ({
  ...p,
  admin: { ...p.admin, port: 0 },
  outbound: { ...p.outbound, listener: p.outbound.listener && { ...p.outbound.listener, port: 0 } },
  inbound: { ...p.inbound, listener: p.inbound.listener && { ...p.inbound.listener, port: 0 } },
});

export interface LinkSpec {
  readonly id: string;
  readonly service?: string;
  readonly labels?: Record<string, string>;
  readonly controlPort: number;
  /** Further replicas to fail over to. */
  readonly morePorts?: readonly number[];
  readonly token?: string;
  readonly tls?: { readonly ca?: Buffer; readonly cert?: Buffer; readonly key?: Buffer };
  readonly stateDir?: string;
  /** The policy the sidecar starts on (its file); default: the test base policy. */
  readonly start?: SpecOverrides;
  /** Start from the policy persisted in stateDir, as `sluice proxy --state-dir` does. */
  readonly fromStateDir?: boolean;
  readonly tracing?: Tracing;
}

export async function linkedSidecar(spec: LinkSpec): Promise<LinkedSidecar> {
  let policy = (await buildPolicy(spec.start ?? {})).policy;
  let initial = { version: '', commit: '' };
  if (spec.fromStateDir === true && spec.stateDir !== undefined) {
    const persisted = await loadPersisted(spec.stateDir);
    if (typeof persisted === 'string') throw new Error(persisted);
    policy = persisted.policy;
    initial = { version: persisted.version, commit: persisted.commit };
  }
  const sidecar = await startSidecar({ policy: keepPorts(policy), tracing: spec.tracing });
  const link = linkToControl({
    sidecar,
    overrides: keepPorts,
    initial,
    stateDir: spec.stateDir,
    log: silentLogger,
    draining: () => false,
    client: {
      targets: [spec.controlPort, ...(spec.morePorts ?? [])].map((p) => `127.0.0.1:${p}`),
      tls: spec.tls,
      identity: { sidecarId: spec.id, service: spec.service ?? '', labels: spec.labels ?? {}, sluiceVersion: 'test' },
      token: spec.token,
      heartbeatMs: 100,
      backoff: { baseMs: 20, capMs: 200 },
    },
  });
  return {
    sidecar,
    link,
    outboundPort: sidecar.addresses.outbound?.port ?? 0,
    inboundPort: sidecar.addresses.inbound?.port ?? 0,
    adminPort: sidecar.addresses.admin.port,
    async close() {
      await link.close();
      await sidecar.close();
    },
  };
}

/** The fleet one config service replica sees (GET /v1/fleet); throws unless 200. */
export async function fleet(apiPort: number, token?: string): Promise<FleetView> {
  const r = await send({ port: apiPort, path: '/v1/fleet', ...(token === undefined ? {} : { headers: { authorization: `Bearer ${token}` } }) });
  if (r.status !== 200) throw new Error(`fleet: ${r.status} ${r.text}`);
  return JSON.parse(r.text) as FleetView;
}

/** Polls `check` every 10 ms until it holds, at most `timeoutMs`; the failure names `what`. */
export async function until(check: () => boolean | Promise<boolean>, what: string, timeoutMs = 5000): Promise<void> {
  await eventually(what, async () => (await check()) || undefined, timeoutMs, 10);
}
