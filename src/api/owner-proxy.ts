import replyFrom from '@fastify/reply-from';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { Agent, request as undiciRequest } from 'undici';
import { PrismError } from '../core/errors.js';
import type { Sandbox } from '../core/types.js';
import type { CreateSandboxRequest, SandboxService } from '../service/sandbox-service.js';
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
    /**
     * The route is best served on the scheduler leader's node (a create: its scheduler places it at
     * once, with no `pending` record): sent on there unless this node leads or the request was
     * forwarded already. A leader that cannot be connected to is not waited for: the route runs here.
     * A function gives the create the request makes (undefined: not known before the route runs): a
     * create this node makes itself (SandboxService.takesDirectly, a direct create) is not sent on.
     */
    toLeader?: true | ((req: FastifyRequest) => CreateSandboxRequest | undefined);
  }
}

/** Marks a request forwarded by another node; a node never forwards such a request again. */
export const FORWARDED_HEADER = 'x-prism-forwarded-by';
/** The Host the client called, on a forwarded request (the forwarder's own Host header names this node). */
const FORWARDED_HOST_HEADER = 'x-prism-forwarded-host';

/**
 * The Host the client called: its own Host header, or for a request another node forwarded, the
 * Host it called that node by (answers that name an address to call back, as E2B's `domain`, need it).
 */
export function calledHost(req: FastifyRequest): string | undefined {
  const fwd = req.headers[FORWARDED_HOST_HEADER];
  if (req.headers[FORWARDED_HEADER] && typeof fwd === 'string') return fwd;
  return req.headers.host;
}

/** Headers that go with a request this node forwards: it is marked, and the Host the client called kept. */
function forwardingHeaders(req: FastifyRequest, nodeId: string): Record<string, string> {
  const host = calledHost(req);
  return { [FORWARDED_HEADER]: nodeId, ...(host ? { [FORWARDED_HOST_HEADER]: host } : {}) };
}

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
  /** The scheduler leader's node id as this node last saw it (Membership.leader), for `toLeader` routes. */
  leader?: () => string | undefined,
): Promise<void> {
  const toLeader = leader ? new LeaderForward(sandboxes, nodeId, leader, tls) : undefined;
  if (toLeader) app.addHook('onClose', () => toLeader.close());
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
    if (cfg?.toLeader) {
      // Asked only where the request could be sent on: a create's own path asks again (SandboxService).
      if (!toLeader || req.headers[FORWARDED_HEADER]) return;
      const create = typeof cfg.toLeader === 'function' ? cfg.toLeader(req) : undefined;
      if (create && sandboxes.takesDirectly(create)) return;
      if (await toLeader.forward(req, reply)) return reply;
      return;
    }
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
      const info = await aliveNode(sandboxes, node);
      if (!info) return; // the route answers (the node is not reachable)
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
      rewriteRequestHeaders: (_req, headers) => ({ ...headers, ...forwardingHeaders(req, nodeId) }),
      onError: (r) => {
        void r
          .status(503)
          .header('retry-after', '1')
          .send({ error: { code: 'UNAVAILABLE', message: `node ${node} (${address}), which holds ${what}, did not answer; try again` } });
      },
    });
  });
}

/** Node `id` with the address its API is called at, if it is alive. */
async function aliveNode(sandboxes: SandboxService, id: string): Promise<{ name: string; address: string } | undefined> {
  const info = (await sandboxes.nodes()).find((n) => n.id === id);
  return info && info.status === 'alive' && info.address ? { name: info.name, address: info.address } : undefined;
}

/** Headers of one connection, not of the request, and the length of a body that is encoded again: not sent on. */
const HOP_HEADERS = new Set(['host', 'connection', 'keep-alive', 'transfer-encoding', 'te', 'trailer', 'upgrade', 'proxy-authorization', 'proxy-connection', 'content-length']);

/** Errors that say a request never reached the other node (so running it here cannot run it twice). */
const NOT_CONNECTED = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EHOSTUNREACH', 'ENETUNREACH', 'EADDRNOTAVAIL', 'UND_ERR_CONNECT_TIMEOUT']);

/**
 * Sends `toLeader` requests on to the leader's node and its answer back as it came. The leader's
 * address is kept per leader id (read from the node records once, not per request) and dropped when
 * it cannot be connected to; then, and whenever no leader is known, the request runs here. Not
 * reply-from (as the owner routes): its errors end the request, where this one falls back to the route.
 */
class LeaderForward {
  private address?: { node: string; name: string; url: string };
  private readonly dispatcher: Agent;

  constructor(
    private readonly sandboxes: SandboxService,
    private readonly nodeId: string,
    private readonly leader: () => string | undefined,
    tls?: { cert: Buffer; key: Buffer; ca: Buffer },
  ) {
    // A create may pull an image for minutes: the client's own timeouts apply, as for owner routes.
    this.dispatcher = new Agent({ headersTimeout: 0, bodyTimeout: 0, ...(tls ? { connect: { ca: tls.ca, cert: tls.cert, key: tls.key } } : {}) });
  }

  /** Ends its connections to the leader (with the API server: nothing is waited for). */
  close(): Promise<void> {
    return this.dispatcher.destroy();
  }

  /** Answers the request with the leader's response (true), or leaves it to run here (false). */
  async forward(req: FastifyRequest, reply: FastifyReply): Promise<boolean> {
    const node = this.leader();
    if (!node || node === this.nodeId) return false;
    const to = await this.addressOf(node);
    if (!to) return false;
    // The caller's own headers (its credentials, whichever API it speaks), the body as parsed here.
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(req.headers)) if (typeof v === 'string' && !HOP_HEADERS.has(k)) headers[k] = v;
    headers['content-type'] = 'application/json';
    Object.assign(headers, forwardingHeaders(req, this.nodeId));
    let res;
    try {
      res = await undiciRequest(`${to.url}${req.url}`, { method: req.method as 'POST', headers, body: JSON.stringify(req.body ?? {}), dispatcher: this.dispatcher });
    } catch (e) {
      const code = (e as { code?: string }).code;
      if (code && NOT_CONNECTED.has(code)) {
        this.address = undefined;
        return false; // never reached it: made here instead (a pending record the next leader places)
      }
      throw new PrismError('UNAVAILABLE', `node ${to.name} (${to.url}), the scheduler leader, did not answer (${(e as Error).message}); the sandbox may have been created: list sandboxes before trying again`, { retryAfterSec: 1 });
    }
    const body = await res.body.text();
    const pass = ['content-type', 'retry-after'] as const;
    for (const h of pass) {
      const v = res.headers[h];
      if (typeof v === 'string') void reply.header(h, v);
    }
    await reply.code(res.statusCode).send(body);
    return true;
  }

  private async addressOf(node: string): Promise<{ node: string; name: string; url: string } | undefined> {
    if (this.address?.node === node) return this.address;
    const info = await aliveNode(this.sandboxes, node).catch(() => undefined);
    if (!info) return undefined;
    this.address = { node, name: info.name, url: info.address };
    return this.address;
  }
}
