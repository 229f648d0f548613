import { Type, type Static } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import { LIFECYCLE_EVENT_TYPES, LifecycleEventSchema, type LifecycleEventWire } from '../../core/wire.js';
import type { LifecycleEventType } from '../../service/lifecycle-events.js';
import { withErrors } from '../schemas.js';
import type { ApiServices } from '../server.js';

const EventsQuery = Type.Object({
  sandbox: Type.Optional(Type.String({ minLength: 1, maxLength: 128, description: 'only this sandbox (id or name); node events are then left out' })),
  type: Type.Optional(Type.String({ maxLength: 512, description: `only these types, comma-separated: ${LIFECYCLE_EVENT_TYPES.join(', ')}` })),
});

/** A comment line every so often keeps proxies from closing a quiet stream (and finds a gone client). */
const KEEPALIVE_MS = 15_000;

export function registerEventRoutes(app: FastifyInstance, svc: ApiServices): void {
  app.get<{ Querystring: Static<typeof EventsQuery> }>(
    '/events',
    {
      schema: {
        tags: ['system'],
        description:
          'Sandbox lifecycle events from now on, live, until the client goes: NDJSON (one event per line), or server-sent events with `Accept: text/event-stream`. ' +
          'An event is a sandbox appearing (`created`), each change of its status (the new status), and its removal (`deleted`); and a node whose membership ended (`node-dead`, without a sandbox). ' +
          'Every node streams the events of the whole cluster. With `sandbox`, node events are left out.',
        querystring: EventsQuery,
        // 200: the schema of each event (each NDJSON line, or each `data:` of the server-sent events).
        response: withErrors({ 200: LifecycleEventSchema }, 400, 401, 429),
      },
    },
    async (req, reply) => {
      const types = req.query.type ? (req.query.type.split(',').map((t) => t.trim()).filter(Boolean) as LifecycleEventType[]) : undefined;
      const sse = (req.headers.accept ?? '').includes('text/event-stream');
      const lines: string[] = [];
      // Subscribed (and the filter checked) before the answer starts: a bad type is a plain 400.
      let write: (s: string) => void = (s) => void lines.push(s);
      const format = (e: LifecycleEventWire) => (sse ? `event: ${e.type}\ndata: ${JSON.stringify(e)}\n\n` : `${JSON.stringify(e)}\n`);
      const unsubscribe = svc.lifecycle.subscribe({ ...(req.query.sandbox ? { sandbox: req.query.sandbox } : {}), ...(types ? { types } : {}) }, (e) => write(format(e)));
      reply.hijack();
      const res = reply.raw;
      res.writeHead(200, { 'content-type': sse ? 'text/event-stream' : 'application/x-ndjson', 'cache-control': 'no-store', 'x-accel-buffering': 'no' });
      res.flushHeaders();
      write = (s) => {
        if (!res.write(s) && res.writableLength > 1 << 20) res.destroy(); // a client that stopped reading is cut, not buffered for
      };
      for (const l of lines.splice(0)) write(l);
      const keepalive = setInterval(() => write(sse ? ': keepalive\n\n' : '\n'), KEEPALIVE_MS);
      const end = () => {
        clearInterval(keepalive);
        unsubscribe();
      };
      res.on('close', end);
      req.raw.on('close', end);
    },
  );
}
