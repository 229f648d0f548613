import { drained, errorEvent } from '../ndjson.js';
import { Type, type Static } from '@sinclair/typebox';
import type { FastifyInstance, FastifyReply } from 'fastify';
import { PrismError } from '../../core/errors.js';
import type { Logger } from '../../service/logger.js';
import { encodeChunk, encodeOutput } from '../../service/output-encoding.js';
import type { OutputStream } from '../../service/process-service.js';
import { OutputQuery, ProcessOutputSchema, ProcessParams, ProcessSchema, IdParams, SignalBody, StdinBody, WaitQuery, withErrors } from '../schemas.js';
import type { ApiServices } from '../server.js';

type Params = { Params: Static<typeof ProcessParams> };

/** Longest a single wait request holds (docs/api.md); clients loop for longer waits. */
export const MAX_WAIT_SEC = 300;
const DEFAULT_WAIT_SEC = 30;

/** Aborts when the client goes away before the answer was sent. */
function abortOnClose(reply: FastifyReply): AbortSignal {
  const ac = new AbortController();
  reply.raw.once('close', () => {
    if (!reply.raw.writableFinished) ac.abort();
  });
  return ac.signal;
}

function offsetsOf(q: Static<typeof OutputQuery>): Record<OutputStream, number> {
  return { stdout: Number(q.stdoutOffset ?? 0), stderr: Number(q.stderrOffset ?? 0) };
}

/** Background processes: `POST /sandboxes/:id/exec {background: true}` starts them (exec-routes.ts). */
export function registerProcessRoutes(app: FastifyInstance, svc: ApiServices, log: Logger): void {
  const owner = { owner: true };
  const tags = ['processes'];

  app.get<{ Params: { id: string } }>(
    '/sandboxes/:id/processes',
    { config: owner, schema: { tags, params: IdParams, response: withErrors({ 200: Type.Object({ processes: Type.Array(ProcessSchema) }) }, 404) } },
    async (req) => ({ processes: await svc.processes.list(req.params.id) }),
  );

  app.get<Params>(
    '/sandboxes/:id/processes/:pid',
    { config: owner, schema: { tags, params: ProcessParams, response: withErrors({ 200: ProcessSchema }, 404) } },
    (req) => svc.processes.get(req.params.id, req.params.pid),
  );

  app.get<Params & { Querystring: Static<typeof OutputQuery> }>(
    '/sandboxes/:id/processes/:pid/output',
    {
      config: owner,
      schema: {
        tags,
        description: 'Output since the given offsets. With `follow=true` and `Accept: application/x-ndjson` it streams until the process exits.',
        params: ProcessParams,
        querystring: OutputQuery,
        response: withErrors({ 200: ProcessOutputSchema }, 404),
      },
    },
    async (req, reply) => {
      const { id, pid } = req.params;
      const offsets = offsetsOf(req.query);
      if (req.query.follow === 'true' || req.query.follow === '1') {
        if (!(req.headers.accept ?? '').includes('application/x-ndjson')) {
          throw new PrismError('INVALID_ARGUMENT', 'follow=true streams NDJSON: send Accept: application/x-ndjson');
        }
        return followOutput(svc, id, pid, offsets, reply, log);
      }
      const o = await svc.processes.output(id, pid, offsets);
      return {
        ...encodeOutput(o.stdout.data, o.stderr.data),
        stdoutOffset: o.stdout.next,
        stderrOffset: o.stderr.next,
        stdoutDropped: o.stdout.dropped,
        stderrDropped: o.stderr.dropped,
        process: o.info,
      };
    },
  );

  app.post<Params & { Body: Static<typeof StdinBody> }>(
    '/sandboxes/:id/processes/:pid/stdin',
    { config: owner, schema: { tags, params: ProcessParams, body: StdinBody, response: withErrors({ 200: ProcessSchema }, 404, 412, 413) } },
    (req) => {
      const b = req.body ?? {};
      const data = Buffer.from(b.data ?? '', b.encoding === 'base64' ? 'base64' : 'utf8');
      return svc.processes.writeStdin(req.params.id, req.params.pid, data, b.close ?? false);
    },
  );

  app.post<Params & { Body: Static<typeof SignalBody> }>(
    '/sandboxes/:id/processes/:pid/signal',
    { config: owner, schema: { tags, params: ProcessParams, body: SignalBody, response: withErrors({ 200: ProcessSchema }, 404, 412) } },
    (req) => svc.processes.signal(req.params.id, req.params.pid, req.body.signal),
  );

  app.post<Params & { Querystring: Static<typeof WaitQuery> }>(
    '/sandboxes/:id/processes/:pid/wait',
    {
      config: owner,
      schema: {
        tags,
        description: `Waits up to timeoutSec (default ${DEFAULT_WAIT_SEC}, at most ${MAX_WAIT_SEC}) for the process to exit and answers it; status "running" when it did not.`,
        params: ProcessParams,
        querystring: WaitQuery,
        response: withErrors({ 200: ProcessSchema }, 404),
      },
    },
    (req, reply) => {
      const sec = Number(req.query.timeoutSec ?? DEFAULT_WAIT_SEC);
      if (sec > MAX_WAIT_SEC) throw new PrismError('INVALID_ARGUMENT', `timeoutSec must be at most ${MAX_WAIT_SEC}`);
      return svc.processes.wait(req.params.id, req.params.pid, sec * 1000, abortOnClose(reply));
    },
  );

  app.delete<Params>(
    '/sandboxes/:id/processes/:pid',
    { config: owner, schema: { tags, params: ProcessParams, response: withErrors({ 204: Type.Null() }, 404) } },
    async (req, reply) => {
      await svc.processes.remove(req.params.id, req.params.pid);
      return reply.status(204).send();
    },
  );
}

/**
 * NDJSON: `{"type":"stdout"|"stderr","data","encoding"?,"offset","dropped"?}` per piece, then
 * `{"type":"exit", ...Process, "stdoutOffset", "stderrOffset"}`. A client that goes away stops the
 * stream, never the process.
 */
async function followOutput(svc: ApiServices, id: string, pid: string, offsets: Record<OutputStream, number>, reply: FastifyReply, log: Logger) {
  await svc.processes.get(id, pid); // unknown process: an ordinary JSON 404 before the stream starts
  const res = reply.raw;
  const signal = abortOnClose(reply);
  reply.hijack();
  res.writeHead(200, { 'content-type': 'application/x-ndjson', 'cache-control': 'no-store' });
  const at = { ...offsets };
  try {
    for await (const ev of svc.processes.follow(id, pid, offsets, signal)) {
      let line: object;
      if (ev.type === 'exit') {
        line = { type: 'exit', ...ev.info, stdoutOffset: at.stdout, stderrOffset: at.stderr };
      } else {
        const e = encodeChunk(ev.read.data);
        at[ev.type] = ev.read.next;
        line = { type: ev.type, data: e.data, ...(e.encoding === 'base64' ? { encoding: 'base64' } : {}), offset: ev.read.from, ...(ev.read.dropped ? { dropped: ev.read.dropped } : {}) };
      }
      if (!res.write(`${JSON.stringify(line)}\n`)) await drained(res);
    }
  } catch (e) {
    log.error({ err: e }, 'process output stream failed');
    res.write(`${JSON.stringify(errorEvent(e))}\n`);
  } finally {
    res.end();
  }
}
