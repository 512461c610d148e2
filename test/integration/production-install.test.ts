// The image as users run it, built without Docker (no daemon here): the Dockerfile's own steps,
// read from it, carried out in a temporary directory far from the repository (the build stage's
// `npm ci` and `npm run build`, the deps stage's production install and prune, the final stage's
// COPY lines, the .dockerignore applied to the context). Then `sluice proxy` is started from that
// install as the ENTRYPOINT starts it (under tini where this machine has it, as the image's user,
// with the image's ENV and nothing of the repository's), and must answer /readyz, pass the
// HEALTHCHECK and drain on SIGTERM: a request in flight finishes, the process exits 0.
// The final stage's system packages (apt-get) are not installed here; what they must include is
// asserted instead. npm needs the registry, or the npm cache `.ci/run`'s `npm ci` has just filled.
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, linkSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, realpathSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ROOT } from '../support/cli.ts';
import {
  buildStages,
  dockerignore,
  execForm,
  parseCopy,
  parseDockerfile,
  parsePairs,
  runCommands,
  stageArgs,
  substitute,
  type Instruction,
  type Stage,
} from '../support/dockerfile.ts';
import { send } from '../support/http-client.ts';
import { closeAfterEach, eventually } from '../support/lifecycle.ts';
import { startScriptedUpstream } from '../support/scripted-upstream.ts';

const df = parseDockerfile(readFileSync(join(ROOT, 'Dockerfile'), 'utf8'));
const final = df.stages.at(-1)!;
const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string; license: string; engines: { node: string } };
const lock = JSON.parse(readFileSync(join(ROOT, 'package-lock.json'), 'utf8')) as { packages: Record<string, { dev?: boolean }> };

/**
 * What the final stage copies: every path sluice reads at run time, and only those. Listed here
 * as well as read from the Dockerfile so that a change to the image's layout is a change someone
 * reviews in this test too (dist/ finds package.json, config/, src/proto and the status page by relative URL).
 */
const FINAL_COPIES = [
  'deps:/app/node_modules -> ./node_modules',
  'build:/app/dist -> ./dist',
  'package.json -> ./',
  'config -> ./config',
  'src/proto -> ./src/proto',
  'src/control/status-page -> ./src/control/status-page',
];

function only(stage: Stage, keyword: string): Instruction {
  const found = stage.instructions.filter((i) => i.keyword === keyword);
  if (found.length !== 1) throw new Error(`the final stage has ${found.length} ${keyword} instructions, expected 1`);
  return found[0]!;
}

const entrypoint = execForm(only(final, 'ENTRYPOINT').args, only(final, 'ENTRYPOINT').line);
const user = only(final, 'USER').args;
const finalEnv = Object.assign({}, ...final.instructions.filter((i) => i.keyword === 'ENV').map((i) => parsePairs(i.args))) as Record<string, string>;
const healthcheck = (() => {
  const ins = only(final, 'HEALTHCHECK');
  return execForm(ins.args.replace(/^(?:--\S+\s+)*CMD\s+/, ''), ins.line);
})();
/** The image's init (tini) and node's arguments, as ENTRYPOINT splits them. */
const nodeAt = entrypoint.indexOf('node');
const init = entrypoint.slice(0, nodeAt);
const nodeArgs = entrypoint.slice(nodeAt + 1);
/** Here, the init runs when this machine has it (apt package tini); the image always has it. */
const initHere = init.length > 0 && existsSync(init[0]!) ? init : [];

/**
 * What `npm test` tells its scripts about itself (the package, the lifecycle, the outer run's
 * prefixes), which must not steer an install elsewhere; npm_config_* settings such as a registry
 * or a cache are kept.
 */
const OUTER_NPM_RUN = /^npm_(?!config_)|^npm_config_(local_prefix|global_prefix|prefix|user_agent|npm_version|call)$/i;

/** npm as the image's Node runs it: this test's Node 24 first on the PATH. */
function npmEnv(): NodeJS.ProcessEnv {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !OUTER_NPM_RUN.test(k)));
  return { ...env, PATH: `${dirname(process.execPath)}:${process.env.PATH ?? ''}` };
}

