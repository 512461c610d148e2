// Outside tools some tests run (kubectl, promtool, openssl, ssh). Tests that need one skip, and
// say so in their name, where it is not installed; in CI a missing tool is an error, as for
// redis-server: .ci/run installs them, and a suite that quietly skipped them would be no pass.
import { spawnSync } from 'node:child_process';

export function toolAvailable(command: string, versionArgs: readonly string[], install: string): boolean {
  const installed = spawnSync(command, [...versionArgs], { stdio: 'ignore' }).status === 0;
  if (!installed && process.env['CI'] === 'true') throw new Error(`${command} is not installed; ${install}`);
  return installed;
}
