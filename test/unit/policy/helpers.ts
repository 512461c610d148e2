// Builds policy documents for tests. The header takes lines 1-5, so a spec fragment's first line
// is line 6 of the document and its top-level keys sit at column 3.
import { formatPolicyError, parsePolicy } from '../../../src/policy/parse.ts';
import type { SidecarPolicy } from '../../../src/policy/types.ts';

export const HEADER = 'apiVersion: sluice.dev/v1alpha1\nkind: SidecarPolicy\nmetadata:\n  name: t\nspec:\n';

/** A whole document from a spec fragment written at column 1. */
export function doc(spec: string): string {
  const lines = spec.replace(/^\n/, '').trimEnd().split('\n');
  return HEADER + lines.map((l) => (l ? `  ${l}` : l)).join('\n') + '\n';
}

/** Formatted errors for a document, or [] when it parses. */
export function errorsOf(text: string, file = 't.yaml'): string[] {
  const r = parsePolicy(text, file);
  return r.ok ? [] : r.errors.map(formatPolicyError);
}

/** The policy for a spec fragment; throws with the errors when it is invalid. */
export function policyOf(spec: string): SidecarPolicy {
  const r = parsePolicy(doc(spec), 't.yaml');
  if (!r.ok) throw new Error(r.errors.map(formatPolicyError).join('\n'));
  return r.policy;
}
