import { drained, errorEvent } from '../ndjson.js';
import type { Static } from '@sinclair/typebox';
import type { FastifyInstance, FastifyReply } from 'fastify';
import { PrismError } from '../../core/errors.js';
import type { ExecRequest, ExecSession } from '../../service/exec-service.js';
import type { Logger } from '../../service/logger.js';
import type { SandboxRef } from '../../service/sandbox-service.js';
import { CappedBuffer } from '../../service/capped-buffer.js';
import { StreamEncoder, encodeOutput } from '../../service/output-encoding.js';
import { ExecBody, ExecResultSchema, IdParams, ProcessSchema, withErrors } from '../schemas.js';
import type { ApiServices } from '../server.js';

type Body = Static<typeof ExecBody>;

/** Output bytes per stream in a plain (non-streaming) exec reply; docs/api.md. */
export const REPLY_BYTES_PER_STREAM = 16 << 20;

function toRequest(body: Body): ExecRequest {
  if ((body.command === undefined) === (body.cmd === undefined)) {
    throw new PrismError('INVALID_ARGUMENT', "give exactly one of 'command' (a shell string) or 'cmd' (an argv array)");
  }
  const req: ExecRequest = { argv: body.cmd ?? ['/bin/sh', '-c', body.command!] };
  if (body.env) req.env = body.env;
  if (body.cwd !== undefined) req.cwd = body.cwd;
  if (body.timeoutSec !== undefined) req.timeoutSec = body.timeoutSec;
  if (body.user === 'root') req.asRoot = true;
  if (body.stdin !== undefined) req.stdin = Buffer.from(body.stdin, body.stdinEncoding === 'base64' ? 'base64' : 'utf8');
  return req;
}

export function registerExecRoutes(app: FastifyInstance, svc: ApiServices, log: Logger): void {
  app.post<{ Params: { id: string }; Body: Body }>(
    '/sandboxes/:id/exec',
    {
      config: { owner: true },
      schema: {
        tags: ['exec'],
        description: 'Runs a command. With `Accept: application/x-ndjson` the output streams as NDJSON events. With `background: true` it starts a background process and answers 201 at once.',
        params: IdParams,
        body: ExecBody,
        response: withErrors({ 200: ExecResultSchema, 201: ProcessSchema }, 404, 412, 413, 429),
      },
    },
    async (req, reply) => {
      const execReq = toRequest(req.body);
      if (req.body.background) return reply.status(201).send(await svc.processes.start(req.params.id, execReq));
      const target = req.ownerSandbox ?? req.params.id;
      if ((req.headers.accept ?? '').includes('application/x-ndjson')) {
        return streamExec(svc, target, execReq, reply, log);
      }
      // A plain reply holds the output in memory twice (bytes, then JSON): cut it rather than let one
      // command's output grow the daemon without bound. NDJSON streaming delivers all of it.
      const out = new CappedBuffer(REPLY_BYTES_PER_STREAM);
      const err = new CappedBuffer(REPLY_BYTES_PER_STREAM);
      const session = await svc.exec.exec(target, execReq, { stdout: (b) => out.push(b), stderr: (b) => err.push(b) });
      req.raw.once('close', () => {
        if (!reply.sent) session.cancel();
      });
      const r = await session.done;
      const body = { id: session.id, ...r, ...encodeOutput(out.bytes(), err.bytes()) };
      return out.truncated || err.truncated ? { ...body, truncated: true } : body;
    },
  );
}

/** NDJSON: one event per output chunk, then an `exit` event. A client that goes away kills the command. */
async function streamExec(svc: ApiServices, id: SandboxRef, execReq: ExecRequest, reply: FastifyReply, log: Logger) {
  const res = reply.raw;
  const early: string[] = [];
  let open = false;
  const write = (o: object): boolean => {
    const line = `${JSON.stringify(o)}\n`;
    if (open) return res.write(line);
    early.push(line);
    return true;
  };
  const encoders = { stdout: new StreamEncoder(), stderr: new StreamEncoder() };
  const emit = (type: 'stdout' | 'stderr', e: { data: string; encoding: string } | undefined): boolean => {
    if (!e) return true;
    return write(e.encoding === 'base64' ? { type, data: e.data, encoding: 'base64' } : { type, data: e.data });
  };
  // Errors before the command starts (unknown sandbox, not running) are ordinary JSON error responses.
  const session: ExecSession = await svc.exec.exec(id, execReq, {
    stdout: (b) => emit('stdout', encoders.stdout.push(b)),
    stderr: (b) => emit('stderr', encoders.stderr.push(b)),
    // The client reads slower than the command writes: wait for the socket to drain (or close).
    drained: () => drained(res),
  });
  reply.hijack();
  res.writeHead(200, { 'content-type': 'application/x-ndjson', 'cache-control': 'no-store', 'x-exec-id': session.id });
  open = true;
  for (const line of early.splice(0)) res.write(line);
  let finished = false;
  res.once('close', () => {
    if (!finished) session.cancel();
  });
  try {
    const r = await session.done;
    emit('stdout', encoders.stdout.flush());
    emit('stderr', encoders.stderr.flush());
    write({ type: 'exit', id: session.id, ...r });
  } catch (e) {
    log.error({ err: e }, 'exec stream failed');
    write(errorEvent(e));
  } finally {
    finished = true;
    res.end();
  }
}
