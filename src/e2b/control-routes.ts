import { Type, type Static } from '@sinclair/typebox';
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { PrismError, httpStatusForCode } from '../core/errors.js';
import { calledHost } from '../api/owner-proxy.js';
import type { CreateSandboxWire } from '../core/wire.js';
import type { EgressPolicy, ExecRecord, Sandbox } from '../core/types.js';
import type { SandboxMetrics } from '../service/sandbox-metrics.js';
import type { SandboxService } from '../service/sandbox-service.js';
import type { SnapshotService } from '../service/snapshot-service.js';
import type { Logger } from '../service/logger.js';
import type { TokenService } from '../service/token-service.js';
import { LOG_LEVELS, execLogEntries, queryLogs } from './sandbox-logs.js';
import { TEMPLATE_KEY, imageForTemplate, metricView, sandboxCreated, sandboxDetail, sandboxListed, type TemplateMap, type View } from './sandbox-view.js';

/**
 * E2B's control-plane API (E2B_API_URL = <prism>/e2b): sandboxes created, listed, connected, timed and
 * killed as Prism sandboxes, authenticated by a Prism API token in X-API-KEY. Errors are E2B's
 * `{code: <http status>, message}`; the SDK decides "not found" from that body code.
 */

export interface ControlDeps {
  sandboxes: SandboxService;
  snapshots: SnapshotService;
  metrics: SandboxMetrics;
  /** A sandbox's exec records, oldest first (ExecService.logs): what its logs are made of. */
  execRecords: (id: string) => Promise<ExecRecord[]>;
  /** Absent with `--auth none`. */
  tokens?: TokenService;
  templates: TemplateMap;
  nodeId: string;
  /** `--e2b-domain`; absent: the Host the client called. */
  domain?: string;
  log: Logger;
}

/** E2B's default sandbox lifetime when a create names none (seconds). */
const DEFAULT_TIMEOUT_SEC = 300;
const MAX_TIMEOUT_SEC = 30 * 86400;
const LIST_LIMIT = 100;

// The SDKs send fields this gateway does not use (secure, autoResume, ...); unknown fields are allowed.
const open = { additionalProperties: true } as const;
const StringMap = Type.Record(Type.String({ maxLength: 256 }), Type.String({ maxLength: 32768 }), { maxProperties: 256 });
const NewSandbox = Type.Object(
  {
    templateID: Type.String({ minLength: 1, maxLength: 512 }),
    timeout: Type.Optional(Type.Integer({ minimum: 0, maximum: MAX_TIMEOUT_SEC })),
    metadata: Type.Optional(Type.Union([StringMap, Type.Null()])),
    envVars: Type.Optional(Type.Union([StringMap, Type.Null()])),
    autoPause: Type.Optional(Type.Boolean()),
    autoResume: Type.Optional(Type.Union([Type.Object({ enabled: Type.Optional(Type.Boolean()) }, open), Type.Null()])),
    allow_internet_access: Type.Optional(Type.Boolean()),
    network: Type.Optional(
      Type.Object({ allowOut: Type.Optional(Type.Array(Type.String())), denyOut: Type.Optional(Type.Array(Type.String())) }, open),
    ),
    mcp: Type.Optional(Type.Unknown()),
    volumeMounts: Type.Optional(Type.Array(Type.Object({ name: Type.String(), path: Type.String() }, open), { maxItems: 16 })),
  },
  open,
);
const TimeoutBody = Type.Object({ timeout: Type.Integer({ minimum: 0, maximum: MAX_TIMEOUT_SEC }) }, open);
const ConnectBody = Type.Object({ timeout: Type.Optional(Type.Integer({ minimum: 0, maximum: MAX_TIMEOUT_SEC })) }, open);
const LOGS_LIMIT = 1000;
const Limit = Type.String({ pattern: '^[0-9]{1,4}$' });
const Millis = Type.String({ pattern: '^[0-9]{1,15}$' });
const LogsQuery = Type.Object({ start: Type.Optional(Millis), limit: Type.Optional(Limit) }, open);
const LogsV2Query = Type.Object(
  {
    cursor: Type.Optional(Millis),
    direction: Type.Optional(Type.Union([Type.Literal('forward'), Type.Literal('backward')])),
    level: Type.Optional(Type.Union(LOG_LEVELS.map((l) => Type.Literal(l)))),
    limit: Type.Optional(Limit),
    search: Type.Optional(Type.String({ maxLength: 256 })),
  },
  open,
);
const SnapshotsQuery = Type.Object(
  { sandboxID: Type.Optional(Type.String({ maxLength: 256 })), name: Type.Optional(Type.String({ maxLength: 256 })), limit: Type.Optional(Limit), nextToken: Type.Optional(Type.String({ pattern: '^[0-9]{1,9}$' })) },
  open,
);
const MetricsQuery = Type.Object(
  { start: Type.Optional(Type.String({ pattern: '^[0-9]{1,12}$' })), end: Type.Optional(Type.String({ pattern: '^[0-9]{1,12}$' })) },
  open,
);
const ListQuery = Type.Object(
  {
    metadata: Type.Optional(Type.String({ maxLength: 4096 })),
    state: Type.Optional(Type.Union([Type.String(), Type.Array(Type.String())])),
    limit: Type.Optional(Type.String({ pattern: '^[0-9]{1,4}$' })),
    nextToken: Type.Optional(Type.String({ maxLength: 256 })),
  },
  open,
);
const Id = Type.Object({ id: Type.String({ minLength: 1, maxLength: 256 }) });
type IdReq = { Params: Static<typeof Id> };

