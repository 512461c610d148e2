// The sidecar container and the volumes it mounts, built from one workload's SidecarOptions.
// Plain JSON objects in Kubernetes' own field names: what is built here is what the pod gets.
import { isLoopback, type SidecarOptions } from './annotations.ts';

export const SIDECAR_NAME = 'sluice';
export const INBOUND_PORT_NAME = 'sluice-inbound';
export const ADMIN_PORT_NAME = 'sluice-admin';

export const PATHS = Object.freeze({
  state: '/var/run/sluice',
  podinfo: '/etc/podinfo',
  labelsFile: '/etc/podinfo/labels',
  token: '/etc/sluice/token',
  tokenFile: '/etc/sluice/token/token',
  policy: '/etc/sluice/policy',
  policyFile: '/etc/sluice/policy/sluice.yaml',
});

export const VOLUMES = Object.freeze({
  state: 'sluice-state',
  podinfo: 'sluice-podinfo',
  token: 'sluice-control-token',
  policy: 'sluice-policy',
});

/** The image's USER (1000:1000), pinned here too: runAsNonRoot can only check a numeric user, whatever --image names. */
const SIDECAR_UID = 1000;

type Json = Record<string, unknown>;

function loopbackUrl(o: SidecarOptions, path: string): string {
  const host = o.adminAddress === '::1' ? '[::1]' : '127.0.0.1';
  return `http://${host}:${o.ports.admin}${path}`;
}

/**
 * One GET on the loopback admin listener, exit 0 on 200. node:http rather than fetch: fetch loads
 * undici on first use, which doubles the probe's CPU (~25 ms against ~50 ms) and adds ~15 MiB.
 */
export function probeScript(url: string): string {
  return `require('http').get('${url}',r=>process.exit(r.statusCode===200?0:1)).on('error',()=>process.exit(1))`;
}

/** Polls /healthz until it answers 200, at most 60 s: a legacy postStart hook holding the app back. */
export function waitScript(url: string): string {
  return (
    `const end=Date.now()+60000;function again(){if(Date.now()>end)process.exit(1);setTimeout(poll,250)}` +
    `function poll(){require('http').get('${url}',r=>r.statusCode===200?process.exit(0):(r.resume(),again())).on('error',again)}poll()`
  );
}

/**
 * The kubelet probes from the node's network namespace, at the pod IP, so an httpGet probe can
 * never reach a loopback-only admin listener. Loopback admin (the default) is probed by exec in
 * the container; an exposed admin (wildcard address) by httpGet, which costs nothing.
 */
function probe(o: SidecarOptions, path: string, timing: Json): Json {
  const handler = isLoopback(o.adminAddress)
    ? { exec: { command: ['node', '-e', probeScript(loopbackUrl(o, path))] } }
    : { httpGet: { path, port: o.ports.admin } };
  return { ...handler, ...timing };
}

export function sidecarArgs(o: SidecarOptions): string[] {
  const args = ['proxy', '--inbound-port', String(o.ports.inbound), '--outbound-port', String(o.ports.outbound), '--admin-port', String(o.ports.admin)];
  if (o.adminAddress !== '127.0.0.1') args.push('--admin-address', o.adminAddress);
  if (o.appPort !== undefined) args.push('--app-port', String(o.appPort));
  switch (o.source.kind) {
    case 'control':
      args.push(
        '--control', o.source.address,
        '--control-token-file', PATHS.tokenFile,
        '--state-dir', PATHS.state,
        '--service', o.service,
        '--labels-file', PATHS.labelsFile,
      );
      break;
    case 'configmap':
      args.push('--policy', PATHS.policyFile);
      break;
    case 'bundled':
      break;
  }
  return args;
}

export function sidecarVolumes(o: SidecarOptions): Json[] {
  switch (o.source.kind) {
    case 'control':
      return [
        // The last good pushed policy: a restart while the config service is down starts from it.
        { name: VOLUMES.state, emptyDir: { sizeLimit: '16Mi' } },
        { name: VOLUMES.podinfo, downwardAPI: { items: [{ path: 'labels', fieldRef: { fieldPath: 'metadata.labels' } }] } },
        { name: VOLUMES.token, secret: { secretName: o.source.tokenSecret } },
      ];
    case 'configmap':
      // The whole ConfigMap as a directory (no subPath), so an edit reaches the sidecar's watcher.
      return [{ name: VOLUMES.policy, configMap: { name: o.source.name } }];
    case 'bundled':
      return [];
  }
}

