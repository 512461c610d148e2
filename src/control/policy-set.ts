// A commit's policy files, validated as one set, and the choice of the policy each sidecar gets.
// A commit is all or nothing: one invalid file (or two policies claiming the same sidecars with
// the same selector) rejects the whole commit, and the last good set keeps being served. Pure:
// no git, no sockets; the service feeds it what the git follower read.
import { createHash } from 'node:crypto';
import { formatPolicyError, parsePolicy } from '../policy/parse.ts';
import type { PolicySelector, SidecarPolicy } from '../policy/types.ts';

/** A file as read from the repository (the git follower's PolicyFile). */
export interface PolicyFile {
  readonly path: string;
  readonly text: string;
}

export interface PolicyEntry {
  /** Repository-relative path. */
  readonly file: string;
  readonly yaml: string;
  /** Content hash of the document: the same text is the same version in any commit. */
  readonly version: string;
  readonly policy: SidecarPolicy;
}

export interface PolicySet {
  readonly commit: string;
  /** In path order. */
  readonly entries: readonly PolicyEntry[];
}

export type SetResult =
  | { readonly ok: true; readonly set: PolicySet }
  | { readonly ok: false; readonly commit: string; readonly errors: readonly string[] };

export interface SidecarIdentity {
  readonly service: string;
  readonly labels: Readonly<Record<string, string>>;
}

export function policyVersion(yaml: string): string {
  return createHash('sha256').update(yaml).digest('hex').slice(0, 16);
}

function selectorKey(s: PolicySelector): string {
  const labels = Object.entries(s.matchLabels).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return JSON.stringify([s.service ?? null, labels]);
}

/** Validates every file of a commit; errors are "file:line:col: field: reason" lines. */
export function buildPolicySet(commit: string, files: readonly PolicyFile[]): SetResult {
  const errors: string[] = [];
  const entries: PolicyEntry[] = [];
  const bySelector = new Map<string, string>();
  for (const f of files) {
    const parsed = parsePolicy(f.text, f.path);
    if (!parsed.ok) {
      errors.push(...parsed.errors.map(formatPolicyError));
      continue;
    }
    const key = selectorKey(parsed.policy.selector);
    const first = bySelector.get(key);
    if (first !== undefined) {
      errors.push(`${f.path}:1:1: spec.selector: selects the same sidecars as ${first}; give one of them a narrower selector`);
      continue;
    }
    bySelector.set(key, f.path);
    entries.push({ file: f.path, yaml: f.text, version: policyVersion(f.text), policy: parsed.policy });
  }
  if (files.length === 0) errors.push('(repository): no policy files (*.yaml, *.yml) at this commit');
  return errors.length > 0 ? { ok: false, commit, errors } : { ok: true, set: { commit, entries } };
}

/** How specific a matching selector is: a service outweighs any number of labels. */
function specificity(s: PolicySelector): number {
  return (s.service === undefined ? 0 : 1000) + Object.keys(s.matchLabels).length;
}

export function matches(s: PolicySelector, id: SidecarIdentity): boolean {
  if (s.service !== undefined && s.service !== id.service) return false;
  for (const [k, v] of Object.entries(s.matchLabels)) if (id.labels[k] !== v) return false;
  return true;
}

/**
 * The policy a sidecar gets: the most specific selector that matches it; between equally
 * specific ones, the first file in path order (deterministic on every replica). undefined when
 * none matches: the sidecar keeps what it runs.
 */
export function selectPolicy(set: PolicySet, id: SidecarIdentity): PolicyEntry | undefined {
  let best: PolicyEntry | undefined;
  let bestScore = -1;
  for (const e of set.entries) {
    if (!matches(e.policy.selector, id)) continue;
    const score = specificity(e.policy.selector);
    if (score > bestScore) {
      best = e;
      bestScore = score;
    }
  }
  return best;
}