export function e2bError(reply: FastifyReply, status: number, message: string): FastifyReply {
  return reply.status(status).type('application/json').send({ code: status, message });
}

export function registerControlRoutes(app: FastifyInstance, deps: ControlDeps): void {
  const { sandboxes } = deps;
  const view = (host: string | undefined): View => ({ domain: deps.domain ?? host ?? 'localhost', clientID: deps.nodeId });

  app.setErrorHandler((err: FastifyError, _req, reply) => {
    if (err instanceof PrismError) return e2bError(reply, httpStatusForCode[err.code], err.message);
    if (err.validation || (err.statusCode ?? 500) < 500) return e2bError(reply, 400, err.message);
    deps.log.error({ err }, 'E2B API request failed');
    return e2bError(reply, 500, 'internal error');
  });
  app.setNotFoundHandler((req, reply) => e2bError(reply, 404, `no route ${req.method} ${req.url.split('?')[0]} in Prism's E2B API (docs/e2b.md lists what exists)`));

  app.addHook('onRequest', async (req, reply) => {
    if (!deps.tokens) return;
    const key = req.headers['x-api-key'];
    if (typeof key === 'string' && key && deps.tokens.verify(key)) return;
    return e2bError(reply, 401, 'missing or invalid API key: send a Prism API token as X-API-KEY (E2B_API_KEY)');
  });

  const create = async (body: Static<typeof NewSandbox>, host: string | undefined) => {
    if (body.mcp !== undefined && body.mcp !== null) throw new PrismError('UNIMPLEMENTED', 'MCP gateways (the mcp option) are not implemented by Prism');
    // A snapshot's id is a template id too (Sandbox.create(snapshotId)).
    const snapshot = body.templateID.startsWith('snap-') ? await deps.snapshots.get(body.templateID).catch(() => undefined) : undefined;
    const req: CreateSandboxWire = {
      ...(snapshot ? { snapshot: snapshot.id } : { image: imageForTemplate(body.templateID, deps.templates) }),
      timeoutSec: body.timeout ?? DEFAULT_TIMEOUT_SEC,
      // autoPause: the timeout pauses (memory kept) instead of killing, as on E2B.
      onTimeout: body.autoPause ? 'pause' : 'delete',
      // As on E2B, a paused sandbox is resumed by connect, or by its traffic only when asked for.
      autoResume: body.autoResume?.enabled === true,
      metadata: { ...(body.metadata ?? {}), [TEMPLATE_KEY]: body.templateID },
      network: { egress: egressOf(body) },
    };
    if (body.envVars && Object.keys(body.envVars).length) req.env = body.envVars;
    if (body.volumeMounts?.length) req.volumes = volumesOf(body.volumeMounts);
    return sandboxCreated(await sandboxes.create(req), view(host));
  };

  // Made here or on the scheduler leader's node, as Prism's own create (owner-proxy.ts, toLeader):
  // what decides is the shape of the create, the node's defaults with the volumes asked for. A
  // snapshot's template is looked up by the route itself, so that create is always sent on.
  const shape = (req: FastifyRequest): CreateSandboxWire | undefined => {
    const body = req.body as Static<typeof NewSandbox>;
    if (body.templateID.startsWith('snap-')) return undefined;
    return body.volumeMounts?.length ? { volumes: volumesOf(body.volumeMounts) } : {};
  };
  // e2b >= 2.51 creates and connects under /v2; older SDKs without it. Both stay.
  for (const prefix of ['', '/v2']) {
    app.post<{ Body: Static<typeof NewSandbox> }>(`${prefix}/sandboxes`, { config: { toLeader: shape }, schema: { body: NewSandbox } }, async (req, reply) =>
      reply.status(201).send(await create(req.body, calledHost(req))),
    );
    app.post<IdReq & { Body: Static<typeof ConnectBody> | undefined }>(
      `${prefix}/sandboxes/:id/connect`,
      { config: { owner: true }, schema: { params: Id, body: Type.Optional(ConnectBody) } },
      async (req, reply) => {
        let sb = await findOrNotFound(sandboxes, req.params.id);
        let status = 200;
        if (sb.status === 'paused' || sb.status === 'resuming') {
          sb = await sandboxes.resume(sb.id);
          status = 201;
        } else if (sb.status === 'stopped') {
          // A Prism sandbox stopped through Prism: started again, files kept (processes are not).
          sb = await sandboxes.start(sb.id);
          status = 201;
        }
        if (sb.status !== 'running') throw new PrismError('FAILED_PRECONDITION', `sandbox '${sb.id}' is ${sb.status}`);
        const want = req.body?.timeout;
        // "The TTL is only extended": a connect never shortens what is left.
        if (want !== undefined && sb.timeoutSec && remainingSec(sb) < want) sb = await sandboxes.setTimeout(sb.id, want);
        return reply.status(status).send(sandboxCreated(sb, view(calledHost(req))));
      },
    );
  }

  app.get<{ Querystring: Static<typeof ListQuery> }>('/v2/sandboxes', { schema: { querystring: ListQuery } }, async (req, reply) => {
    const q = req.query;
    const states = (Array.isArray(q.state) ? q.state : (q.state ?? '').split(',')).filter(Boolean);
    const limit = Math.min(LIST_LIMIT, Math.max(1, Number(q.limit ?? LIST_LIMIT)));
    let all = (await sandboxes.list({ metadata: parseMetadataFilter(q.metadata) })).filter(visible);
    if (states.length) all = all.filter((sb) => states.includes(sandboxListed(sb, view(undefined)).state));
    const from = q.nextToken ? all.findIndex((sb) => sb.id === q.nextToken) + 1 : 0;
    if (q.nextToken && from === 0) throw new PrismError('INVALID_ARGUMENT', `nextToken '${q.nextToken}' is not a sandbox of this listing`);
    const page = all.slice(from, from + limit);
    if (from + limit < all.length) void reply.header('x-next-token', page[page.length - 1]!.id);
    return page.map((sb) => sandboxListed(sb, view(calledHost(req))));
  });

  app.get<{ Querystring: Static<typeof ListQuery> }>('/sandboxes', { schema: { querystring: ListQuery } }, async (req) =>
    (await sandboxes.list({ metadata: parseMetadataFilter(req.query.metadata) }))
      .filter((sb) => visible(sb) && sb.status === 'running')
      .map((sb) => sandboxListed(sb, view(calledHost(req)))),
  );

  app.get<IdReq>('/sandboxes/:id', { schema: { params: Id } }, async (req) =>
    sandboxDetail(await findOrNotFound(sandboxes, req.params.id), view(calledHost(req))),
  );

  app.delete<IdReq>('/sandboxes/:id', { config: { owner: true }, schema: { params: Id } }, async (req, reply) => {
    const sb = await findOrNotFound(sandboxes, req.params.id);
    await sandboxes.delete(sb.id);
    return reply.status(204).send();
  });

  app.post<IdReq & { Body: Static<typeof TimeoutBody> }>(
    '/sandboxes/:id/timeout',
    { config: { owner: true }, schema: { params: Id, body: TimeoutBody } },
    async (req, reply) => {
      const sb = await findOrNotFound(sandboxes, req.params.id);
      await sandboxes.setTimeout(sb.id, req.body.timeout);
      return reply.status(204).send();
    },
  );

  // The runtime keeps the memory (in RAM on oci and docker); the SDK reads 409 as "already paused".
  app.post<IdReq>('/sandboxes/:id/pause', { config: { owner: true }, schema: { params: Id } }, async (req, reply) => {
    const sb = await findOrNotFound(sandboxes, req.params.id);
    if (sb.status === 'paused' || sb.status === 'pausing') return e2bError(reply, 409, `sandbox "${sb.id}" is already paused`);
    await sandboxes.pause(sb.id);
    return reply.status(204).send();
  });

  // Snapshots: a sandbox's files as an image on its node (memory is not kept: docs/e2b.md).
  app.post<IdReq & { Body: { name?: string } | undefined }>(
    '/sandboxes/:id/snapshots',
    { config: { owner: true }, schema: { params: Id, body: Type.Optional(Type.Object({ name: Type.Optional(Type.String({ minLength: 1, maxLength: 128 })) }, open)) } },
    async (req, reply) => {
      const sb = await findOrNotFound(sandboxes, req.params.id);
      const snap = await deps.snapshots.create(sb.id, req.body?.name ? { name: req.body.name } : {});
      return reply.status(201).send({ snapshotID: snap.id, names: [snap.name] });
    },
  );

  app.get<{ Querystring: Static<typeof SnapshotsQuery> }>('/snapshots', { schema: { querystring: SnapshotsQuery } }, async (req, reply) => {
    const q = req.query;
    const all = (await deps.snapshots.list()).filter((s) => (!q.sandboxID || s.sandboxId === q.sandboxID) && (!q.name || s.name === q.name));
    const start = q.nextToken ? Number(q.nextToken) || 0 : 0;
    const limit = Math.min(Number(q.limit ?? LIST_LIMIT) || LIST_LIMIT, LIST_LIMIT);
    const page = all.slice(start, start + limit);
    if (start + limit < all.length) reply.header('x-next-token', String(start + limit));
    return page.map((s) => ({ snapshotID: s.id, names: [s.name] }));
  });

  // E2B deletes a snapshot as a template; it runs on the node whose image store holds it.
  app.delete<IdReq>(
    '/templates/:id',
    { config: { nodeOwner: async (req) => (await deps.snapshots.get((req.params as { id: string }).id).catch(() => undefined))?.node }, schema: { params: Id } },
    async (req, reply) => {
      await deps.snapshots.get(req.params.id).catch(() => {
        throw new PrismError('NOT_FOUND', `snapshot "${req.params.id}" not found (only snapshots are templates Prism can delete)`);
      });
      await deps.snapshots.remove(req.params.id);
      return reply.status(204).send();
    },
  );

  // Samples live on the node running the sandbox (SandboxMetrics): the request goes there.
  app.get<IdReq & { Querystring: Static<typeof MetricsQuery> }>(
    '/sandboxes/:id/metrics',
    { config: { owner: true }, schema: { params: Id, querystring: MetricsQuery } },
    async (req) => {
      const sb = await findOrNotFound(sandboxes, req.params.id);
      const { start, end } = req.query;
      const samples = await deps.metrics.read(sb, { ...(start !== undefined ? { startMs: Number(start) * 1000 } : {}), ...(end !== undefined ? { endMs: Number(end) * 1000 } : {}) });
      return samples.map(metricView);
    },
  );

  // Logs are the sandbox's finished commands (sandbox-logs.ts), read from the store on any node.
  app.get<IdReq & { Querystring: Static<typeof LogsQuery> }>('/sandboxes/:id/logs', { schema: { params: Id, querystring: LogsQuery } }, async (req) => {
    const sb = await findOrNotFound(sandboxes, req.params.id);
    const entries = queryLogs(execLogEntries(await deps.execRecords(sb.id)), {
      ...(req.query.start !== undefined ? { cursor: Number(req.query.start) } : {}), limit: Number(req.query.limit ?? LOGS_LIMIT),
    });
    return { logs: entries.map((e) => ({ timestamp: e.timestamp, line: e.message })), logEntries: entries };
  });

  app.get<IdReq & { Querystring: Static<typeof LogsV2Query> }>('/v2/sandboxes/:id/logs', { schema: { params: Id, querystring: LogsV2Query } }, async (req) => {
    const sb = await findOrNotFound(sandboxes, req.params.id);
    const { cursor, direction, level, limit, search } = req.query;
    const logs = queryLogs(execLogEntries(await deps.execRecords(sb.id)), {
      ...(cursor !== undefined ? { cursor: Number(cursor) } : {}), ...(direction ? { direction } : {}), ...(level ? { level } : {}),
      ...(search !== undefined ? { search } : {}), limit: Number(limit ?? LOGS_LIMIT),
    });
    return { logs };
  });
}

