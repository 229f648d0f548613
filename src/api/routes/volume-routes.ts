import { Type, type Static } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import { CreateVolumeBody, VolumeParams, VolumeSchema, withErrors } from '../schemas.js';
import type { ApiServices } from '../server.js';

type Name = { Params: { name: string } };

/** Volumes: persistent file systems that sandboxes mount (docs/api.md). */
export function registerVolumeRoutes(app: FastifyInstance, svc: ApiServices): void {
  app.post<{ Body: Static<typeof CreateVolumeBody> }>(
    '/volumes',
    {
      // A create naming another node runs there (a node that is not alive: the service answers here).
      config: { nodeOwner: async (req) => {
        const node = (req.body as { node?: string } | undefined)?.node;
        return node === undefined ? undefined : (await svc.volumes.nodeNamed(node)).id;
      } },
      schema: {
        tags: ['volumes'],
        description: 'Creates a volume on the node it names (`node`, an id or name), else on the node that serves the request; sandboxes that mount it run on that node.',
        body: CreateVolumeBody,
        response: withErrors({ 201: VolumeSchema }, 409),
      },
    },
    async (req, reply) => reply.status(201).send(await svc.volumes.create(req.body)),
  );

  app.get('/volumes', { schema: { tags: ['volumes'], response: withErrors({ 200: Type.Object({ volumes: Type.Array(VolumeSchema) }) }) } }, async () => ({
    volumes: await svc.volumes.list(),
  }));

  app.get<Name>(
    '/volumes/:name',
    { schema: { tags: ['volumes'], params: VolumeParams, response: withErrors({ 200: VolumeSchema }, 404) } },
    (req) => svc.volumes.get(req.params.name),
  );

  app.delete<Name>(
    '/volumes/:name',
    {
      config: { volumeOwner: true },
      schema: {
        tags: ['volumes'],
        description: 'Deletes a volume and its data; 409 while any sandbox (running or stopped) has it attached.',
        params: VolumeParams,
        response: withErrors({ 204: Type.Null() }, 404, 409, 503),
      },
    },
    async (req, reply) => {
      await svc.volumes.delete(req.params.name);
      return reply.status(204).send();
    },
  );
}
