// The fleet status page, served by the config service from static files: plain HTML, CSS and an
// ES module, no build step and nothing fetched from elsewhere. The page reads the same API as
// `sluice status` (/v1/fleet, /v1/traces) with the same bearer token, so serving it reveals
// nothing the API does not; the files themselves hold no fleet data and need no token.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type http from 'node:http';
import { fileURLToPath } from 'node:url';

/** Resolved from the repository root, as the proto is, so src/ and dist/ find the same folder. */
export const STATUS_PAGE_DIR = fileURLToPath(new URL('../../src/control/status-page/', import.meta.url));

/**
 * Request path -> file. A fixed map, never a filesystem lookup of the path, so no request can
 * name a file outside it (`/status/../../etc/passwd` is simply not a key).
 */
const ROUTES: Readonly<Record<string, string>> = {
  '/': 'index.html',
  '/status': 'index.html',
  '/status/': 'index.html',
  '/status/app.js': 'app.js',
  '/status/style.css': 'style.css',
};

const TYPES: Readonly<Record<string, string>> = {
  'index.html': 'text/html; charset=utf-8',
  'app.js': 'text/javascript; charset=utf-8',
  'style.css': 'text/css; charset=utf-8',
};

/**
 * Only this origin's files and API; no inline script or style, so fleet data that slipped into
 * markup could not run. `data:` images: the empty favicon, which spares a 404 per load.
 */
const CSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

interface Asset {
  readonly body: Buffer;
  readonly etag: string;
}

/** Read on first use and kept: a sidecar that imports this module never touches the files. */
const cache = new Map<string, Asset>();

function asset(file: string): Asset {
  let a = cache.get(file);
  if (a === undefined) {
    const body = readFileSync(`${STATUS_PAGE_DIR}${file}`);
    a = { body, etag: `"${createHash('sha256').update(body).digest('base64url').slice(0, 22)}"` };
    cache.set(file, a);
  }
  return a;
}

/** Serves the page and its assets; false when `pathname` is not one of them. */
export function serveStatusPage(req: http.IncomingMessage, res: http.ServerResponse, pathname: string): boolean {
  const file = Object.hasOwn(ROUTES, pathname) ? ROUTES[pathname] : undefined;
  if (file === undefined) return false;
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain; charset=utf-8' });
    res.end('the status page answers GET and HEAD only\n');
    return true;
  }
  let a: Asset;
  try {
    a = asset(file);
  } catch (err) {
    // An install without the page's files (an image that did not copy them) says so, and the API
    // beside it keeps working.
    res.writeHead(500, { 'content-type': 'text/plain; charset=utf-8' });
    res.end(`status page file ${file} is missing from ${STATUS_PAGE_DIR}: ${(err as Error).message}\n`);
    return true;
  }
  const headers = {
    'content-type': TYPES[file] ?? 'application/octet-stream',
    // Revalidated on every load (cheap: 304 by ETag), so an upgraded service never runs old JS.
    'cache-control': 'no-cache',
    etag: a.etag,
    'content-security-policy': CSP,
    'x-content-type-options': 'nosniff',
    'referrer-policy': 'no-referrer',
  };
  if (req.headers['if-none-match'] === a.etag) {
    res.writeHead(304, headers);
    res.end();
    return true;
  }
  res.writeHead(200, { ...headers, 'content-length': a.body.length });
  res.end(req.method === 'HEAD' ? undefined : a.body);
  return true;
}
