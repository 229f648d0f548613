import { Type, type Static } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import { PrismError } from '../../core/errors.js';
import { SANDBOX_STATUSES, type SandboxStatus } from '../../core/types.js';
import { CreateSandboxBody, ExecRecordSchema, IdParams, ListSandboxesQuery, MetricsQuery, MetricsSchema, SandboxSchema, TimeoutBody, withErrors } from '../schemas.js';
import type { ApiServices } from '../server.js';

type Id = { Params: { id: string } };

export function registerSandboxRoutes(app: FastifyInstance, svc: ApiServices): void {
  app.post<{ Body: Static<typeof CreateSandboxBody> }>(
    '/sandboxes',
    // Made here when placement would put it here anyway (a direct create), else on the scheduler
    // leader's node, where it is placed at once (owner-proxy.ts, Scheduler.place).
    { config: { toLeader: (req) => (req.body ?? {}) as Static<typeof CreateSandboxBody> }, schema: { tags: ['sandboxes'], body: CreateSandboxBody, response: withErrors({ 201: SandboxSchema }, 404, 409, 412, 413, 429, 503) } },
    async (req, reply) => reply.status(201).send(await svc.sandboxes.create(req.body ?? {})),
  );

  app.get<{ Querystring: Static<typeof ListSandboxesQuery> }>(
    '/sandboxes',
    { schema: { tags: ['sandboxes'], querystring: ListSandboxesQuery, response: withErrors({ 200: Type.Object({ sandboxes: Type.Array(SandboxSchema) }) }) } },
    async (req) => ({ sandboxes: await svc.sandboxes.list(listFilter(req.query)) }),
  );

  app.post<Id & { Body: Static<typeof TimeoutBody> }>(
    '/sandboxes/:id/timeout',
    { config: { owner: true }, schema: { tags: ['sandboxes'], params: IdParams, body: TimeoutBody, response: withErrors({ 200: SandboxSchema }, 404, 412) } },
    (req) => svc.sandboxes.setTimeout(req.params.id, req.body.timeoutSec),
  );

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

  app.post<Id>(
    '/sandboxes/:id/pause',
    {
      config: { owner: true },
      schema: {
        tags: ['sandboxes'], params: IdParams, response: withErrors({ 200: SandboxSchema }, 404, 412, 501),
        description: 'freezes every process, keeping memory (in RAM on oci and docker); 501 on a runtime that cannot pause',
      },
    },
    (req) => svc.sandboxes.pause(req.params.id),
  );

  app.post<Id>(
    '/sandboxes/:id/resume',
    { config: { owner: true }, schema: { tags: ['sandboxes'], params: IdParams, response: withErrors({ 200: SandboxSchema }, 404, 412) } },
    (req) => svc.sandboxes.resume(req.params.id),
  );

  app.delete<Id>(
    '/sandboxes/:id',
    { config: { owner: true }, schema: { tags: ['sandboxes'], params: IdParams, response: withErrors({ 204: Type.Null() }, 404) } },
    async (req, reply) => {
      await svc.sandboxes.delete(req.params.id);
      return reply.status(204).send();
    },
  );

  app.get<Id & { Querystring: Static<typeof MetricsQuery> }>(
    '/sandboxes/:id/metrics',
    { config: { owner: true }, schema: { tags: ['sandboxes'], params: IdParams, querystring: MetricsQuery, response: withErrors({ 200: MetricsSchema }, 400, 404) } },
    async (req) => {
      const range = { startMs: instant('start', req.query.start), endMs: instant('end', req.query.end) };
      if (range.startMs !== undefined && range.endMs !== undefined && range.startMs > range.endMs) {
        throw new PrismError('INVALID_ARGUMENT', 'start is after end');
      }
      const sb = await svc.sandboxes.get(req.params.id);
      return { intervalSec: svc.metrics.opts.intervalMs / 1000, metrics: await svc.metrics.read(sb, range) };
    },
  );

  app.get<Id>(
    '/sandboxes/:id/logs',
    { schema: { tags: ['sandboxes'], params: IdParams, response: withErrors({ 200: Type.Object({ executions: Type.Array(ExecRecordSchema) }) }, 404) } },
    async (req) => ({ executions: await svc.exec.logs(req.params.id) }),
  );
}

/** `metadata=k=v` (repeatable; the first `=` splits) and `status=a,b` into the service's filter. */
export function listFilter(q: Static<typeof ListSandboxesQuery>): { metadata?: Record<string, string>; status?: SandboxStatus[] } {
  const out: { metadata?: Record<string, string>; status?: SandboxStatus[] } = {};
  if (q.metadata !== undefined) {
    out.metadata = {};
    for (const pair of Array.isArray(q.metadata) ? q.metadata : [q.metadata]) {
      const at = pair.indexOf('=');
      if (at <= 0) throw new PrismError('INVALID_ARGUMENT', `metadata filter '${pair}' is not key=value`);
      out.metadata[pair.slice(0, at)] = pair.slice(at + 1);
    }
  }
  if (q.status !== undefined) {
    const wanted = q.status.split(',').filter(Boolean);
    const bad = wanted.find((s) => !(SANDBOX_STATUSES as readonly string[]).includes(s));
    if (bad) throw new PrismError('INVALID_ARGUMENT', `status '${bad}' is not one of ${SANDBOX_STATUSES.join(', ')}`);
    out.status = wanted as SandboxStatus[];
  }
  return out;
}

/** A point in time given as unix seconds or RFC 3339, in ms; INVALID_ARGUMENT otherwise. */
export function instant(name: string, v: string | undefined): number | undefined {
  if (v === undefined || v === '') return undefined;
  const ms = /^\d+(\.\d+)?$/.test(v) ? Number(v) * 1000 : Date.parse(v);
  if (!Number.isFinite(ms)) throw new PrismError('INVALID_ARGUMENT', `${name} must be unix seconds or an RFC 3339 time, got '${v}'`);
  return ms;
}
