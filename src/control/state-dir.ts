// The last good policy a sidecar got from the config service, kept in a directory (an emptyDir
// in Kubernetes) so a restart during a control-plane outage starts from it, not from the
// bundled default. Written atomically (temp file, then rename): a crash mid-write leaves the
// previous copy, never half a policy.
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parsePolicy } from '../policy/parse.ts';
import { policyVersion } from './policy-set.ts';
import type { SidecarPolicy } from '../policy/types.ts';

export interface PersistedPolicy {
  readonly version: string;
  readonly commit: string;
  readonly file: string;
  readonly yaml: string;
  readonly policy: SidecarPolicy;
}

const POLICY_FILE = 'policy.yaml';
const META_FILE = 'policy.json';

export async function savePolicy(dir: string, p: Omit<PersistedPolicy, 'policy'>): Promise<void> {
  await mkdir(dir, { recursive: true });
  const meta = JSON.stringify({ version: p.version, commit: p.commit, file: p.file, savedAt: new Date().toISOString() }, null, 2);
  // The policy first, then its description: the description names what is on disk.
  await writeFile(join(dir, `${POLICY_FILE}.tmp`), p.yaml);
  await rename(join(dir, `${POLICY_FILE}.tmp`), join(dir, POLICY_FILE));
  await writeFile(join(dir, `${META_FILE}.tmp`), `${meta}\n`);
  await rename(join(dir, `${META_FILE}.tmp`), join(dir, META_FILE));
}

/** The persisted policy, or why there is none usable (missing, unreadable, invalid). */
export async function loadPersisted(dir: string): Promise<PersistedPolicy | string> {
  let yaml: string;
  let meta: { version?: unknown; commit?: unknown; file?: unknown };
  try {
    yaml = await readFile(join(dir, POLICY_FILE), 'utf8');
    meta = JSON.parse(await readFile(join(dir, META_FILE), 'utf8')) as typeof meta;
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    return e.code === 'ENOENT' ? 'no persisted policy yet' : `cannot read the persisted policy: ${e.message}`;
  }
  const parsed = parsePolicy(yaml, join(dir, POLICY_FILE));
  if (!parsed.ok) return `the persisted policy is invalid (${parsed.errors.length} errors), ignored`;
  // The version is the document's content hash: a crash between the two renames leaves a pair
  // that does not match, and the sidecar must not claim to run a version it does not.
  if (typeof meta.version !== 'string' || typeof meta.commit !== 'string' || typeof meta.file !== 'string' || meta.version !== policyVersion(yaml)) {
    return `${join(dir, META_FILE)} does not describe the persisted policy, ignored`;
  }
  return { version: meta.version, commit: meta.commit, file: meta.file, yaml, policy: parsed.policy };
}
