import { createHash, timingSafeEqual } from 'node:crypto';
import { Readable } from 'node:stream';
import { createGunzip } from 'node:zlib';
import multipart from '@fastify/multipart';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { PrismError, httpStatusForCode } from '../core/errors.js';
import type { ProcessSignal, Sandbox } from '../core/types.js';
import type { FileService } from '../service/file-service.js';
import type { Logger } from '../service/logger.js';
import { checkSize } from '../service/pty-service.js';
import type { SandboxService } from '../service/sandbox-service.js';
import { ConnectError, ServerStream, connectTimeoutMs, parseStreamRequest, sendUnaryError } from './connect-protocol.js';
import { EnvdFilesystem, resolvePath, type Caller } from './envd-filesystem.js';
import { CodeInterpreterError, type CodeInterpreters } from './code-interpreter.js';
import { EnvdProcesses, type Selector } from './envd-process.js';
import { e2bError } from './control-routes.js';

/**
 * The in-sandbox surface E2B's SDK calls envd (E2B_SANDBOX_URL = <prism>/e2b/envd, port 49983), served by
 * prismd on the node that owns the sandbox: the Connect Process and Filesystem services and the REST
 * `/files` and `/health`. The sandbox is named by `E2b-Sandbox-Id`; every call but /health needs the
 * sandbox's own access token (X-Access-Token, or a signed /files URL), never the API key.
 */

export const ENVD_PORT = 49983;
export const CODE_INTERPRETER_PORT = 49999;

export interface EnvdDeps {
  sandboxes: SandboxService;
  codeInterpreters: CodeInterpreters;
  files: FileService;
  processes: EnvdProcesses;
  /** Largest `Connect-Timeout-Ms` a process may live by, in seconds (prismd's exec timeout cap). */
  maxTimeoutSec: number;
  log: Logger;
}

/** Sandbox id a request names (header), for routing it to the owner node. */
export function sandboxIdOf(req: FastifyRequest): string | undefined {
  const h = req.headers['e2b-sandbox-id'];
  return typeof h === 'string' && h ? h : undefined;
}

function portOf(req: FastifyRequest): number {
  const h = req.headers['e2b-sandbox-port'];
  return typeof h === 'string' && /^[0-9]{1,5}$/.test(h) ? Number(h) : ENVD_PORT;
}

/** Constant-time equality of two secrets. */
/**
 * The running sandbox an envd request names, or undefined (the caller answers E2B's 502). A paused one
 * is resumed first when it was made with autoResume (E2B's `autoResume: {enabled: true}`); otherwise,
 * as on E2B, it answers as not found until a connect resumes it.
 */
export async function runningSandbox(sandboxes: SandboxService, id: string): Promise<Sandbox | undefined> {
  const sb = await sandboxes.get(id).catch(() => undefined);
  if (!sb) return undefined;
  if (sb.status === 'running') return sb;
  if ((sb.status === 'paused' || sb.status === 'resuming') && sb.autoResume !== false) return sandboxes.resume(sb.id).catch(() => undefined);
  return undefined;
}

