import swagger from '@fastify/swagger';
import type { LifecycleEvents } from '../service/lifecycle-events.js';
import { registerEventRoutes } from './routes/event-routes.js';
import type { PromMetrics } from '../service/prometheus.js';
import { METRICS_PATH, registerMetricsRoute } from './metrics-route.js';
import websocket from '@fastify/websocket';
import Fastify, { type FastifyError, type FastifyInstance } from 'fastify';
import { PrismError, httpStatusForCode, type ErrorCode } from '../core/errors.js';
import type { ExecService } from '../service/exec-service.js';
import type { FileService } from '../service/file-service.js';
import type { ImageService } from '../service/image-service.js';
import type { Logger } from '../service/logger.js';
import type { NodeService } from '../service/node-service.js';
import type { PtyService } from '../service/pty-service.js';
import type { ProcessService } from '../service/process-service.js';
import type { SandboxService } from '../service/sandbox-service.js';
import type { TokenService } from '../service/token-service.js';
import type { VolumeService } from '../service/volume-service.js';
import { registerE2bGateway } from '../e2b/gateway.js';
import { rewriteSandboxHost } from '../e2b/host-routing.js';
import { chooseProtocol, registerAuth } from './auth.js';
import { isConsolePath, registerConsole } from './console-route.js';
import { registerTokenRoutes } from './routes/token-routes.js';
import { registerOwnerProxy } from './owner-proxy.js';
import type { SandboxMetrics } from '../service/sandbox-metrics.js';
import type { SnapshotService } from '../service/snapshot-service.js';
import { registerSnapshotRoutes } from './routes/snapshot-routes.js';
import { registerExecRoutes } from './routes/exec-routes.js';
import { registerFileRoutes } from './routes/file-routes.js';
import { registerImageRoutes } from './routes/image-routes.js';
import { registerPortRoutes } from './routes/port-routes.js';
import { registerPtyRoutes } from './routes/pty-routes.js';
import { registerProcessRoutes } from './routes/process-routes.js';
import { registerSandboxRoutes } from './routes/sandbox-routes.js';
import { registerSystemRoutes } from './routes/system-routes.js';
import { isJoinPath, registerClusterRoutes } from './routes/cluster-routes.js';
import type { ClusterJoin } from '../cluster/join-service.js';
import { registerVolumeRoutes } from './routes/volume-routes.js';
import { LazySerializers } from './lazy-serializers.js';

export interface ApiServices {
  sandboxes: SandboxService;
  exec: ExecService;
  pty: PtyService;
  processes: ProcessService;
  files: FileService;
  nodes: NodeService;
  images: ImageService;
  volumes: VolumeService;
  metrics: SandboxMetrics;
  lifecycle: LifecycleEvents;
  snapshots: SnapshotService;
  version: string;
  nodeId: string;
  /** The scheduler leader's node as this node last saw it: creates are sent on there (owner-proxy.ts). */
  leader?: () => string | undefined;
  /** Joining the cluster (`prismd --join`); absent on a node alone on SQLite. */
  cluster?: ClusterJoin;
  /** Absent only when the daemon runs with `--auth none`. */
  tokens?: TokenService;
  /** GET /metrics (Prometheus); `auth: none` serves it without a token (`prismd --metrics-auth none`). */
  prometheus?: { metrics: PromMetrics; auth: 'token' | 'none' };
  /** The E2B-compatible gateway at /e2b (docs/e2b.md); absent: not served. */
  e2b?: { defaultImage: string; maxTimeoutSec: number; domain?: string };
}

export interface ApiOptions {
  logger: Logger;
  /** Largest accepted JSON request body (exec stdin travels in it). */
  bodyLimit: number;
  /** Largest image archive accepted by POST /images/import. */
  maxImportBytes: number;
  /** Serve HTTPS with `cert`/`key`; forwarded requests verify other nodes against `ca` and present `cert`. */
  tls?: { cert: Buffer; key: Buffer; ca: Buffer };
  /** Serve the web console at `/` (prismd `--no-console` turns it off); a string: from that directory. */
  console?: boolean | string;
  /** The response serializers, compiled on first use (a test passes its own to compile them all). */
  serializers?: LazySerializers;
}

function sendError(reply: import('fastify').FastifyReply, code: ErrorCode, message: string) {
  return reply.status(httpStatusForCode[code]).send({ error: { code, message } });
}

/** Maps framework errors (bad JSON, schema violations, oversized bodies) onto stable codes. */
function translate(err: FastifyError): { code: ErrorCode; message: string } {
  if (err.validation) {
    const v = err.validation[0];
    const where = `${err.validationContext ?? 'body'}${v?.instancePath ?? ''}`;
    const extra = (v?.params as { additionalProperty?: string } | undefined)?.additionalProperty;
    if (extra) return { code: 'INVALID_ARGUMENT', message: `${where}: unknown field '${extra}'` };
    return { code: 'INVALID_ARGUMENT', message: `${where} ${v?.message ?? err.message}` };
  }
  if (err.code === 'FST_ERR_CTP_BODY_TOO_LARGE') return { code: 'PAYLOAD_TOO_LARGE', message: 'request body is too large' };
  if (err.statusCode === 413) return { code: 'PAYLOAD_TOO_LARGE', message: err.message };
  if (err.statusCode && err.statusCode >= 400 && err.statusCode < 500) {
    return { code: 'INVALID_ARGUMENT', message: err.message };
  }
  return { code: 'INTERNAL', message: 'internal error' };
}

