#!/usr/bin/env node
// The one CLI: `sluice <command>`. Each command lives in src/cli/ and returns its exit code.
import { runControl } from './cli/control.ts';
import { runInject } from './cli/inject.ts';
import { runProxy } from './cli/proxy.ts';
import { runStatus } from './cli/status.ts';
import { runValidate } from './cli/validate.ts';
import { SLUICE_VERSION } from './cli/version.ts';
import { runWebhook } from './cli/webhook.ts';

const HELP = `Usage: sluice <command> [options]

Commands:
  proxy       run the sidecar (outbound :15001, inbound :15006, admin :15000)
  control     run the config service: follow a git repository of policies, push them to sidecars
  status      print the fleet a config service sees (sidecar, version, connected, health, last error)
  validate    check policy files: prints file:line:col: field: reason, exit 1 on any error
  inject      add the sidecar to Kubernetes manifests (files or stdin) and print them
  webhook     serve the same injection as a mutating admission webhook (HTTPS, AdmissionReview v1)

Options:
  -h, --help     this help (also: sluice <command> --help)
  -v, --version  print the version`;

const VALIDATE_HELP = `Usage: sluice validate PATH...

Checks policy files (and *.yaml/*.yml under directories) as a policy repository's CI would.
Prints "file: ok" or one "file:line:col: field: reason" line per error.
Exit 0 when all are valid, 1 when any is invalid, 2 on usage errors.`;

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case 'proxy':
      return runProxy(rest);
    case 'control':
      return runControl(rest);
    case 'status':
      return runStatus(rest);
    case 'inject':
      return runInject(rest);
    case 'webhook':
      return runWebhook(rest);
    case 'validate':
      if (rest.includes('--help') || rest.includes('-h')) {
        console.log(VALIDATE_HELP);
        return 0;
      }
      return runValidate(rest, (line) => console.log(line));
    case '-v':
    case '--version':
      console.log(SLUICE_VERSION);
      return 0;
    case undefined:
    case '-h':
    case '--help':
      console.log(HELP);
      return command === undefined ? 2 : 0;
    default:
      console.error(`sluice: unknown command ${JSON.stringify(command)}\n\n${HELP}`);
      return 2;
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(`sluice: ${err instanceof Error ? err.message : String(err)}`);
    process.exit(1);
  },
);
