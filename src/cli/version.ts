// The release, from package.json: one source for `--version`, the control hello and the fleet view.
import { readFileSync } from 'node:fs';

export const SLUICE_VERSION: string = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