export function sameSecret(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/** `v1_` + unpadded base64 of sha256(path:operation:user:token[:expiration]), as the SDK signs URLs. */
export function fileSignature(path: string, op: 'read' | 'write', user: string, token: string, expiration?: number): string {
  const text = `${path}:${op}:${user}:${token}${expiration === undefined ? '' : `:${expiration}`}`;
  return `v1_${createHash('sha256').update(text).digest('base64').replace(/=+$/, '')}`;
}

/** A request's user: the Basic authorization (RPC) or `username` (REST); absent = the default user. */
function userOf(req: FastifyRequest): string | undefined {
  const auth = req.headers.authorization;
  if (auth?.startsWith('Basic ')) {
    const decoded = Buffer.from(auth.slice(6), 'base64').toString('utf8');
    const name = decoded.split(':')[0];
    return name || undefined;
  }
  const q = (req.query as { username?: string } | undefined)?.username;
  return q || undefined;
}

/**
 * Who the call runs as: `root`, or the sandbox's own user (E2B's `user` is that default user). Any
 * other name is refused as envd refuses unknown users.
 */
function callerOf(sb: Sandbox, user: string | undefined): Caller {
  if (user === 'root') return { sandboxId: sb.id, asRoot: true, home: '/root' };
  const own = sb.user?.split(':')[0];
  if (user !== undefined && user !== 'user' && user !== own) {
    throw new ConnectError('unauthenticated', `user '${user}' does not exist in this sandbox (root, or its default user)`);
  }
  return { sandboxId: sb.id, asRoot: false, home: sb.workdir || '/' };
}

export async function registerEnvdRoutes(app: FastifyInstance, deps: EnvdDeps): Promise<void> {
  const { sandboxes, files } = deps;
  const fs = new EnvdFilesystem(files);
  const procs = deps.processes;

  // Stream requests are one envelope; unary ones JSON (parsed here, so bad JSON is a Connect error).
  app.addContentTypeParser('application/connect+json', { parseAs: 'buffer' }, (_req, body, done) => done(null, body));
  app.removeContentTypeParser('application/json');
  // Kept as bytes: forwarded to an owner node as they came (a string would be re-encoded as JSON).
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, (_req, body, done) => done(null, body));
  // Uploads as multipart or one raw body (e2b >= envd 0.5.7), gzip or not, streamed through.
  await fileBodyParsers(app);

  /** The sandbox a request names, running and reachable with its token; 502 like E2B's proxy when gone. */
  const sandboxFor = async (req: FastifyRequest, reply: FastifyReply, opts: { signed?: { path: string; op: 'read' | 'write' } } = {}): Promise<Sandbox | undefined> => {
    const id = sandboxIdOf(req);
    const gone = (message: string) => void reply.status(502).type('application/json').send({ sandboxId: id ?? '', message, code: 502 });
    if (!id) return gone('no sandbox named: send the E2b-Sandbox-Id header'), undefined;
    const sb = await runningSandbox(sandboxes, id);
    if (!sb) return gone('The sandbox was not found'), undefined;
    const token = req.headers['x-access-token'];
    const secret = sb.secrets?.access;
    if (!secret) return void e2bError(reply, 401, 'this sandbox was made before access tokens; it is not reachable through the E2B gateway'), undefined;
    if (typeof token === 'string' && sameSecret(token, secret)) return sb;
    if (opts.signed && signedBy(req, opts.signed.path, opts.signed.op, secret)) return sb;
    return void e2bError(reply, 401, 'missing or invalid access token (X-Access-Token: the envdAccessToken the create returned)'), undefined;
  };

  // Port 49999 is the code interpreter's surface, 49983 envd's; each answers only its own paths.
  const CI_PATHS = /^\/(execute|contexts)(\/|$|\?)/;
  app.addHook('onRequest', async (req, reply) => {
    const port = portOf(req);
    const sub = req.url.split('?')[0]!.replace(/^\/e2b\/envd/, '');
    if (port === CODE_INTERPRETER_PORT) {
      if (!CI_PATHS.test(sub)) return reply.status(404).type('text/plain').send(`no route ${req.method} ${sub} on the code interpreter (port 49999)`);
      return;
    }
    if (port !== ENVD_PORT) {
      return e2bError(reply, 501, `port ${port} is reached through <port>-<sandbox id>.<domain> host routing, which is not implemented yet (docs/e2b.md)`);
    }
    if (CI_PATHS.test(sub)) return e2bError(reply, 404, `${sub} is served on the code interpreter's port (E2b-Sandbox-Port: 49999)`);
  });

  app.get('/health', async (req, reply) => {
    const id = sandboxIdOf(req);
    const sb = id ? await runningSandbox(sandboxes, id) : undefined;
    if (!sb) return reply.status(502).send({ sandboxId: id ?? '', message: 'The sandbox was not found', code: 502 });
    return reply.status(204).send();
  });

  // --- Connect RPCs ----------------------------------------------------------------------------------

  type Unary = (sb: Sandbox, caller: () => Caller, msg: Record<string, unknown>) => Promise<unknown>;
  type Stream = (sb: Sandbox, caller: () => Caller, msg: Record<string, unknown>, out: ServerStream, req: FastifyRequest) => Promise<void>;
  const unary: Record<string, Unary> = {
    'process.Process/List': async (sb) => ({ processes: await procs.list(sb.id) }),
    'process.Process/SendInput': async (sb, _c, m) => {
      const input = (m.input ?? {}) as { stdin?: string; pty?: string };
      await procs.sendStdin(sb.id, selector(m), Buffer.from(input.pty ?? input.stdin ?? '', 'base64'));
      return {};
    },
    'process.Process/CloseStdin': async (sb, _c, m) => (await procs.closeStdin(sb.id, selector(m)), {}),
    'process.Process/SendSignal': async (sb, _c, m) => (await procs.signal(sb.id, selector(m), signalOf(m.signal)), {}),
    'process.Process/Update': async (sb, _c, m) => {
      const size = ptySize(m.pty);
      if (size) await procs.resize(sb.id, selector(m), size.cols, size.rows);
      return {};
    },
    'filesystem.Filesystem/Stat': (_sb, c, m) => fs.stat(c(), str(m.path, 'path')),
    'filesystem.Filesystem/ListDir': (_sb, c, m) => fs.listDir(c(), str(m.path, 'path'), m.depth === undefined ? 1 : Number(m.depth)),
    'filesystem.Filesystem/MakeDir': (_sb, c, m) => fs.makeDir(c(), str(m.path, 'path')),
    'filesystem.Filesystem/Move': (_sb, c, m) => fs.move(c(), str(m.source, 'source'), str(m.destination, 'destination')),
    'filesystem.Filesystem/Remove': (_sb, c, m) => fs.remove(c(), str(m.path, 'path')),
  };
  for (const m of ['CreateWatcher', 'GetWatcherEvents', 'RemoveWatcher']) {
    unary[`filesystem.Filesystem/${m}`] = async () => {
      throw new ConnectError('unimplemented', 'directory watching is not implemented yet in Prism (docs/e2b.md)');
    };
  }

  const streams: Record<string, Stream> = {
    'process.Process/Start': async (sb, caller, m, out, req) => {
      const p = (m.process ?? {}) as { cmd?: string; args?: string[]; envs?: Record<string, string>; cwd?: string };
      const tty = ptySize(m.pty);
      const c = caller();
      const cmd = str(p.cmd, 'process.cmd');
      const args = Array.isArray(p.args) ? p.args.map(String) : [];
      const envs = p.envs && typeof p.envs === 'object' ? p.envs : {};
      const ms = connectTimeoutMs(req.headers['connect-timeout-ms']);
      if (ms !== undefined && ms / 1000 > deps.maxTimeoutSec) {
        throw new ConnectError('invalid_argument', `a process may run at most ${deps.maxTimeoutSec} s here (prismd --max-exec-timeout); asked ${Math.ceil(ms / 1000)} s`);
      }
      const cwd = p.cwd ? resolvePath(p.cwd, c.home) : c.home;
      const entry = await procs.start(sb.id, {
        argv: [cmd, ...args],
        env: envs,
        cwd,
        ...(ms !== undefined ? { timeoutSec: ms / 1000 } : {}),
        ...(c.asRoot ? { asRoot: true } : {}),
        ...(tty ? { tty } : {}),
        openStdin: m.stdin === true,
        config: { cmd, args, envs, ...(p.cwd ? { cwd: p.cwd } : {}) },
        ...(typeof m.tag === 'string' ? { tag: m.tag } : {}),
      });
      await out.send({ event: { start: { pid: entry.pid } } });
      await procs.stream(sb.id, entry, out, { stdout: 0, stderr: 0 }, keepaliveMs(req), abortOnClose(req));
    },
    'process.Process/Connect': async (sb, _c, m, out, req) => {
      const { entry, info } = await procs.find(sb.id, selector(m));
      await out.send({ event: { start: { pid: entry.pid } } });
      // Output from now on, as envd: what was written while nobody was connected is not replayed.
      await procs.stream(sb.id, entry, out, { stdout: info.stdoutBytes, stderr: info.stderrBytes }, keepaliveMs(req), abortOnClose(req));
    },
    'filesystem.Filesystem/WatchDir': async (_sb, caller, m, out, req) => {
      if (m.includeEntry === true || m.include_entry === true) throw new ConnectError('unimplemented', 'includeEntry is not implemented yet in Prism (docs/e2b.md)');
      const c = caller();
      const path = resolvePath(str(m.path, 'path'), c.home);
      const ms = connectTimeoutMs(req.headers['connect-timeout-ms']);
      await fs.watch(c, path, m.recursive === true, out, { keepaliveMs: keepaliveMs(req), ...(ms !== undefined ? { timeoutMs: ms } : {}), signal: abortOnClose(req) });
    },
  };

  app.post<{ Params: { service: string; method: string } }>('/:service/:method', async (req, reply) => {
    const name = `${req.params.service}/${req.params.method}`;
    const isStream = name in streams;
    if (!isStream && !(name in unary)) {
      return sendUnaryError(reply, new ConnectError('unimplemented', `${name} is not a method Prism's envd serves`));
    }
    let msg: Record<string, unknown>;
    try {
      msg = parseMessage(isStream ? parseStreamRequest(req.body as Buffer) : parseJson(req.body));
    } catch (e) {
      return sendUnaryError(reply, e);
    }
    const sb = await sandboxFor(req, reply);
    if (!sb) return reply;
    const caller = () => callerOf(sb, userOf(req));
    if (!isStream) {
      try {
        return reply.status(200).type('application/json').send(await unary[name]!(sb, caller, msg));
      } catch (e) {
        logInternal(deps.log, e, name);
        return sendUnaryError(reply, e);
      }
    }
    const out = new ServerStream(reply);
    try {
      await streams[name]!(sb, caller, msg, out, req);
      out.end();
    } catch (e) {
      logInternal(deps.log, e, name);
      out.end(e);
    }
    return reply;
  });

  // --- /files ----------------------------------------------------------------------------------------

  registerFileRoutes(app, files, sandboxFor, deps.log);

  // --- the code interpreter (port 49999) --------------------------------------------------------------

  /** The sandbox of a code-interpreter call: access token (/execute) or traffic token (every call). */
  const ciSandbox = async (req: FastifyRequest, reply: FastifyReply): Promise<Sandbox | undefined> => {
    const id = sandboxIdOf(req);
    const sb = id ? await runningSandbox(sandboxes, id) : undefined;
    if (!sb) return void reply.status(502).type('text/plain').send('The sandbox was not found'), undefined;
    const access = req.headers['x-access-token'];
    const traffic = req.headers['e2b-traffic-access-token'];
    const ok = (typeof access === 'string' && !!sb.secrets && sameSecret(access, sb.secrets.access)) || (typeof traffic === 'string' && !!sb.secrets && sameSecret(traffic, sb.secrets.traffic));
    if (!ok) return void reply.status(401).type('text/plain').send('missing or invalid access token'), undefined;
    return sb;
  };
  const ciError = (reply: FastifyReply, e: unknown): FastifyReply => {
    if (e instanceof CodeInterpreterError) return reply.status(e.status).type('text/plain').send(e.message);
    if (e instanceof PrismError) return reply.status(e.code === 'UNAVAILABLE' ? 502 : httpStatusForCode[e.code]).type('text/plain').send(e.message);
    deps.log.error({ err: e }, 'code interpreter call failed');
    return reply.status(500).type('text/plain').send('internal error');
  };
  const homeOf = (sb: Sandbox) => callerOf(sb, undefined).home;

  app.post<{ Body: Buffer }>('/execute', async (req, reply) => {
    const sb = await ciSandbox(req, reply);
    if (!sb) return reply;
    let body: { code?: unknown; context_id?: unknown; language?: unknown; env_vars?: unknown };
    try {
      body = parseMessage(parseJson(req.body)) as typeof body;
    } catch (e) {
      return reply.status(400).type('text/plain').send((e as Error).message);
    }
    if (typeof body.code !== 'string') return reply.status(400).type('text/plain').send('code must be a string');
    const ac = new AbortController();
    req.raw.socket.once('close', () => ac.abort());
    const items = deps.codeInterpreters.execute(
      sb.id,
      homeOf(sb),
      {
        code: body.code,
        ...(typeof body.context_id === 'string' ? { context_id: body.context_id } : {}),
        ...(typeof body.language === 'string' ? { language: body.language } : {}),
        ...(body.env_vars && typeof body.env_vars === 'object' ? { env_vars: body.env_vars as Record<string, string> } : {}),
      },
      ac.signal,
    );
    // The first item decides the status: a context that does not exist is a 404, not a stream.
    let first: IteratorResult<Record<string, unknown>>;
    try {
      first = await items.next();
    } catch (e) {
      return ciError(reply, e);
    }
    reply.hijack();
    const raw = reply.raw;
    raw.writeHead(200, { 'content-type': 'application/x-ndjson', 'cache-control': 'no-store' });
    const write = (o: unknown) => raw.write(`${JSON.stringify(o)}\n`);
    const keepalive = setInterval(() => write({ type: 'keepalive' }), 30_000);
    try {
      if (!first.done) write(first.value);
      for await (const item of items) write(item);
    } catch (e) {
      write({ type: 'error', name: 'SandboxError', value: (e as Error).message, traceback: '' });
    } finally {
      clearInterval(keepalive);
      write({ type: 'end_of_execution' });
      raw.end();
    }
    return reply;
  });

  app.get('/contexts', async (req, reply) => {
    const sb = await ciSandbox(req, reply);
    if (!sb) return reply;
    return deps.codeInterpreters.call(sb.id, homeOf(sb), { op: 'list_contexts' }).then((r) => reply.send(r), (e: unknown) => ciError(reply, e));
  });
  app.post<{ Body: Buffer }>('/contexts', async (req, reply) => {
    const sb = await ciSandbox(req, reply);
    if (!sb) return reply;
    let body: { language?: unknown; cwd?: unknown };
    try {
      body = parseMessage(parseJson(req.body)) as typeof body;
    } catch (e) {
      return reply.status(400).type('text/plain').send((e as Error).message);
    }
    const language = typeof body.language === 'string' ? ({ js: 'javascript', ts: 'typescript' } as Record<string, string>)[body.language] ?? body.language : undefined;
    const op = { op: 'create_context', ...(language ? { language } : {}), ...(typeof body.cwd === 'string' ? { cwd: resolvePath(body.cwd, homeOf(sb)) } : {}) };
    return deps.codeInterpreters.call(sb.id, homeOf(sb), op).then((r) => reply.send(r), (e: unknown) => ciError(reply, e));
  });
  app.post<{ Params: { id: string } }>('/contexts/:id/restart', async (req, reply) => {
    const sb = await ciSandbox(req, reply);
    if (!sb) return reply;
    return deps.codeInterpreters.call(sb.id, homeOf(sb), { op: 'restart_context', context_id: req.params.id }).then(() => reply.send({}), (e: unknown) => ciError(reply, e));
  });
  app.delete<{ Params: { id: string } }>('/contexts/:id', async (req, reply) => {
    const sb = await ciSandbox(req, reply);
    if (!sb) return reply;
    return deps.codeInterpreters.call(sb.id, homeOf(sb), { op: 'remove_context', context_id: req.params.id }).then(() => reply.status(204).send(), (e: unknown) => ciError(reply, e));
  });
}