/** Every Prism sandbox is an E2B sandbox (not only those the gateway made), except one being deleted. */
/** E2B's volume mounts as Prism's create names them. */
function volumesOf(mounts: { name: string; path: string }[]): NonNullable<CreateSandboxWire['volumes']> {
  return mounts.map((m) => ({ name: m.name, mountPath: m.path }));
}

function visible(sb: Sandbox): boolean {
  return sb.status !== 'deleting';
}

async function findOrNotFound(sandboxes: SandboxService, id: string): Promise<Sandbox> {
  try {
    const sb = await sandboxes.get(id);
    if (sb.status === 'deleting') throw new PrismError('NOT_FOUND', `sandbox '${id}' not found`);
    return sb;
  } catch (e) {
    if (e instanceof PrismError && e.code === 'NOT_FOUND') throw new PrismError('NOT_FOUND', `sandbox "${id}" not found`);
    throw e;
  }
}

function remainingSec(sb: Sandbox): number {
  return Math.floor((Date.parse(sb.startedAt ?? sb.createdAt) + sb.timeoutSec * 1000 - Date.now()) / 1000);
}

/** E2B: internet on by default; `allow_internet_access: false` closes it; allowOut/denyOut make a list. */
function egressOf(body: Static<typeof NewSandbox>): EgressPolicy {
  const allow = body.network?.allowOut ?? [];
  const deny = body.network?.denyOut ?? [];
  if (body.allow_internet_access === false && !allow.length) return 'none';
  if (allow.length) return { allow, deny };
  if (deny.length) return { allow: ['0.0.0.0/0'], deny };
  return 'all';
}

/**
 * The metadata filter as E2B's API reads it: the value (already URL-decoded once by the framework)
 * is unescaped as a whole, split into `k=v` pairs on `&`, and each key and value unescaped again.
 */
export function parseMetadataFilter(raw: string | undefined): Record<string, string> | undefined {
  if (!raw) return undefined;
  const out: Record<string, string> = {};
  const unescape = (s: string) => {
    try {
      return decodeURIComponent(s.replace(/\+/g, ' '));
    } catch {
      throw new PrismError('INVALID_ARGUMENT', `metadata filter '${raw}' is not URL-encoded`);
    }
  };
  for (const pair of unescape(raw).split('&').filter(Boolean)) {
    const at = pair.indexOf('=');
    if (at <= 0) throw new PrismError('INVALID_ARGUMENT', `metadata filter '${pair}' is not key=value`);
    out[unescape(pair.slice(0, at))] = unescape(pair.slice(at + 1));
  }
  return out;
}
