import type { IncomingMessage } from 'node:http';
import { ENVD_PREFIX } from './paths.js';

/**
 * E2B's per-sandbox hosts, for users with wildcard DNS: `<port>-<sandbox id>.<domain>`. envd (49983)
 * and the code interpreter (49999) are served as under E2B_SANDBOX_URL; any other port reaches that
 * port of the sandbox (`getHost(port)`). The rewrite happens before routing, naming the sandbox and port
 * in the headers the gateway reads; a Host that is not of this form is left alone.
 */

const HOST = /^([0-9]{1,5})-(sb-[0-9a-f]{12})\.([^/]+)$/i;

export const PORTS_PREFIX = '/e2b/ports';

/** The rewritten URL, or the original one. `domain`: when set, only hosts under it are sandbox hosts. */
export function rewriteSandboxHost(req: IncomingMessage, domain: string | undefined): string {
  const url = req.url ?? '/';
  // Already rewritten (a request another node forwarded here keeps its Host): leave it.
  if (url.startsWith('/e2b/')) return url;
  const host = req.headers.host;
  const m = host ? HOST.exec(host) : null;
  if (!m) return url;
  const [, port, id, rest] = m as unknown as [string, string, string, string];
  if (domain && rest.toLowerCase() !== domain.toLowerCase() && rest.split(':')[0]!.toLowerCase() !== domain.split(':')[0]!.toLowerCase()) return url;
  req.headers['e2b-sandbox-id'] = id.toLowerCase();
  req.headers['e2b-sandbox-port'] = port;
  if (port === '49983' || port === '49999') return `${ENVD_PREFIX}${url}`;
  return `${PORTS_PREFIX}/${port}${url}`;
}