type SandboxResolver = (req: FastifyRequest, reply: FastifyReply, opts: { signed?: { path: string; op: 'read' | 'write' } }) => Promise<Sandbox | undefined>;

/**
 * envd's REST `/files` (read; write as multipart, raw or gzip) on a scope that parses multipart and
 * raw bodies; `sandboxFor` names the sandbox and checks the caller (token or signed URL).
 */
function registerFileRoutes(app: FastifyInstance, files: FileService, sandboxFor: SandboxResolver, log: Logger): void {
  app.get<{ Querystring: { path?: string; username?: string } }>('/files', async (req, reply) => {
    const sb = await sandboxFor(req, reply, { signed: { path: req.query.path ?? '', op: 'read' } });
    if (!sb) return reply;
    const c = restCaller(sb, req.query.username, reply);
    if (!c) return reply;
    const path = resolvePath(req.query.path ?? '', c.home);
    try {
      const st = await files.stat(sb.id, path, { asRoot: c.asRoot });
      if (st.type === 'dir') return e2bError(reply, 400, `path '${path}' is a directory`);
      const body = await files.read(sb.id, path, { asRoot: c.asRoot });
      return reply.status(200).type('application/octet-stream').send(body);
    } catch (e) {
      return restError(reply, e, log);
    }
  });

  app.post<{ Querystring: { path?: string; username?: string } }>('/files', async (req, reply) => {
    const sb = await sandboxFor(req, reply, { signed: { path: req.query.path ?? '', op: 'write' } });
    if (!sb) return reply;
    const c = restCaller(sb, req.query.username, reply);
    if (!c) return reply;
    const written: Array<{ name: string; type: 'file'; path: string }> = [];
    const put = async (raw: string, data: AsyncIterable<Buffer>) => {
      const path = resolvePath(raw, c.home);
      if (path === '/' || path.endsWith('/')) throw new PrismError('INVALID_ARGUMENT', `'${raw}' names a directory, not a file`);
      const dir = path.slice(0, path.lastIndexOf('/')) || '/';
      await files.mkdir(sb.id, dir, { asRoot: c.asRoot, parents: true }).catch(() => undefined);
      await files.write(sb.id, path, data, { asRoot: c.asRoot });
      written.push({ name: path.slice(path.lastIndexOf('/') + 1), type: 'file', path });
    };
    try {
      if (req.isMultipart()) {
        for await (const part of req.files()) {
          // A single-file write names the path in the query; several name theirs in the filename.
          const raw = req.query.path ?? part.filename;
          if (!raw) throw new PrismError('INVALID_ARGUMENT', 'no path: give ?path= or a filename in the part');
          await put(raw, part.file);
        }
      } else {
        if (!req.query.path) throw new PrismError('INVALID_ARGUMENT', 'no path: give ?path=');
        let body = req.body as Readable | undefined;
        if (!body) body = Readable.from([]);
        if (req.headers['content-encoding'] === 'gzip') body = body.pipe(createGunzip());
        else if (req.headers['content-encoding'] && req.headers['content-encoding'] !== 'identity') {
          throw new PrismError('INVALID_ARGUMENT', `Content-Encoding '${req.headers['content-encoding']}' is not supported (gzip is)`);
        }
        await put(req.query.path, body);
      }
      if (!written.length) throw new PrismError('INVALID_ARGUMENT', 'the upload holds no file');
      return reply.status(200).type('application/json').send(written);
    } catch (e) {
      return restError(reply, e, log);
    }
  });

}

