import replyFrom from '@fastify/reply-from';
import type { FastifyInstance } from 'fastify';
import { PrismError } from '../core/errors.js';
import type { Sandbox } from '../core/types.js';
import type { SandboxService } from '../service/sandbox-service.js';
import type { VolumeService } from '../service/volume-service.js';

declare module 'fastify' {
  interface FastifyRequest {
    /**
     * The sandbox record the owner check read, when the route runs on this node: routes pass it on
     * (SandboxRef) so that a request reads the record once, not once here and again in the service.
     */
    ownerSandbox?: Sandbox;
  }
  interface FastifyContextConfig {
    /**
     * The route acts on a sandbox's task, so it runs on the node that owns the sandbox: `:id`, or the
     * sandbox the function names (routes that carry it elsewhere, such as a header).
     */
    owner?: boolean | ((req: FastifyRequest) => string | undefined | Promise<string | undefined>);
    /** The route acts on a volume's data, so it runs on the node that holds the volume (`:name`). */
    volumeOwner?: boolean;
    /** The route acts on what one node holds (a snapshot's image): the id of that node, or undefined to run here. */
    nodeOwner?: (req: FastifyRequest) => Promise<string | undefined>;
  }
}

/** Marks a request forwarded by another node; a node never forwards such a request again. */
export const FORWARDED_HEADER = 'x-prism-forwarded-by';

/**
 * Any node serves the whole API: a request on a route marked `config: { owner: true }` for a sandbox
 * owned by another alive node is forwarded to that node's API and its response streamed back as is
 * (NDJSON exec output included). Routes marked `volumeOwner` go to the node holding the volume
 * `:name` the same way. Sandboxes and volumes of dead nodes are answered here by the service, which
 * explains what can and cannot be done with them.
 */
export async function registerOwnerProxy(
  app: FastifyInstance,
  sandboxes: SandboxService,
  nodeId: string,
  tls?: { cert: Buffer; key: Buffer; ca: Buffer },
  volumes?: VolumeService,
): Promise<void> {
  await app.register(replyFrom, {
    // A forwarded exec may stream for as long as the command runs; the client's own timeouts apply.
    // Over TLS the owner must prove it holds a certificate of the cluster CA; this node shows its own.
    undici: { headersTimeout: 0, bodyTimeout: 0, ...(tls ? { connect: { ca: tls.ca, cert: tls.cert, key: tls.key } } : {}) },
    retryMethods: [],
    destroyAgent: true,
  });
  app.decorateRequest('ownerSandbox', undefined);
  app.addHook('preHandler', async (req, reply) => {
    const cfg = req.routeOptions.config;
    const params = req.params as { id?: string; name?: string } | undefined;
    let target: { what: string; node: string; address: string } | undefined;
    const sandboxId = typeof cfg?.owner === 'function' ? await cfg.owner(req) : cfg?.owner ? params?.id : undefined;
    if (sandboxId) {
      const loc = await sandboxes.locate(sandboxId).catch(() => undefined);
      // Unknown here: the route itself answers (each surface in its own words).
      if (!loc) return;
      if (loc.local || !loc.alive) {
        req.ownerSandbox = loc.sandbox;
        return;
      }
      target = { what: `sandbox '${loc.sandbox.name}'`, node: loc.node, address: loc.address };
    } else if (cfg?.nodeOwner) {
      const node = await cfg.nodeOwner(req).catch(() => undefined);
      if (!node || node === nodeId) return;
      const info = (await sandboxes.nodes()).find((n) => n.id === node);
      if (!info || info.status !== 'alive') return; // the route answers (the node is not reachable)
      target = { what: `what node ${info.name} holds`, node: info.name, address: info.address };
    } else if (cfg?.volumeOwner && params?.name && volumes) {
      const loc = await volumes.locate(params.name);
      if (loc.local || !loc.alive) return;
      target = { what: `volume '${params.name}'`, node: loc.node, address: loc.address };
    } else {
      return;
    }
    if (req.headers[FORWARDED_HEADER]) {
      throw new PrismError('UNAVAILABLE', `${target.what} moved while the request was forwarded; try again`, { retryAfterSec: 1 });
    }
    const { what, node, address } = target;
    // Bodies a route kept as bytes go as they came (reply-from would JSON-encode a JSON-typed Buffer);
    // one no parser read (multipart, read by the handler) goes as the request's own stream.
    const raw = Buffer.isBuffer(req.body) ? { body: req.body, contentType: req.headers['content-type'] ?? 'application/octet-stream' } : {};
    if (req.body === undefined && (req.headers['content-length'] || req.headers['transfer-encoding'])) req.body = req.raw;
    return reply.from(`${address}${req.url}`, {
      ...raw,
      rewriteRequestHeaders: (_req, headers) => ({ ...headers, [FORWARDED_HEADER]: nodeId }),
      onError: (r) => {
        void r
          .status(503)
          .header('retry-after', '1')
          .send({ error: { code: 'UNAVAILABLE', message: `node ${node} (${address}), which holds ${what}, did not answer; try again` } });
      },
    });
  });
}
