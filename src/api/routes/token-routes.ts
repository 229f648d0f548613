import { Type, type Static } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import type { TokenService } from '../../service/token-service.js';
import { NAME_PATTERN } from '../../core/ids.js';
import { withErrors } from '../schemas.js';

const TokenInfoSchema = Type.Object({ id: Type.String(), name: Type.String(), createdAt: Type.String() });
const NewTokenSchema = Type.Object({ id: Type.String(), name: Type.String(), createdAt: Type.String(), token: Type.String() });
const CreateTokenBody = Type.Object({ name: Type.String({ pattern: NAME_PATTERN, maxLength: 63 }) }, { additionalProperties: false });

export function registerTokenRoutes(app: FastifyInstance, tokens: TokenService): void {
  app.get('/tokens', { schema: { tags: ['tokens'], response: withErrors({ 200: Type.Object({ tokens: Type.Array(TokenInfoSchema) }) }, 401) } }, async () => ({
    tokens: tokens.list(),
  }));

  app.post<{ Body: Static<typeof CreateTokenBody> }>(
    '/tokens',
    {
      schema: {
        tags: ['tokens'],
        description: 'Creates an API token. The token itself is in this response only; the server keeps a hash.',
        body: CreateTokenBody,
        response: withErrors({ 201: NewTokenSchema }, 401, 409),
      },
    },
    async (req, reply) => reply.status(201).send(await tokens.create(req.body.name)),
  );

  app.delete<{ Params: { id: string } }>(
    '/tokens/:id',
    { schema: { tags: ['tokens'], params: Type.Object({ id: Type.String({ minLength: 1, maxLength: 64 }) }), response: withErrors({ 204: Type.Null() }, 401, 404) } },
    async (req, reply) => {
      await tokens.revoke(req.params.id);
      return reply.status(204).send();
    },
  );
}