/** A scope's body parsers for `/files`: multipart (paths kept whole) and raw streams. */
async function fileBodyParsers(app: FastifyInstance): Promise<void> {
  app.addContentTypeParser('application/octet-stream', (_req, payload, done) => done(null, payload));
  // preservePath: the SDK puts the full path in each part's filename (a multi-file write); keep it.
  await app.register(multipart, { preservePath: true, limits: { fileSize: Number.MAX_SAFE_INTEGER, files: 1000, fields: 0 } });
}

/**
 * `/files` at the server's root, where the SDK's `uploadUrl()` / `downloadUrl()` point when one
 * E2B_SANDBOX_URL serves every sandbox (they drop its path and carry no sandbox id): only signed
 * requests, the sandbox found by whose access token signed them.
 */
export async function registerSignedFileRoutes(app: FastifyInstance, sandboxes: SandboxService, files: FileService, log: Logger): Promise<void> {
  await fileBodyParsers(app);
  const bySignature: SandboxResolver = async (req, reply, opts) => {
    if (!(req.query as { signature?: string }).signature || !opts.signed) {
      return void e2bError(reply, 401, 'only signed URLs (uploadUrl / downloadUrl) are served here; other calls go to E2B_SANDBOX_URL'), undefined;
    }
    const sb = await signer(req, sandboxes, opts.signed.path, opts.signed.op);
    if (!sb) return void e2bError(reply, 401, 'invalid or expired signature'), undefined;
    req.headers['e2b-sandbox-id'] = sb.id;
    return sb;
  };
  registerFileRoutes(app, files, bySignature, log);
}

