import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { IncomingHttpHeaders } from 'node:http';
import { PTY_PROTOCOL, tokenFromProtocols } from '../core/socket-protocols.js';
import { isGatewayPath } from '../e2b/gateway.js';
import { PrismError } from '../core/errors.js';
import type { TokenIdentity, TokenService } from '../service/token-service.js';

declare module 'fastify' {
  interface FastifyRequest {
    /** The API token the request came with (set by the auth hook; absent with `--auth none`). */
    apiToken?: TokenIdentity;
  }
}

/**
 * For what only admin tokens may do (tokens, node removal, the join token). With `--auth none` there
 * are no tokens and everything is allowed, as everything else is.
 */
export function requireAdmin(req: FastifyRequest, what: string): void {
  if (req.apiToken && !req.apiToken.admin) {
    throw new PrismError('PERMISSION_DENIED', `${what} needs an admin token (an admin makes one with prismctl token create NAME --admin)`);
  }
}

/** Routes anyone may call: liveness only. */
const OPEN = new Set(['/api/v1/health']);

/**
 * The bearer token of a request: the `Authorization` header, or on a WebSocket upgrade (where a browser
 * cannot set headers) the `prism.bearer.<base64url>` subprotocol (src/sdk/socket.ts). Never the URL.
 */
export function bearerToken(headers: IncomingHttpHeaders): string {
  const header = headers.authorization ?? '';
  if (header.startsWith('Bearer ')) return header.slice(7).trim();
  if (header === '' && headers.upgrade?.toLowerCase() === 'websocket') return tokenFromProtocols(headers['sec-websocket-protocol']) ?? '';
  return '';
}

/** The subprotocol the server answers a WebSocket with: the terminal's when offered (a browser must get one back). */
export function chooseProtocol(offered: Set<string>): string | false {
  return offered.has(PTY_PROTOCOL) ? PTY_PROTOCOL : false;
}

/**
 * Every request but the open ones must carry `Authorization: Bearer <token>` (or, on a
 * WebSocket, the token subprotocol: see {@link bearerToken}). A missing, malformed,
 * unknown or revoked token gets the same 401 (no hint which), checked before the body is read.
 */
export function registerAuth(app: FastifyInstance, tokens: TokenService, alsoOpen: (path: string) => boolean = () => false): void {
  app.decorateRequest('apiToken', undefined);
  app.addHook('onRequest', async (req, reply) => {
    const path = req.url.split('?')[0]!;
    if (OPEN.has(path) || alsoOpen(path)) return;
    // The E2B gateway checks its own credentials (an API token as X-API-KEY, a sandbox's access token).
    if (isGatewayPath(req.url)) return;
    const bearer = bearerToken(req.headers);
    const who = bearer ? tokens.identify(bearer) : undefined;
    if (who) {
      req.apiToken = who;
      return;
    }
    return reply
      .status(401)
      .header('www-authenticate', 'Bearer realm="prism"')
      .send({ error: { code: 'UNAUTHENTICATED', message: 'missing or invalid API token (send Authorization: Bearer <token>)' } });
  });
}
