import type { Static } from '@sinclair/typebox';
import type { FastifyInstance, FastifyReply } from 'fastify';
import { PrismError } from '../../core/errors.js';
import type { ExecRequest, ExecSession } from '../../service/exec-service.js';
import type { Logger } from '../../service/logger.js';
import { StreamEncoder, encodeOutput } from '../../service/output-encoding.js';
import { ExecBody, ExecResultSchema, IdParams, withErrors } from '../schemas.js';
import type { ApiServices } from '../server.js';

type Body = Static<typeof ExecBody>;

function toRequest(body: Body): ExecRequest {
  if ((body.command === undefined) === (body.cmd === undefined)) {
    throw new PrismError('INVALID_ARGUMENT', "give exactly one of 'command' (a shell string) or 'cmd' (an argv array)");
  }
  const req: ExecRequest = { argv: body.cmd ?? ['/bin/sh', '-c', body.command!] };
  if (body.env) req.env = body.env;
  if (body.cwd !== undefined) req.cwd = body.cwd;
  if (body.timeoutSec !== undefined) req.timeoutSec = body.timeoutSec;
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
        description: 'Runs a command. With `Accept: application/x-ndjson` the output streams as NDJSON events.',
        params: IdParams,
        body: ExecBody,
        response: withErrors({ 200: ExecResultSchema }, 404, 412, 413),
      },
    },
    async (req, reply) => {
      const execReq = toRequest(req.body);
      if ((req.headers.accept ?? '').includes('application/x-ndjson')) {
        return streamExec(svc, req.params.id, execReq, reply, log);
      }
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      const session = await svc.exec.exec(req.params.id, execReq, { stdout: (b) => out.push(b), stderr: (b) => err.push(b) });
      req.raw.once('close', () => {
        if (!reply.sent) session.cancel();
      });
      const r = await session.done;
      return { id: session.id, ...r, ...encodeOutput(Buffer.concat(out), Buffer.concat(err)) };
    },
  );
}

/** NDJSON: one event per output chunk, then an `exit` event. A client that goes away kills the command. */
async function streamExec(svc: ApiServices, id: string, execReq: ExecRequest, reply: FastifyReply, log: Logger) {
  const res = reply.raw;
  const early: string[] = [];
  let open = false;
  const write = (o: object) => {
    const line = `${JSON.stringify(o)}\n`;
    if (open) res.write(line);
    else early.push(line);
  };
  const encoders = { stdout: new StreamEncoder(), stderr: new StreamEncoder() };
  const emit = (type: 'stdout' | 'stderr', e: { data: string; encoding: string } | undefined) => {
    if (e) write(e.encoding === 'base64' ? { type, data: e.data, encoding: 'base64' } : { type, data: e.data });
  };
  // Errors before the command starts (unknown sandbox, not running) are ordinary JSON error responses.
  const session: ExecSession = await svc.exec.exec(id, execReq, {
    stdout: (b) => emit('stdout', encoders.stdout.push(b)),
    stderr: (b) => emit('stderr', encoders.stderr.push(b)),
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
    write({ type: 'error', error: { code: 'INTERNAL', message: (e as Error).message } });
  } finally {
    finished = true;
    res.end();
  }
}
