import { Readable } from 'node:stream';
import { Type, type Static } from '@sinclair/typebox';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { PrismError } from '../../core/errors.js';
import {
  FileDeleteQuery, FileEntrySchema, FileListSchema, FileQuery, FileWriteQuery, FileWrittenSchema, IdParams, MkdirBody, MoveBody, withErrors,
} from '../schemas.js';
import type { ApiServices } from '../server.js';

type Q<T> = { Params: { id: string }; Querystring: T };
const asRoot = (user: string | undefined) => ({ asRoot: user === 'root' });
const Binary = Type.String({ format: 'binary' });

/**
 * Runs `fn` over the raw body. An upload refused half-way (too large, no permission) is answered on a
 * closing connection: the client may still be sending, and on a kept-alive connection its next
 * request would queue behind bytes the daemon is not going to read.
 */
async function withBody<T>(req: FastifyRequest, reply: FastifyReply, type: string, fn: (body: AsyncIterable<Buffer>) => Promise<T>): Promise<T> {
  try {
    return await fn(rawBody(req, type));
  } finally {
    if (!req.raw.complete) void reply.header('connection', 'close');
  }
}

/** The raw request body as a stream; a PUT without a body writes nothing (an empty file). */
function rawBody(req: FastifyRequest, type: string): AsyncIterable<Buffer> {
  if (req.body instanceof Readable) return req.body;
  if (req.body === undefined || req.body === null) return Readable.from([]);
  throw new PrismError('INVALID_ARGUMENT', `send the bytes as the raw body with content-type ${type}`);
}

/**
 * Files of a sandbox (service/file-service.ts). Owner routes: in a cluster they are forwarded to the
 * node that runs the sandbox, raw bodies and streamed answers included (owner-proxy.ts). Upload
 * bodies reach the handler as a stream, never buffered.
 */
export async function registerFileRoutes(app: FastifyInstance, svc: ApiServices): Promise<void> {
  const owner = { owner: true };
  const tags = ['files'];
  // Uploads in a scope of their own where every body, whatever its content type (a .json file sent as
  // application/json, `curl -T` with none), reaches the handler as the raw stream.
  await app.register(async (raw) => {
    raw.removeAllContentTypeParsers();
    raw.addContentTypeParser('*', (_req, payload, done) => done(null, payload));
    raw.put<Q<Static<typeof FileWriteQuery>>>(
      '/sandboxes/:id/files',
      {
        config: owner,
        schema: {
          tags, params: IdParams, querystring: FileWriteQuery, consumes: ['application/octet-stream'],
          description: 'Writes the raw body (application/octet-stream) to `path`, creating parent directories; replaces the file only once the whole body arrived.',
          response: withErrors({ 200: FileWrittenSchema }, 403, 404, 412, 413, 429),
        },
      },
      async (req, reply) => {
        const mode = req.query.mode === undefined ? undefined : parseInt(req.query.mode.replace(/^0o/, ''), 8);
        const opts = { ...asRoot(req.query.user), ...(mode === undefined ? {} : { mode }) };
        const r = await withBody(req, reply, 'application/octet-stream', (body) => svc.files.write(req.params.id, req.query.path, body, opts));
        return { path: req.query.path, size: r.size };
      },
    );

    raw.put<Q<Static<typeof FileQuery>>>(
      '/sandboxes/:id/files/archive',
      {
        config: owner,
        schema: {
          tags, params: IdParams, querystring: FileQuery, consumes: ['application/x-tar'],
          description: 'Extracts the raw tar body (application/x-tar) into directory `path` (created if missing); entries with absolute names or `..` are refused.',
          response: withErrors({ 204: Type.Null() }, 403, 404, 412, 429),
        },
      },
      async (req, reply) => {
        await withBody(req, reply, 'application/x-tar', (body) => svc.files.uploadArchive(req.params.id, req.query.path, body, asRoot(req.query.user)));
        return reply.status(204).send();
      },
    );
  });

  app.get<Q<Static<typeof FileQuery>>>(
    '/sandboxes/:id/files',
    {
      config: owner,
      schema: {
        tags, params: IdParams, querystring: FileQuery, produces: ['application/octet-stream'],
        description: "Streams a regular file's bytes (symlinks followed inside the sandbox).",
        response: withErrors({ 200: Binary }, 403, 404, 412, 413),
      },
    },
    async (req, reply) => {
      const stream = await svc.files.read(req.params.id, req.query.path, asRoot(req.query.user));
      return reply.type('application/octet-stream').header('cache-control', 'no-store').send(stream);
    },
  );

  app.get<Q<Static<typeof FileQuery>>>(
    '/sandboxes/:id/files/stat',
    { config: owner, schema: { tags, params: IdParams, querystring: FileQuery, response: withErrors({ 200: FileEntrySchema }, 403, 404, 412) } },
    (req) => svc.files.stat(req.params.id, req.query.path, asRoot(req.query.user)),
  );

  app.get<Q<Static<typeof FileQuery>>>(
    '/sandboxes/:id/files/list',
    { config: owner, schema: { tags, params: IdParams, querystring: FileQuery, response: withErrors({ 200: FileListSchema }, 403, 404, 412) } },
    async (req) => ({ path: req.query.path, entries: await svc.files.list(req.params.id, req.query.path, asRoot(req.query.user)) }),
  );

  app.post<{ Params: { id: string }; Body: Static<typeof MkdirBody> }>(
    '/sandboxes/:id/files/mkdir',
    { config: owner, schema: { tags, params: IdParams, body: MkdirBody, response: withErrors({ 204: Type.Null() }, 403, 404, 409, 412) } },
    async (req, reply) => {
      const b = req.body;
      await svc.files.mkdir(req.params.id, b.path, { ...asRoot(b.user), ...(b.mode === undefined ? {} : { mode: b.mode }), parents: b.parents === true });
      return reply.status(204).send();
    },
  );

  app.delete<Q<Static<typeof FileDeleteQuery>>>(
    '/sandboxes/:id/files',
    { config: owner, schema: { tags, params: IdParams, querystring: FileDeleteQuery, response: withErrors({ 204: Type.Null() }, 403, 404, 412) } },
    async (req, reply) => {
      await svc.files.remove(req.params.id, req.query.path, { ...asRoot(req.query.user), recursive: req.query.recursive === 'true' });
      return reply.status(204).send();
    },
  );

  app.post<{ Params: { id: string }; Body: Static<typeof MoveBody> }>(
    '/sandboxes/:id/files/move',
    { config: owner, schema: { tags, params: IdParams, body: MoveBody, response: withErrors({ 204: Type.Null() }, 403, 404, 409, 412) } },
    async (req, reply) => {
      await svc.files.move(req.params.id, req.body.from, req.body.to, asRoot(req.body.user));
      return reply.status(204).send();
    },
  );

  app.get<Q<Static<typeof FileQuery>>>(
    '/sandboxes/:id/files/archive',
    {
      config: owner,
      schema: {
        tags, params: IdParams, querystring: FileQuery, produces: ['application/x-tar'],
        description: 'Streams a tar of `path` (a directory tree or one file), entries named from its last component, like `docker cp`.',
        response: withErrors({ 200: Binary }, 403, 404, 412),
      },
    },
    async (req, reply) => {
      const stream = await svc.files.downloadArchive(req.params.id, req.query.path, asRoot(req.query.user));
      return reply.type('application/x-tar').header('cache-control', 'no-store').send(stream);
    },
  );

}
