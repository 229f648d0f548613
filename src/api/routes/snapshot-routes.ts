import { Type, type Static } from '@sinclair/typebox';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { ForkBody, ForkSchema, IdParams, SnapshotBody, SnapshotSchema, withErrors } from '../schemas.js';
import type { ApiServices } from '../server.js';

type Id = { Params: { id: string } };

/**
 * Snapshots (a sandbox's files as an image on its node) and forks (new sandboxes from a snapshot of a
 * running one). Taking one runs on the sandbox's node; deleting one on the snapshot's node.
 */
export function registerSnapshotRoutes(app: FastifyInstance, svc: ApiServices): void {
  app.post<Id & { Body: Static<typeof SnapshotBody> }>(
    '/sandboxes/:id/snapshots',
    { config: { owner: true }, schema: { tags: ['snapshots'], params: IdParams, body: SnapshotBody, response: withErrors({ 201: SnapshotSchema }, 404, 412, 501) } },
    async (req, reply) => reply.status(201).send(await svc.snapshots.create(req.params.id, req.body ?? {})),
  );

  app.post<Id & { Body: Static<typeof ForkBody> }>(
    '/sandboxes/:id/fork',
    { config: { owner: true }, schema: { tags: ['snapshots'], params: IdParams, body: ForkBody, response: withErrors({ 201: ForkSchema }, 404, 412, 429, 501, 503) } },
    async (req, reply) => reply.status(201).send(await svc.snapshots.fork(req.params.id, req.body?.count ?? 1)),
  );

  app.get('/snapshots', { schema: { tags: ['snapshots'], response: withErrors({ 200: Type.Object({ snapshots: Type.Array(SnapshotSchema) }) }) } }, async () => ({
    snapshots: await svc.snapshots.list(),
  }));

  app.get<Id>('/snapshots/:id', { schema: { tags: ['snapshots'], params: IdParams, response: withErrors({ 200: SnapshotSchema }, 404) } }, (req) =>
    svc.snapshots.get(req.params.id),
  );

  const snapshotNode = async (req: FastifyRequest) => (await svc.snapshots.get((req.params as { id: string }).id)).node;
  app.delete<Id>(
    '/snapshots/:id',
    { config: { nodeOwner: snapshotNode }, schema: { tags: ['snapshots'], params: IdParams, response: withErrors({ 204: Type.Null() }, 404, 412) } },
    async (req, reply) => {
      await svc.snapshots.remove(req.params.id);
      return reply.status(204).send();
    },
  );
}
