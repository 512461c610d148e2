// `sluice status`: the fleet as the config service sees it, one line per sidecar.
import { parseArgs } from 'node:util';
import type { FleetView, SidecarView } from '../control/fleet-view.ts';
import { readToken } from './control.ts';

export const STATUS_HELP = `Usage: sluice status [--api URL] [--token-file FILE] [--json]

Prints the sidecars a config service replica knows: policy version, connected, health, last error.

Options:
  --api URL          the service's HTTP API (default http://127.0.0.1:15014)   (env SLUICE_CONTROL_API)
  --token-file FILE  bearer token, when the service requires one            (env SLUICE_CONTROL_TOKEN_FILE)
  --json             print the API's JSON as it is
  -h, --help         this help`;

function health(s: SidecarView): string {
  const h = s.health;
  if (h === null) return s.connected ? 'no report yet' : '-';
  const open = h.breakers.filter((b) => b.state !== 'closed').map((b) => `${b.upstream}${b.route ? `/${b.route}` : ''} ${b.state}`);
  const parts = [h.state, `${h.requestsPerSecond.toFixed(1)} req/s`, `${h.errorsPerSecond.toFixed(1)} err/s`];
  if (h.refusalsPerSecond > 0) parts.push(`${h.refusalsPerSecond.toFixed(1)} refused/s`);
  if (open.length > 0) parts.push(`breaker ${open.join(', ')}`);
  const exhausted = h.budgets.filter((b) => b.available === 0).map((b) => b.upstream);
  if (exhausted.length > 0) parts.push(`retry budget exhausted: ${exhausted.join(', ')}`);
  return parts.join(', ');
}

function lastError(s: SidecarView): string {
  const e = s.lastError;
  if (e === null) return '-';
  return `NACK ${e.version} (kept ${e.kept || 'bundled'}): ${e.errors[0] ?? e.message}`;
}

/** Columns padded to their widest cell; the last column is left as long as it is. */
export function formatTable(rows: readonly (readonly string[])[]): string {
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length))) ?? [];
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i] ?? 0))).join('  ').trimEnd()).join('\n');
}

export function formatFleet(view: FleetView): string {
  const lines: string[] = [];
  lines.push(`repository ${view.repo} (${view.branch}): serving ${view.serving?.commit.slice(0, 12) ?? 'nothing yet'}`);
  if (view.rejected !== null) lines.push(`rejected commit ${view.rejected.commit.slice(0, 12)}: ${view.rejected.errors.length} errors, first: ${view.rejected.errors[0] ?? ''}`);
  if (view.fetchError !== null) lines.push(`repository unreachable (${view.fetchError.code}): ${view.fetchError.message}`);
  const rows = [['SIDECAR', 'SERVICE', 'VERSION', 'COMMIT', 'SYNC', 'CONNECTED', 'HEALTH', 'LAST ERROR']];
  for (const s of view.sidecars) {
    rows.push([
      s.id,
      s.service || '-',
      s.applied.version || 'bundled',
      s.applied.commit.slice(0, 12) || '-',
      s.inSync ? 'yes' : s.pending !== null ? 'pushing' : 'no',
      s.connected ? 'yes' : `no (since ${s.lastSeen})`,
      health(s),
      lastError(s),
    ]);
  }
  lines.push('', formatTable(rows));
  if (view.sidecars.length === 0) lines.push('(no sidecars connected to this replica)');
  return lines.join('\n');
}

export async function runStatus(argv: string[], out: (line: string) => void = console.log): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: { api: { type: 'string' }, 'token-file': { type: 'string' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
    strict: true,
  });
  if (values.help === true) {
    out(STATUS_HELP);
    return 0;
  }
  const api = (values.api ?? process.env.SLUICE_CONTROL_API ?? 'http://127.0.0.1:15014').replace(/\/$/, '');
  const token = await readToken(values['token-file'] ?? process.env.SLUICE_CONTROL_TOKEN_FILE, '--token-file');
  let res: Response;
  try {
    res = await fetch(`${api}/v1/fleet`, { headers: token === undefined ? {} : { authorization: `Bearer ${token}` }, signal: AbortSignal.timeout(5000) });
  } catch (err) {
    out(`sluice status: cannot reach ${api}: ${(err as Error).cause instanceof Error ? ((err as Error).cause as Error).message : (err as Error).message}`);
    return 1;
  }
  if (res.status !== 200) {
    out(`sluice status: ${api}/v1/fleet answered ${res.status}: ${(await res.text()).trim()}`);
    return 1;
  }
  const view = (await res.json()) as FleetView;
  out(values.json === true ? JSON.stringify(view, null, 2) : formatFleet(view));
  return 0;
}
