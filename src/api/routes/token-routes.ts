import { Type, type Static } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import type { TokenService } from '../../service/token-service.js';
import { NAME_PATTERN } from '../../core/ids.js';
import { requireAdmin } from '../auth.js';
import { withErrors } from '../schemas.js';

const TokenInfoSchema = Type.Object({ id: Type.String(), name: Type.String(), createdAt: Type.String(), admin: Type.Boolean() });
const NewTokenSchema = Type.Object({ id: Type.String(), name: Type.String(), createdAt: Type.String(), admin: Type.Boolean(), token: Type.String() });
const CreateTokenBody = Type.Object(
  { name: Type.String({ pattern: NAME_PATTERN, maxLength: 63 }), admin: Type.Optional(Type.Boolean({ description: 'may also manage tokens, remove nodes and read the join token (default false)' })) },
  { additionalProperties: false },
);

/** Token management is for admin tokens only (auth.ts requireAdmin). */
export function registerTokenRoutes(app: FastifyInstance, tokens: TokenService): void {
  app.get('/tokens', { schema: { tags: ['tokens'], response: withErrors({ 200: Type.Object({ tokens: Type.Array(TokenInfoSchema) }) }, 401, 403) } }, async (req) => {
    requireAdmin(req, 'listing tokens');
    return { tokens: tokens.list() };
  });

  app.post<{ Body: Static<typeof CreateTokenBody> }>(
    '/tokens',
    {
      schema: {
        tags: ['tokens'],
        description: 'Creates an API token. The token itself is in this response only; the server keeps a hash.',
        body: CreateTokenBody,
        response: withErrors({ 201: NewTokenSchema }, 401, 403, 409),
      },
    },
    async (req, reply) => {
      requireAdmin(req, 'creating tokens');
      return reply.status(201).send(await tokens.create(req.body.name, { admin: req.body.admin === true }));
    },
  );

  app.delete<{ Params: { id: string } }>(
    '/tokens/:id',
    { schema: { tags: ['tokens'], params: Type.Object({ id: Type.String({ minLength: 1, maxLength: 64 }) }), response: withErrors({ 204: Type.Null() }, 401, 403, 404) } },
    async (req, reply) => {
      requireAdmin(req, 'revoking tokens');
      await tokens.revoke(req.params.id);
      return reply.status(204).send();
    },
  );
}
