import { Type } from '@sinclair/typebox';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { RawData, WebSocket } from 'ws';
import { PrismError, isPrismError } from '../../core/errors.js';
import type { Logger } from '../../service/logger.js';
import { PTY_SIGNALS, type PtyRequest, type PtySession, type PtySignal } from '../../service/pty-service.js';
import { FORWARDED_HEADER } from '../owner-proxy.js';
import { dialOwner, type OwnerSocket } from '../owner-socket.js';
import { bearerToken } from '../auth.js';
import { withErrors } from '../schemas.js';
import type { ApiServices } from '../server.js';

const Dim = Type.String({ pattern: '^[0-9]{1,5}$' });
const PtyQuery = Type.Object(
  {
    cols: Type.Optional(Dim),
    rows: Type.Optional(Dim),
    cmd: Type.Optional(Type.String({ minLength: 1, maxLength: 1 << 16, description: 'The command as a JSON array of strings (argv); absent: the login shell' })),
  },
  { additionalProperties: false },
);
type PtyRoute = { Params: { id: string }; Querystring: { cols?: string; rows?: string; cmd?: string } };

/** Output the client has not taken yet past which the terminal's output is paused (the command blocks). */
const HIGH_WATER = 1 << 20;
const LOW_WATER = 256 << 10;

/** What the route prepared before the upgrade: a local terminal, or a socket to the owning node. */
type Prepared = { session: PtySession } | { owner: OwnerSocket };
const prepared = new WeakMap<FastifyRequest, Prepared>();

function toRequest(q: PtyRoute['Querystring']): PtyRequest {
  const req: PtyRequest = { cols: q.cols === undefined ? 80 : Number(q.cols), rows: q.rows === undefined ? 24 : Number(q.rows) };
  if (q.cmd !== undefined) {
    let argv: unknown;
    try {
      argv = JSON.parse(q.cmd);
    } catch {
      argv = undefined;
    }
    if (!Array.isArray(argv) || argv.length === 0 || argv.length > 4096 || !argv.every((a) => typeof a === 'string')) {
      throw new PrismError('INVALID_ARGUMENT', 'cmd must be a JSON array of strings (argv), e.g. ["python3","-q"]');
    }
    req.argv = argv as string[];
  }
  return req;
}

/**
 * `GET /sandboxes/:id/pty`: an interactive terminal over a WebSocket (docs/api.md). Binary frames are
 * terminal bytes both ways; text frames are JSON control messages. Everything that can fail (auth,
 * unknown sandbox, not running, bad size, an owner node that refuses) fails before the upgrade, as a
 * plain HTTP error. Closing the socket kills the command and everything it started.
 */
export function registerPtyRoutes(app: FastifyInstance, svc: ApiServices, log: Logger, tls?: { cert: Buffer; key: Buffer; ca: Buffer }): void {
  app.route<PtyRoute>({
    method: 'GET',
    url: '/sandboxes/:id/pty',
    schema: {
      tags: ['exec'],
      description: 'Interactive terminal: upgrade to a WebSocket (binary frames = terminal bytes, text frames = JSON control; see docs/api.md).',
      params: Type.Object({ id: Type.String({ minLength: 1, maxLength: 256 }) }),
      querystring: PtyQuery,
      response: withErrors({}, 404, 412, 503),
    },
    preHandler: async (req, reply) => {
      if (!req.ws) throw new PrismError('INVALID_ARGUMENT', 'this endpoint speaks WebSocket: send an Upgrade request (see docs/api.md)');
      const ptyReq = toRequest(req.query);
      const loc = await svc.sandboxes.locate(req.params.id);
      if (loc.local || !loc.alive) {
        const session = await svc.pty.open(req.params.id, ptyReq);
        prepared.set(req, { session });
        // The client may vanish before the upgrade completes; then nobody would ever close the session.
        req.raw.socket.once('close', () => session.close());
        return;
      }
      if (req.headers[FORWARDED_HEADER]) {
        throw new PrismError('UNAVAILABLE', `sandbox '${loc.sandbox.name}' moved while the request was forwarded; try again`, { retryAfterSec: 1 });
      }
      const headers: Record<string, string> = { [FORWARDED_HEADER]: svc.nodeId };
      const bearer = bearerToken(req.headers);
      if (bearer) headers.authorization = `Bearer ${bearer}`;
      const dial = await dialOwner(`${loc.address}${req.url}`, headers, tls).catch((e: Error) => {
        throw new PrismError('UNAVAILABLE', `node ${loc.node} (${loc.address}), which runs sandbox '${loc.sandbox.name}', did not answer: ${e.message}; try again`, { retryAfterSec: 1 });
      });
      if (!dial.ok) return reply.status(dial.status).header('content-type', dial.contentType).send(dial.body);
      prepared.set(req, { owner: dial.socket });
      req.raw.socket.once('close', () => dial.socket.abandon());
    },
    handler: async () => {
      throw new PrismError('INVALID_ARGUMENT', 'this endpoint speaks WebSocket: send an Upgrade request (see docs/api.md)');
    },
    wsHandler: (socket: WebSocket, req: FastifyRequest) => {
      const p = prepared.get(req);
      prepared.delete(req);
      if (!p) return socket.close(1011, 'no terminal prepared');
      if ('owner' in p) return p.owner.splice(socket);
      bridge(socket, p.session, log);
    },
  });
}

