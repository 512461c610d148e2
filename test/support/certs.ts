// A throwaway certificate authority for TLS tests: a CA, a server certificate for 127.0.0.1 and
// localhost, and a client certificate, made with the openssl CLI in a temporary folder.
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const exec = promisify(execFile);

export interface TestCerts {
  readonly ca: Buffer;
  readonly serverCert: Buffer;
  readonly serverKey: Buffer;
  readonly clientCert: Buffer;
  readonly clientKey: Buffer;
  /** A CA nobody's certificates come from. */
  readonly otherCa: Buffer;
  close(): Promise<void>;
}

export async function makeCerts(): Promise<TestCerts> {
  const dir = await mkdtemp(join(tmpdir(), 'sluice-certs-'));
  const f = (name: string): string => join(dir, name);
  const ssl = (...args: string[]) => exec('openssl', args, { cwd: dir });
  const ca = async (name: string) => {
    await ssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', `/CN=${name}`, '-keyout', f(`${name}.key`), '-out', f(`${name}.crt`));
  };
  await ca('ca');
  await ca('other-ca');
  const leaf = async (name: string, ext: string) => {
    await ssl('req', '-newkey', 'rsa:2048', '-nodes', '-subj', `/CN=${name}`, '-keyout', f(`${name}.key`), '-out', f(`${name}.csr`));
    await writeFile(f(`${name}.ext`), ext);
    await ssl('x509', '-req', '-in', f(`${name}.csr`), '-CA', f('ca.crt'), '-CAkey', f('ca.key'), '-CAcreateserial', '-days', '2', '-extfile', f(`${name}.ext`), '-out', f(`${name}.crt`));
  };
  await leaf('server', 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n');
  await leaf('client', 'extendedKeyUsage=clientAuth\n');
  const read = (name: string) => readFile(f(name));
  return {
    ca: await read('ca.crt'),
    serverCert: await read('server.crt'),
    serverKey: await read('server.key'),
    clientCert: await read('client.crt'),
    clientKey: await read('client.key'),
    otherCa: await read('other-ca.crt'),
    close: () => rm(dir, { recursive: true, force: true }),
  };
}