/** The sandbox whose access token signed a root `/files` request, for routing it to the owner. */
export async function signedSandboxId(req: FastifyRequest, sandboxes: SandboxService): Promise<string | undefined> {
  const q = req.query as { signature?: string; path?: string };
  if (!q.signature) return undefined;
  return (await signer(req, sandboxes, q.path ?? '', req.method === 'GET' || req.method === 'HEAD' ? 'read' : 'write'))?.id;
}

/** The running sandbox whose access token signed this `/files` request, if any. */
async function signer(req: FastifyRequest, sandboxes: SandboxService, path: string, op: 'read' | 'write'): Promise<Sandbox | undefined> {
  return (await sandboxes.list({ status: ['running'] })).find((sb) => sb.secrets && signedBy(req, path, op, sb.secrets.access));
}

/** The request carries an unexpired signature of `path`, `op` and its user by the holder of `secret`. */
function signedBy(req: FastifyRequest, path: string, op: 'read' | 'write', secret: string): boolean {
  const q = req.query as { signature?: string; signature_expiration?: string; username?: string };
  if (!q.signature) return false;
  const exp = q.signature_expiration === undefined ? undefined : Number(q.signature_expiration);
  if (exp !== undefined && (!Number.isInteger(exp) || exp * 1000 < Date.now())) return false;
  return sameSecret(q.signature, fileSignature(path, op, q.username ?? '', secret, exp));
}

