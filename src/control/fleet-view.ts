// The fleet as JSON (`GET /v1/fleet`, and what `sluice status` prints): which sidecar runs which
// version, whether it is connected, its health, and the last thing that went wrong.
import type { Fleet } from './fleet.ts';
import type { Health } from './protocol.ts';

export interface SidecarView {
  readonly id: string;
  readonly service: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly sluiceVersion: string;
  readonly connected: boolean;
  readonly lastSeen: string;
  readonly applied: { readonly version: string; readonly commit: string };
  readonly desired: { readonly version: string; readonly commit: string; readonly file: string } | null;
  /** applied equals desired (or no policy selects it). */
  readonly inSync: boolean;
  readonly pending: { readonly version: string; readonly since: string } | null;
  readonly lastError: { readonly version: string; readonly commit: string; readonly kept: string; readonly message: string; readonly errors: readonly string[]; readonly at: string } | null;
  readonly health: Health | null;
}

export interface FleetView {
  readonly repo: string;
  readonly branch: string;
  readonly serving: { readonly commit: string; readonly policies: readonly { readonly file: string; readonly version: string; readonly name: string }[] } | null;
  readonly rejected: { readonly commit: string; readonly errors: readonly string[]; readonly at: string } | null;
  readonly fetchError: { readonly code: string; readonly message: string } | null;
  readonly sidecars: readonly SidecarView[];
}

const iso = (ms: number): string => new Date(ms).toISOString();

export function fleetView(
  fleet: Fleet,
  extra: {
    repo: string;
    branch: string;
    rejected: { commit: string; errors: readonly string[]; atMs: number } | undefined;
    fetchError: { code: string; message: string } | undefined;
  },
): FleetView {
  const set = fleet.set;
  return {
    repo: extra.repo,
    branch: extra.branch,
    serving: set === undefined ? null : { commit: set.commit, policies: set.entries.map((e) => ({ file: e.file, version: e.version, name: e.policy.name })) },
    rejected: extra.rejected === undefined ? null : { commit: extra.rejected.commit, errors: extra.rejected.errors, at: iso(extra.rejected.atMs) },
    fetchError: extra.fetchError ?? null,
    sidecars: fleet.records().map((r) => ({
      id: r.id,
      service: r.service,
      labels: r.labels,
      sluiceVersion: r.sluiceVersion,
      connected: r.connected,
      lastSeen: iso(r.lastSeenMs),
      applied: { version: r.appliedVersion, commit: r.appliedCommit },
      desired: r.desired ?? null,
      inSync: r.desired === undefined || r.desired.version === r.appliedVersion,
      pending: r.pending === undefined ? null : { version: r.pending.version, since: iso(r.pending.sentAtMs) },
      lastError:
        r.lastError === undefined
          ? null
          : { version: r.lastError.version, commit: r.lastError.commit, kept: r.lastError.kept, message: r.lastError.message, errors: r.lastError.errors, at: iso(r.lastError.atMs) },
      health: r.health ?? null,
    })),
  };
}