function run(command: string, args: readonly string[], options: SpawnOptions, timeoutMs: number): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { ...options, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${command} ${args.join(' ')} did not finish in ${timeoutMs} ms\n${stdout}\n${stderr}`));
    }, timeoutMs);
    child.once('error', reject);
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/**
 * A RUN command of the build or deps stage, in the stage's directory. Only commands that touch
 * nothing outside it are run; any other is a new kind of step this test must learn first.
 */
async function runStep(command: string, cwd: string, stage: Stage): Promise<void> {
  if (!/^(npm ci |npm run build$|find node_modules )/.test(command) || / \//.test(command)) {
    throw new Error(`stage ${stage.name ?? '?'}: RUN ${command}: not a step this test knows how to run outside Docker`);
  }
  // The cache `.ci/run`'s own `npm ci` filled serves the same tarballs; the registry is the fallback.
  const line = command.startsWith('npm ci ') ? `${command} --prefer-offline` : command;
  const r = await run('sh', ['-c', line], { cwd, env: npmEnv() }, 150_000);
  if (r.code !== 0) throw new Error(`stage ${stage.name ?? '?'}: RUN ${line} exited ${r.code}\n${r.stdout}\n${r.stderr}`);
}

let work: string;
let app: string;

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), 'sluice-image-'));
  // The image's user must be able to read the install (mkdtemp makes the folder private).
  chmodSync(work, 0o755);
  const built = await buildStages(df, {
    context: ROOT,
    out: join(work, 'stages'),
    run: runStep,
    skipRunIn: (stage) => stage === final,
  });
  app = built.at(-1)!.dir;
  mkdirSync(join(work, 'home'));
  // The image's /usr/local/bin/node is this test's Node 24, put beside the install so that the
  // image's user can run it wherever the repository is checked out (a private folder in CI).
  mkdirSync(join(work, 'bin'));
  const node = realpathSync(process.execPath);
  try {
    linkSync(node, join(work, 'bin', 'node'));
  } catch {
    copyFileSync(node, join(work, 'bin', 'node'));
    chmodSync(join(work, 'bin', 'node'), 0o755);
  }
}, 240_000);

afterAll(() => {
  if (work !== undefined) rmSync(work, { recursive: true, force: true });
});

/** How the image starts a process: the image's ENV and user, cwd = WORKDIR, nothing of the repository's. */
function imageSpawnOptions(extraEnv: Record<string, string> = {}): SpawnOptions {
  const [uid, gid] = user.split(':').map(Number);
  return {
    cwd: app,
    env: { PATH: `${join(work, 'bin')}:/usr/bin:/bin`, HOME: join(work, 'home'), ...finalEnv, ...extraEnv },
    // As root (CI), run as the image's uid:gid; otherwise this user is already not root.
    ...(process.getuid?.() === 0 ? { uid, gid: gid ?? uid } : {}),
  };
}

/** `docker run IMAGE args...`: the ENTRYPOINT, whose `node` is found on the PATH as in the image. */
function entrypointCommand(args: readonly string[]): [string, string[]] {
  const argv = [...initHere, 'node', ...nodeArgs, ...args];
  return [argv[0]!, argv.slice(1)];
}

function runImage(args: readonly string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const [command, argv] = entrypointCommand(args);
  return run(command, argv, imageSpawnOptions(), 15_000);
}

/** The HEALTHCHECK's command, as Docker runs it inside the container: its exit code. */
async function runHealthcheck(env: Record<string, string>): Promise<number | null> {
  const [command, ...args] = healthcheck;
  return (await run(command!, args, imageSpawnOptions(env), 10_000)).code;
}

describe('the image, built as the Dockerfile builds it, without Docker', () => {
  it('copies into the final stage exactly what sluice reads at run time', () => {
    const copies = final.instructions
      .filter((i) => i.keyword === 'COPY')
      .map(parseCopy)
      .map((c) => `${c.from === undefined ? '' : `${c.from}:`}${c.sources.join(' ')} -> ${c.dest}`);
    expect(copies).toEqual(FINAL_COPIES);

    expect(readdirSync(app).sort()).toEqual(['config', 'dist', 'node_modules', 'package.json', 'src']);
    expect(readdirSync(join(app, 'src')).sort()).toEqual(['control', 'proto']);
    expect(readdirSync(join(app, 'src/control'))).toEqual(['status-page']);
    const page = ['index.html', 'app.js', 'style.css'].map((f) => `src/control/status-page/${f}`);
    for (const file of ['dist/main.js', 'config/sluice.yaml', 'src/proto/sluice/control/v1/control.proto', ...page, 'node_modules/@grpc/grpc-js/package.json']) {
      expect(existsSync(join(app, file)), file).toBe(true);
    }
    // Compiled, not the .ts sources; production dependencies only; pruned of what never loads.
    expect(readdirSync(join(app, 'dist'), { recursive: true }).filter((f) => String(f).endsWith('.ts'))).toEqual([]);
    const devOnly = Object.entries(lock.packages).filter(([path, p]) => path !== '' && p.dev === true).map(([path]) => path);
    expect(devOnly).toContain('node_modules/typescript');
    expect(devOnly.filter((path) => existsSync(join(app, path)))).toEqual([]);
    const pruned = readdirSync(join(app, 'node_modules'), { recursive: true }).map(String).filter((f) => /\.(d\.[mc]?ts|map)$/.test(f));
    expect(pruned).toEqual([]);
  });

  it('keeps the build context to what the Dockerfile copies (.dockerignore)', () => {
    const ignored = dockerignore(readFileSync(join(ROOT, '.dockerignore'), 'utf8'));
    for (const path of ['node_modules', 'node_modules/pino/package.json', 'dist/main.js', 'test/unit', 'bench', 'deploy', '.git', '.ci/run', 'README.md']) {
      expect(ignored(path), path).toBe(true);
    }
    for (const path of ['package.json', 'package-lock.json', 'tsconfig.build.json', 'src/main.ts', 'src/proto/sluice/control/v1/control.proto', 'config/sluice.yaml']) {
      expect(ignored(path), path).toBe(false);
    }
  });

  it('pins Node 24 by exact version, runs as a numeric non-root user under tini, and is labelled', () => {
    // Every stage on the one base, an exact release (a digest may follow), the major the tests run on.
    const bases = new Set(df.stages.map((s) => s.base));
    expect(bases.size).toBe(1);
    const base = [...bases][0]!;
    const m = /^node:(\d+)\.\d+\.\d+-[a-z]+-slim(@sha256:[0-9a-f]{64})?$/.exec(base);
    expect(m, base).not.toBeNull();
    expect(m![1]).toBe(process.versions.node.split('.')[0]);
    expect(pkg.engines.node).toBe(`>=${m![1]}`);

    // Numeric, so Kubernetes' runAsNonRoot can check it; not root.
    expect(user).toMatch(/^\d+(:\d+)?$/);
    expect(Number(user.split(':')[0])).toBeGreaterThan(0);
    expect(finalEnv.NODE_ENV).toBe('production');

    // tini reaps what git leaves behind; the image installs it and what `sluice control` runs.
    expect(init).toEqual(['/usr/bin/tini', '-s', '--']);
    const installed = final.instructions
      .filter((i) => i.keyword === 'RUN')
      .flatMap(runCommands)
      .filter((c) => c.startsWith('apt-get install'))
      .flatMap((c) => c.split(/\s+/));
    for (const p of ['tini', 'git', 'openssh-client', 'ca-certificates']) expect(installed, p).toContain(p);
    expect(execForm(only(final, 'CMD').args, 0)).toEqual(['proxy']);

    const labels = Object.fromEntries(
      Object.entries(Object.assign({}, ...final.instructions.filter((i) => i.keyword === 'LABEL').map((i) => parsePairs(i.args))) as Record<string, string>).map(
        ([k, v]) => [k, substitute(v, stageArgs(final))],
      ),
    );
    const oci = (k: string): string | undefined => labels[`org.opencontainers.image.${k}`];
    expect(oci('title')).toBe('sluice');
    expect(oci('description')).toBeTruthy();
    expect(oci('source')).toMatch(/^https:\/\//);
    expect(oci('licenses')).toBe(pkg.license);
    // The default a build without --build-arg VERSION gets: the release package.json names.
    expect(oci('version')).toBe(pkg.version);
    expect(oci('revision')).toBeTruthy();
  });

  it('prints its version and the control help from the install alone', async () => {
    // --version loads every command's modules, grpc-js and the .proto among them.
    const version = await runImage(['--version']);
    expect(version.stderr).toBe('');
    expect(version.stdout.trim()).toBe(pkg.version);
    const control = await runImage(['control', '--help']);
    expect(control.code).toBe(0);
    expect(control.stdout).toContain('--repo URL|PATH');

    // Packages resolve inside the install, and a devDependency does not resolve at all: nothing
    // of the repository's node_modules is within reach.
    const probe = await run(
      'node',
      ['--input-type=module', '-e', "const r=(n)=>{try{return import.meta.resolve(n)}catch{return null}};console.log(JSON.stringify({pino:r('pino'),typescript:r('typescript'),vitest:r('vitest')}))"],
      imageSpawnOptions(),
      10_000,
    );
    const resolved = JSON.parse(probe.stdout) as Record<string, string | null>;
    expect(resolved.pino).toContain(`${app}/node_modules/pino/`);
    expect(resolved.typescript).toBeNull();
    expect(resolved.vitest).toBeNull();

    // The compiled config service finds the status page's files where the image put them.
    const page = await run(
      'node',
      ['--input-type=module', '-e', "const m=await import('./dist/control/status-page.js');const fs=await import('node:fs');console.log(JSON.stringify(fs.readdirSync(m.STATUS_PAGE_DIR).sort()))"],
      imageSpawnOptions(),
      10_000,
    );
    expect(JSON.parse(page.stdout)).toEqual(['app.js', 'index.html', 'style.css']);
  });

  describe('sluice proxy from the install', () => {
    const track = closeAfterEach();
    const children: ChildProcess[] = [];
    afterEach(() => {
      for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    });

    it(`answers /readyz, passes the HEALTHCHECK, and drains on SIGTERM (${initHere.length > 0 ? 'under tini, as in the image' : 'node alone: no tini on this machine'})`, async () => {
      let release: () => void = () => {};
      const gate = new Promise<void>((resolve) => (release = resolve));
      const upstreamApp = track(await startScriptedUpstream([{ after: gate, then: { status: 200, body: 'finished' } }]));

      const [command, argv] = entrypointCommand(['proxy', '--outbound-port', '0', '--inbound-port', '0', '--admin-port', '0', '--app-port', String(upstreamApp.port)]);
      const child = spawn(command, argv, { ...imageSpawnOptions(), stdio: ['ignore', 'pipe', 'pipe'] });
      children.push(child);
      let out = '';
      child.stderr!.on('data', (c: Buffer) => (out += c.toString()));
      const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
      const started = await new Promise<Record<string, { port: number } | undefined>>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`sluice proxy did not start in 15 s:\n${out}`)), 15_000);
        child.stdout!.on('data', (c: Buffer) => {
          out += c.toString();
          const line = out.split('\n').find((l) => l.includes('"sluice proxy started"'));
          if (line === undefined) return;
          clearTimeout(timer);
          resolve(JSON.parse(line) as Record<string, { port: number } | undefined>);
        });
        void exited.then((code) => reject(new Error(`sluice proxy exited with ${code} before starting:\n${out}`)));
      });
      const adminPort = started.admin!.port;
      const inboundPort = started.inbound!.port;

      // Ready: policy loaded, listeners up, and the app's port accepts connections.
      const ready = await send({ port: adminPort, path: '/readyz' });
      expect(ready.status, ready.text).toBe(200);
      expect(await runHealthcheck({ SLUICE_ADMIN_PORT: String(adminPort) })).toBe(0);

      const inFlight = send({ port: inboundPort, path: '/slow', timeoutMs: 15_000 });
      await upstreamApp.waitForRequest(1);
      child.kill('SIGTERM');
      await eventually('readiness to fail while draining', async () => (await send({ port: adminPort, path: '/readyz' })).status === 503);
      // The request in flight holds the drain open.
      expect(child.exitCode).toBeNull();
      release();
      const r = await inFlight;
      expect(r.status).toBe(200);
      expect(r.text).toBe('finished');
      expect(r.bodyError).toBeUndefined();

      expect(await exited, out).toBe(0);
      // node's own handler saw the signal (through tini), rather than a default action.
      expect(out).toMatch(/"reason":"SIGTERM".*"shutting down"/);
      expect(await runHealthcheck({ SLUICE_HEALTHCHECK_URL: `http://127.0.0.1:${adminPort}/healthz` })).toBe(1);
    }, 30_000);
  });
});