function sendJson(ws: WebSocket, msg: object): void {
  if (ws.readyState === ws.OPEN) ws.send(JSON.stringify(msg));
}

/** Applies one JSON control message from the client; throws INVALID_ARGUMENT for anything else. */
function control(session: PtySession, text: string): void {
  let msg: { type?: unknown; cols?: unknown; rows?: unknown; signal?: unknown };
  try {
    msg = JSON.parse(text) as typeof msg;
  } catch {
    throw new PrismError('INVALID_ARGUMENT', 'text frames must be JSON control messages');
  }
  if (msg?.type === 'resize') return session.resize(Number(msg.cols), Number(msg.rows));
  if (msg?.type === 'signal') {
    if (!PTY_SIGNALS.includes(msg.signal as PtySignal)) {
      throw new PrismError('INVALID_ARGUMENT', `signal must be one of ${PTY_SIGNALS.join(', ')}`);
    }
    return session.signal(msg.signal as PtySignal);
  }
  throw new PrismError('INVALID_ARGUMENT', "unknown control message: want {type:'resize',cols,rows} or {type:'signal',signal}");
}

const asBuffer = (d: RawData): Buffer => (Buffer.isBuffer(d) ? d : Array.isArray(d) ? Buffer.concat(d) : Buffer.from(d));

/** Terminal bytes and control messages between a client's socket and a local session. */
function bridge(ws: WebSocket, session: PtySession, log: Logger): void {
  let paused = false;
  session.output.on('data', (b: Buffer) => {
    if (ws.readyState !== ws.OPEN) return;
    ws.send(b, { binary: true }, () => {
      if (paused && ws.bufferedAmount < LOW_WATER) {
        paused = false;
        session.output.resume();
      }
    });
    if (ws.bufferedAmount > HIGH_WATER) {
      paused = true;
      session.output.pause();
    }
  });
  ws.on('message', (data, isBinary) => {
    if (isBinary) return session.write(asBuffer(data));
    try {
      control(session, asBuffer(data).toString('utf8'));
    } catch (e) {
      const err = isPrismError(e) ? e : new PrismError('INTERNAL', (e as Error).message);
      sendJson(ws, { type: 'error', error: { code: err.code, message: err.message } });
    }
  });
  ws.on('close', () => session.close());
  ws.on('error', () => undefined); // surfaces as 'close'
  session.done.then(
    (exit) => {
      sendJson(ws, { type: 'exit', exitCode: exit.exitCode, signal: exit.signal ?? null });
      if (ws.readyState === ws.OPEN) ws.close(1000, 'exited');
    },
    (e: unknown) => {
      log.error({ err: e }, 'terminal session failed');
      sendJson(ws, { type: 'error', error: { code: 'INTERNAL', message: (e as Error).message } });
      if (ws.readyState === ws.OPEN) ws.close(1011, 'internal error');
    },
  );
}
