import { Type, type Static } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import { CreateSandboxBody, ExecRecordSchema, IdParams, SandboxSchema, withErrors } from '../schemas.js';
import type { ApiServices } from '../server.js';

type Id = { Params: { id: string } };

export function registerSandboxRoutes(app: FastifyInstance, svc: ApiServices): void {
  app.post<{ Body: Static<typeof CreateSandboxBody> }>(
    '/sandboxes',
    { schema: { tags: ['sandboxes'], body: CreateSandboxBody, response: withErrors({ 201: SandboxSchema }, 404, 409, 412, 413, 429, 503) } },
    async (req, reply) => reply.status(201).send(await svc.sandboxes.create(req.body ?? {})),
  );

  app.get('/sandboxes', { schema: { tags: ['sandboxes'], response: withErrors({ 200: Type.Object({ sandboxes: Type.Array(SandboxSchema) }) }) } }, async () => ({
    sandboxes: await svc.sandboxes.list(),
  }));

  app.get<Id>(
    '/sandboxes/:id',
    { schema: { tags: ['sandboxes'], params: IdParams, response: withErrors({ 200: SandboxSchema }, 404) } },
    (req) => svc.sandboxes.get(req.params.id),
  );

  app.post<Id>(
    '/sandboxes/:id/stop',
    { config: { owner: true }, schema: { tags: ['sandboxes'], params: IdParams, response: withErrors({ 200: SandboxSchema }, 404, 412) } },
    (req) => svc.sandboxes.stop(req.params.id),
  );

  app.post<Id>(
    '/sandboxes/:id/start',
    { config: { owner: true }, schema: { tags: ['sandboxes'], params: IdParams, response: withErrors({ 200: SandboxSchema }, 404, 412) } },
    (req) => svc.sandboxes.start(req.params.id),
  );

  app.delete<Id>(
    '/sandboxes/:id',
    { config: { owner: true }, schema: { tags: ['sandboxes'], params: IdParams, response: withErrors({ 204: Type.Null() }, 404) } },
    async (req, reply) => {
      await svc.sandboxes.delete(req.params.id);
      return reply.status(204).send();
    },
  );

  app.get<Id>(
    '/sandboxes/:id/logs',
    { schema: { tags: ['sandboxes'], params: IdParams, response: withErrors({ 200: Type.Object({ executions: Type.Array(ExecRecordSchema) }) }, 404) } },
    async (req) => ({ executions: await svc.exec.logs(req.params.id) }),
  );
}
