import type { FastifyInstance } from 'fastify';
import { PrismError } from '../../core/errors.js';
import { FORWARDED_HEADER } from '../owner-proxy.js';
import { withErrors } from '../schemas.js';
import { Type } from '@sinclair/typebox';
import type { ApiServices } from '../server.js';
import { passBodiesThrough, pathAfter, proxyToPort } from '../port-proxy.js';

type PortRoute = { Params: { id: string; port: string; '*'?: string } };

const PortParams = Type.Object({
  id: Type.String({ minLength: 1, maxLength: 256 }),
  port: Type.String({ pattern: '^[0-9]{1,5}$' }),
  '*': Type.Optional(Type.String()),
});

/** Headers that are prismd's business and must never reach code in a sandbox. */
const STRIPPED = ['authorization', 'host', FORWARDED_HEADER];

/**
 * `/sandboxes/:id/ports/:port/<path>`: HTTP to a port the sandbox exposed (`ports` on create), sent by
 * the host to the sandbox's address and streamed back both ways. Authenticated like every route; the
 * caller's token is not passed on. Runs on the owning node (`owner`), which alone reaches the sandbox.
 */
export async function registerPortRoutes(app: FastifyInstance, svc: ApiServices): Promise<void> {
  await app.register(async (scope) => {
    passBodiesThrough(scope);
    const handler = async (req: import('fastify').FastifyRequest<PortRoute>, reply: import('fastify').FastifyReply) => {
      const port = Number(req.params.port);
      if (!(port >= 1 && port <= 65535)) throw new PrismError('INVALID_ARGUMENT', `port must be 1-65535, got ${req.params.port}`);
      const target = await svc.sandboxes.portTarget(req.params.id, port);
      return proxyToPort(reply, target, pathAfter(req.url, /\/api\/v1\/sandboxes\/[^/?]+\/ports\/[0-9]+/), STRIPPED, (r) => {
        void r.status(503).send({ error: { code: 'UNAVAILABLE', message: `nothing answered on port ${port} of sandbox '${req.params.id}'` } });
      });
    };
    const opts = {
      config: { owner: true },
      schema: {
        tags: ['sandboxes'],
        description: 'HTTP proxied to a port the sandbox exposed (`ports` on create); any method, streamed.',
        params: PortParams,
        response: withErrors({}, 404, 412, 503),
      },
    };
    // The usual methods (HEAD comes with GET); not TRACE/CONNECT and the like.
    for (const url of ['/sandboxes/:id/ports/:port', '/sandboxes/:id/ports/:port/*']) {
      scope.route<PortRoute>({ method: ['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'], url, ...opts, handler });
    }
  });
}
