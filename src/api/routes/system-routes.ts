import { requireAdmin } from '../auth.js';
import { Type } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import { ClusterInfoSchema, HealthSchema, IdParams, NodeSchema, withErrors } from '../schemas.js';
import type { ApiServices } from '../server.js';

export function registerSystemRoutes(app: FastifyInstance, svc: ApiServices): void {
  app.get('/health', { schema: { tags: ['system'], response: { 200: HealthSchema } } }, async () => ({
    status: 'ok',
    node: svc.nodeId,
    version: svc.version,
  }));

  app.get('/cluster/info', { schema: { tags: ['system'], response: withErrors({ 200: ClusterInfoSchema }) } }, () =>
    svc.nodes.clusterInfo(),
  );

  app.get('/nodes', { schema: { tags: ['nodes'], response: withErrors({ 200: Type.Object({ nodes: Type.Array(NodeSchema) }) }) } }, async () => ({
    nodes: await svc.nodes.list(),
  }));

  app.get<{ Params: { id: string } }>(
    '/nodes/:id',
    { schema: { tags: ['nodes'], params: IdParams, response: withErrors({ 200: NodeSchema }, 404) } },
    (req) => svc.nodes.get(req.params.id),
  );

  // Only a dead node without sandboxes can go: an alive one would publish itself again at once.
  app.delete<{ Params: { id: string } }>(
    '/nodes/:id',
    { schema: { tags: ['nodes'], params: IdParams, response: withErrors({ 204: Type.Null() }, 404, 412) } },
    async (req, reply) => {
      requireAdmin(req, 'removing a node');
      await svc.nodes.remove(req.params.id, async (n) => svc.cluster?.removeMemberNamed(n.name));
      return reply.status(204).send();
    },
  );

  app.get('/openapi.json', { schema: { hide: true } }, () => app.swagger());
}
