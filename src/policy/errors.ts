// One shape for every problem found in a policy file, from YAML syntax to a value out of range, so
// `sluice validate`, the watcher and the config service all report the same text for the same cause.
import type { SidecarPolicy } from './types.ts';

export interface PolicyError {
  readonly file: string;
  /** 1-based; 0 when the problem is the file itself (unreadable, too large). */
  readonly line: number;
  /** 1-based; 0 together with line 0. */
  readonly col: number;
  /** Dotted path of the offending field (`spec.outbound.upstreams[0].retry.maxAttempts`); '' for the document. */
  readonly field: string;
  readonly reason: string;
}

export type ParseResult =
  | { readonly ok: true; readonly policy: SidecarPolicy }
  | { readonly ok: false; readonly errors: readonly PolicyError[] };

/** `file:line:col: field: reason`; the position is left out for file-level errors, the field for document-level ones. */
export function formatPolicyError(e: PolicyError): string {
  const where = e.line > 0 ? `${e.file}:${e.line}:${e.col}` : e.file;
  return e.field ? `${where}: ${e.field}: ${e.reason}` : `${where}: ${e.reason}`;
}
