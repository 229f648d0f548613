import type { FastifyInstance } from 'fastify';
import { isGatewayPath } from '../e2b/gateway.js';
import type { TokenService } from '../service/token-service.js';

/** Routes anyone may call: liveness only. */
const OPEN = new Set(['/api/v1/health']);

/**
 * Every request but the open ones must carry `Authorization: Bearer <token>`. A missing, malformed,
 * unknown or revoked token gets the same 401 (no hint which), checked before the body is read.
 */
export function registerAuth(app: FastifyInstance, tokens: TokenService, alsoOpen: string[] = []): void {
  const open = new Set([...OPEN, ...alsoOpen]);
  app.addHook('onRequest', async (req, reply) => {
    if (open.has(req.url.split('?')[0]!)) return;
    // The E2B gateway checks its own credentials (an API token as X-API-KEY, a sandbox's access token).
    if (isGatewayPath(req.url)) return;
    const header = req.headers.authorization ?? '';
    const bearer = header.startsWith('Bearer ') ? header.slice(7).trim() : '';
    if (bearer && tokens.verify(bearer)) return;
    return reply
      .status(401)
      .header('www-authenticate', 'Bearer realm="prism"')
      .send({ error: { code: 'UNAUTHENTICATED', message: 'missing or invalid API token (send Authorization: Bearer <token>)' } });
  });
}