function restCaller(sb: Sandbox, user: string | undefined, reply: FastifyReply): Caller | undefined {
  try {
    return callerOf(sb, user);
  } catch (e) {
    void e2bError(reply, 401, (e as Error).message);
    return undefined;
  }
}

function restError(reply: FastifyReply, e: unknown, log: Logger): FastifyReply {
  if (e instanceof PrismError) {
    const status = e.code === 'RESOURCE_EXHAUSTED' && /space|full/i.test(e.message) ? 507 : e.code === 'FAILED_PRECONDITION' ? 400 : httpStatusForCode[e.code];
    return e2bError(reply, status, e.message);
  }
  log.error({ err: e }, 'envd /files failed');
  return e2bError(reply, 500, 'internal error');
}

function logInternal(log: Logger, e: unknown, what: string): void {
  if (!(e instanceof ConnectError) && !(e instanceof PrismError && e.code !== 'INTERNAL')) log.error({ err: e }, `envd ${what} failed`);
}

function parseJson(body: unknown): unknown {
  const text = Buffer.isBuffer(body) ? body.toString('utf8') : body === undefined || body === null ? '' : String(body);
  if (text.trim() === '') return {};
  try {
    return JSON.parse(text);
  } catch {
    throw new ConnectError('invalid_argument', 'the request body is not JSON');
  }
}

