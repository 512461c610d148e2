// The fleet status page, served by the config service from static files (no build step).
// Placeholder signature so the server can route to it; the status-page work fills it in.
import type http from 'node:http';

/** Serves the page and its assets; false when `pathname` is not one of them. */
export function serveStatusPage(_req: http.IncomingMessage, _res: http.ServerResponse, _pathname: string): boolean {
  return false;
}