export async function buildApi(svc: ApiServices, opts: ApiOptions): Promise<FastifyInstance> {
  const e2bDomain = svc.e2b?.domain;
  const app = Fastify({
    ...(opts.tls ? { https: { cert: opts.tls.cert, key: opts.tls.key } } : {}),
    // E2B's per-sandbox hosts (<port>-<id>.<domain>) become gateway paths before routing.
    ...(svc.e2b ? { rewriteUrl: (req: import('node:http').IncomingMessage) => rewriteSandboxHost(req, e2bDomain) } : {}),
    logger: false,
    bodyLimit: opts.bodyLimit,
    // Reject wrong types and unknown fields instead of silently coercing or dropping them.
    ajv: { customOptions: { removeAdditional: false, coerceTypes: false, useDefaults: false } },
    schemaController: { compilersFactory: { buildSerializer: (opts.serializers ?? new LazySerializers()).factory } },
  });
  await app.register(swagger, {
    openapi: {
      openapi: '3.0.3',
      info: { title: 'Prism API', version: svc.version, description: 'Sandboxes for running untrusted code. See docs/api.md.' },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer', description: 'An API token: prism_<id>_<secret>' } } },
      security: svc.tokens ? [{ bearer: [] }] : [],
    },
  });
  // Empty bodies are fine on POSTs that take none (stop, start); malformed JSON is INVALID_ARGUMENT.
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (_req, body, done) => {
    const text = body as string;
    if (text.trim() === '') return done(null, undefined);
    try {
      done(null, JSON.parse(text));
    } catch (e) {
      done(new PrismError('INVALID_ARGUMENT', `request body is not valid JSON: ${(e as Error).message}`), undefined);
    }
  });
  app.setErrorHandler(async (err: FastifyError, req, reply) => {
    if (err instanceof PrismError) {
      if (err.code === 'INTERNAL') opts.logger.error({ err, url: req.url }, 'request failed');
      // On a cluster of prismd's own etcd members, an unavailable answer says which members are missing
      // (nothing is added while they all answer; the check is cached for 2 s).
      if ((err.code === 'UNAVAILABLE' || err.code === 'DEADLINE_EXCEEDED') && svc.cluster) {
        const why = await svc.cluster.outage().catch(() => undefined);
        if (why) return sendError(reply.header('retry-after', '2'), err.code, `${err.message}: ${why}`);
      }
      if (err.retryAfterSec !== undefined) void reply.header('retry-after', String(err.retryAfterSec));
      return sendError(reply, err.code, err.message);
    }
    const t = translate(err);
    if (t.code === 'INTERNAL') opts.logger.error({ err, url: req.url }, 'unexpected error');
    return sendError(reply, t.code, t.message);
  });
  app.setNotFoundHandler((req, reply) => sendError(reply, 'NOT_FOUND', `no route ${req.method} ${req.url.split('?')[0]}`));
  // Before auth: its onRequest hook marks upgrade requests, so that a refused one gets its socket closed.
  // Terminal input comes in keystrokes; 1 MiB bounds what one frame can make the daemon buffer.
  await app.register(websocket, { options: { maxPayload: 1 << 20, perMessageDeflate: false, handleProtocols: chooseProtocol } });
  const metricsOpen = svc.prometheus?.auth === 'none';
  if (svc.tokens) registerAuth(app, svc.tokens, (path) => (!!opts.console && isConsolePath(path)) || (metricsOpen && path === METRICS_PATH) || isJoinPath(path));
  if (opts.console) await registerConsole(app, typeof opts.console === 'string' ? opts.console : undefined);
  if (svc.prometheus) registerMetricsRoute(app, svc.prometheus.metrics);
  await registerOwnerProxy(app, svc.sandboxes, svc.nodeId, opts.tls, svc.volumes, svc.leader);
  await app.register(
    async (api) => {
      registerSystemRoutes(api, svc);
      registerClusterRoutes(api, svc.cluster);
      registerEventRoutes(api, svc);
      registerSandboxRoutes(api, svc);
      registerSnapshotRoutes(api, svc);
      registerExecRoutes(api, svc, opts.logger);
      registerPtyRoutes(api, svc, opts.logger, opts.tls);
      registerProcessRoutes(api, svc, opts.logger);
      registerImageRoutes(api, svc, opts.maxImportBytes);
      registerVolumeRoutes(api, svc);
      await api.register((files) => registerFileRoutes(files, svc));
      await registerPortRoutes(api, svc);
      if (svc.tokens) registerTokenRoutes(api, svc.tokens);
    },
    { prefix: '/api/v1' },
  );
  if (svc.e2b) {
    await registerE2bGateway(app, {
      sandboxes: svc.sandboxes, snapshots: svc.snapshots, metrics: svc.metrics, files: svc.files, processes: svc.processes, exec: svc.exec, nodeId: svc.nodeId, log: opts.logger,
      defaultImage: svc.e2b.defaultImage, maxTimeoutSec: svc.e2b.maxTimeoutSec,
      ...(svc.tokens ? { tokens: svc.tokens } : {}), ...(svc.e2b.domain ? { domain: svc.e2b.domain } : {}),
    });
  }
  return app;
}