function parseMessage(v: unknown): Record<string, unknown> {
  if (!v || typeof v !== 'object' || Array.isArray(v)) throw new ConnectError('invalid_argument', 'the request message must be a JSON object');
  return v as Record<string, unknown>;
}

function str(v: unknown, what: string): string {
  if (typeof v !== 'string') throw new ConnectError('invalid_argument', `${what} must be a string`);
  return v;
}

function selector(m: Record<string, unknown>): Selector {
  const p = (m.process ?? {}) as { pid?: unknown; tag?: unknown };
  if (p.pid !== undefined) return { pid: Number(p.pid) };
  if (typeof p.tag === 'string') return { tag: p.tag };
  throw new ConnectError('invalid_argument', 'process selector needs a pid or a tag');
}

/** A PTY message's size (`{size: {cols, rows}}`); undefined when absent. */
function ptySize(v: unknown): { cols: number; rows: number } | undefined {
  if (v === undefined || v === null) return undefined;
  const size = (v as { size?: { cols?: unknown; rows?: unknown } }).size ?? {};
  const cols = Number(size.cols ?? 80);
  const rows = Number(size.rows ?? 24);
  try {
    checkSize(cols, rows);
  } catch (e) {
    throw new ConnectError('invalid_argument', (e as Error).message);
  }
  return { cols, rows };
}

function signalOf(v: unknown): ProcessSignal {
  if (v === 'SIGNAL_SIGKILL' || v === 9) return 'SIGKILL';
  if (v === 'SIGNAL_SIGTERM' || v === 15) return 'SIGTERM';
  throw new ConnectError('invalid_argument', `signal ${String(v)} is not SIGNAL_SIGKILL or SIGNAL_SIGTERM`);
}

function keepaliveMs(req: FastifyRequest): number {
  const h = req.headers['keepalive-ping-interval'];
  const sec = typeof h === 'string' && /^[0-9]{1,6}$/.test(h) ? Number(h) : 90;
  return Math.max(1, sec) * 1000;
}

function abortOnClose(req: FastifyRequest): AbortSignal {
  const ac = new AbortController();
  req.raw.socket.once('close', () => ac.abort());
  req.raw.once('close', () => {
    if (req.raw.socket.destroyed) ac.abort();
  });
  return ac.signal;
}
