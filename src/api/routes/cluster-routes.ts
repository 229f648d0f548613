import { Type, type Static } from '@sinclair/typebox';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { PrismError } from '../../core/errors.js';
import { NAME_PATTERN } from '../../core/ids.js';
import type { ClusterJoin } from '../../cluster/join-service.js';
import { bearerToken, requireAdmin } from '../auth.js';
import { withErrors } from '../schemas.js';

/** The join API's prefix: its routes check the join token themselves, not an API token (auth.ts). */
export const JOIN_PATH = '/api/v1/cluster/join';

export function isJoinPath(path: string): boolean {
  return path === JOIN_PATH || path.startsWith(`${JOIN_PATH}/`);
}

const Url = Type.String({ pattern: '^https?://[^/\\s]+$', maxLength: 256 });
const JoinBody = Type.Object({ name: Type.String({ pattern: NAME_PATTERN, maxLength: 63 }), peerUrl: Url, clientUrl: Url }, { additionalProperties: false });
const JoinAnswerSchema = Type.Object({
  role: Type.Union([Type.Literal('voter'), Type.Literal('client')]),
  memberId: Type.Optional(Type.String()),
  initialCluster: Type.Optional(Type.String()),
  clusterToken: Type.String(),
  endpoints: Type.Array(Type.String()),
});
const MemberSchema = Type.Object({
  id: Type.String(),
  name: Type.String(),
  peerUrls: Type.Array(Type.String()),
  clientUrls: Type.Array(Type.String()),
  learner: Type.Boolean(),
  healthy: Type.Boolean(),
});
const MemberParams = Type.Object({ id: Type.String({ pattern: '^[0-9]{1,20}$' }) });

function noCluster(): never {
  throw new PrismError('FAILED_PRECONDITION', 'this node runs alone on SQLite: start the first node with --cluster-init (or --store etcd://...) for others to join');
}

/** `prismd --join` and `prismctl cluster ...` (docs/cluster.md). */
export function registerClusterRoutes(app: FastifyInstance, cluster: ClusterJoin | undefined): void {
  // The join routes answer 401 to a wrong join token before anything else (the body, the route's
  // state), as API routes do to a wrong API token; a node alone on SQLite has no join token at all.
  const joinAuth = async (req: FastifyRequest): Promise<void> => {
    if (!cluster) throw new PrismError('UNAUTHENTICATED', 'no join token is valid here: this node runs alone on SQLite (start the first node with --cluster-init for others to join)');
    await cluster.verifyJoinToken(bearerToken(req.headers));
  };
  app.get('/cluster/join-token', { schema: { tags: ['cluster'], description: 'The token a new node presents with prismd --join (admin tokens only).', response: withErrors({ 200: Type.Object({ token: Type.String() }) }, 401, 403, 412) } }, async (req) => {
    requireAdmin(req, 'reading the join token');
    return { token: await (cluster ?? noCluster()).joinToken() };
  });

  app.post('/cluster/join-token', { schema: { tags: ['cluster'], description: 'Replaces the join token; the old one stops working at once (admin tokens only).', response: withErrors({ 200: Type.Object({ token: Type.String() }) }, 401, 403, 412) } }, async (req) => {
    requireAdmin(req, 'replacing the join token');
    return { token: await (cluster ?? noCluster()).rotateJoinToken() };
  });

  app.get('/cluster/members', { schema: { tags: ['cluster'], description: "The cluster's etcd members (managed by prismd) and their health.", response: withErrors({ 200: Type.Object({ members: Type.Array(MemberSchema) }) }, 401) } }, async () => ({
    members: cluster ? await cluster.list() : [],
  }));

  app.post<{ Body: Static<typeof JoinBody> }>(
    '/cluster/join',
    { onRequest: joinAuth, schema: { tags: ['cluster'], description: 'A node asks to join (Authorization: Bearer <join token>).', body: JoinBody, response: withErrors({ 200: JoinAnswerSchema }, 401, 409, 412, 503) } },
    async (req) => (cluster ?? noCluster()).join(bearerToken(req.headers), req.body),
  );

  app.get(
    '/cluster/join',
    { onRequest: joinAuth, schema: { tags: ['cluster'], description: 'Which cluster this is, for a node that joined it before (join token).', response: withErrors({ 200: Type.Object({ clusterToken: Type.String() }) }, 401, 412) } },
    async (req) => (cluster ?? noCluster()).identity(bearerToken(req.headers)),
  );

  app.post<{ Params: Static<typeof MemberParams> }>(
    '/cluster/join/:id/promote',
    { onRequest: joinAuth, schema: { tags: ['cluster'], description: 'The joining member caught up: make it vote (join token).', params: MemberParams, response: withErrors({ 204: Type.Null() }, 401, 404, 412, 503) } },
    async (req, reply) => {
      await (cluster ?? noCluster()).promote(bearerToken(req.headers), req.params.id);
      return reply.status(204).send();
    },
  );

  app.delete<{ Params: Static<typeof MemberParams> }>(
    '/cluster/join/:id',
    { onRequest: joinAuth, schema: { tags: ['cluster'], description: 'Undo a join that failed: remove the learner (join token).', params: MemberParams, response: withErrors({ 204: Type.Null() }, 401, 412, 503) } },
    async (req, reply) => {
      await (cluster ?? noCluster()).abort(bearerToken(req.headers), req.params.id);
      return reply.status(204).send();
    },
  );
}