function sidecarMounts(o: SidecarOptions): Json[] {
  switch (o.source.kind) {
    case 'control':
      return [
        { name: VOLUMES.state, mountPath: PATHS.state },
        { name: VOLUMES.podinfo, mountPath: PATHS.podinfo, readOnly: true },
        { name: VOLUMES.token, mountPath: PATHS.token, readOnly: true },
      ];
    case 'configmap':
      return [{ name: VOLUMES.policy, mountPath: PATHS.policy, readOnly: true }];
    case 'bundled':
      return [];
  }
}

/** OpenTelemetry's own variables: what `sluice proxy` reads to trace (see README, Traces). */
function traceEnv(o: SidecarOptions): Json[] {
  const t = o.traces;
  if (t === undefined) return [];
  return [
    { name: 'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT', value: t.endpoint },
    { name: 'OTEL_TRACES_SAMPLER', value: 'parentbased_traceidratio' },
    { name: 'OTEL_TRACES_SAMPLER_ARG', value: String(t.sampling) },
    ...(o.service === '' ? [] : [{ name: 'OTEL_SERVICE_NAME', value: o.service }]),
    // The token file, not the token: it stays out of the pod spec and the environment.
    ...(t.withControlToken ? [{ name: 'SLUICE_TRACES_TOKEN_FILE', value: PATHS.tokenFile }] : []),
  ];
}

export function sidecarContainer(o: SidecarOptions): Json {
  const ports: Json[] = [];
  if (o.appPort !== undefined) ports.push({ name: INBOUND_PORT_NAME, containerPort: o.ports.inbound });
  if (!isLoopback(o.adminAddress)) ports.push({ name: ADMIN_PORT_NAME, containerPort: o.ports.admin });
  const mounts = sidecarMounts(o);
  const c: Json = {
    name: SIDECAR_NAME,
    image: o.image,
    args: sidecarArgs(o),
    env: [{ name: 'POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } }, ...traceEnv(o)],
    ...(ports.length > 0 ? { ports } : {}),
    // A native sidecar: started before the app containers, stopped after them; a Job completes
    // when its app containers do.
    ...(o.legacy ? {} : { restartPolicy: 'Always' }),
    // /healthz, not /readyz: /readyz also needs the app to accept connections, and the app is not
    // started until this probe passes. /healthz answers once every listener is up.
    startupProbe: probe(o, '/healthz', { periodSeconds: 1, timeoutSeconds: 2, failureThreshold: 60 }),
    livenessProbe: probe(o, '/healthz', { periodSeconds: 20, timeoutSeconds: 3, failureThreshold: 3 }),
    // Ready = can forward to the app and is not draining; a worker taking no traffic has no app to reach.
    readinessProbe: probe(o, o.appPort === undefined ? '/healthz' : '/readyz', { periodSeconds: 5, timeoutSeconds: 3, failureThreshold: 3 }),
    // A regular container has no start order; the kubelet starts the next container only when
    // this hook returns, so the app starts once the listeners are up.
    ...(o.legacy ? { lifecycle: { postStart: { exec: { command: ['node', '-e', waitScript(loopbackUrl(o, '/healthz'))] } } } } : {}),
    resources: {
      requests: { ...o.resources.requests },
      limits: { ...o.resources.limits },
    },
    securityContext: {
      runAsNonRoot: true,
      runAsUser: SIDECAR_UID,
      runAsGroup: SIDECAR_UID,
      readOnlyRootFilesystem: true,
      allowPrivilegeEscalation: false,
      capabilities: { drop: ['ALL'] },
      seccompProfile: { type: 'RuntimeDefault' },
    },
    ...(mounts.length > 0 ? { volumeMounts: mounts } : {}),
    terminationMessagePolicy: 'FallbackToLogsOnError',
  };
  return c;
}

/**
 * The app's proxy variables. Both spellings: curl and wget read only the lowercase ones, the JVM
 * and .NET the uppercase ones; Go and Python either. No HTTPS_PROXY: TLS could only be tunnelled,
 * with no policy but connect and idle timeouts, and every client library would pay a hop for it.
 * NO_PROXY keeps loopback and the Kubernetes API direct, and nothing else: Service traffic is what
 * sluice is for. `$(KUBERNETES_SERVICE_HOST)` is expanded by the kubelet (the API's address).
 */
export function proxyEnv(o: SidecarOptions): Json[] {
  const proxy = `http://127.0.0.1:${o.ports.outbound}`;
  const noProxy = 'localhost,127.0.0.1,::1,$(KUBERNETES_SERVICE_HOST),kubernetes.default.svc,kubernetes.default';
  return [
    { name: 'HTTP_PROXY', value: proxy },
    { name: 'http_proxy', value: proxy },
    { name: 'NO_PROXY', value: noProxy },
    { name: 'no_proxy', value: noProxy },
  ];
}
