import { errorEvent } from '../ndjson.js';
import { createWriteStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Type, type Static } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import { PrismError } from '../../core/errors.js';
import type { PullProgress } from '../../images/image-store.js';
import { GcSchema, ImageSchema, PullBody, withErrors } from '../schemas.js';
import type { ApiServices } from '../server.js';

type RefParams = { Params: { '*': string } };
const RefParamsSchema = Type.Object({ '*': Type.String({ minLength: 1, maxLength: 512 }) });

/** Images: references contain '/' and ':', so they travel URL-encoded in a wildcard path segment. */
export function registerImageRoutes(app: FastifyInstance, svc: ApiServices, maxImportBytes: number): void {
  // Archives are streamed to disk, never buffered: they can be gigabytes.
  app.addContentTypeParser('application/x-tar', (_req, payload, done) => done(null, payload));

  app.get('/images', { schema: { tags: ['images'], response: withErrors({ 200: Type.Object({ images: Type.Array(ImageSchema) }) }) } }, async () => ({
    images: await svc.images.list(),
  }));

  app.post<{ Body: Static<typeof PullBody> }>(
    '/images',
    {
      schema: {
        tags: ['images'],
        description: 'Pulls an image. With `Accept: application/x-ndjson`, progress events stream until a `done` event.',
        body: PullBody,
        response: withErrors({ 200: ImageSchema }, 401, 403, 404, 503),
      },
    },
    async (req, reply) => {
      const opts = req.body.platform ? { platform: req.body.platform } : {};
      if (!(req.headers.accept ?? '').includes('application/x-ndjson')) return svc.images.pull(req.body.ref, opts);
      reply.hijack();
      const res = reply.raw;
      res.writeHead(200, { 'content-type': 'application/x-ndjson', 'cache-control': 'no-store' });
      const write = (o: object) => res.write(`${JSON.stringify(o)}\n`);
      try {
        const image = await svc.images.pull(req.body.ref, { ...opts, onProgress: (p: PullProgress) => write({ type: 'progress', ...p }) });
        write({ type: 'done', image });
      } catch (e) {
        write(errorEvent(e));
      } finally {
        res.end();
      }
    },
  );

  app.post<{ Querystring: { ref?: string } }>(
    '/images/import',
    {
      schema: {
        tags: ['images'],
        description: 'Imports a `docker save` archive or an OCI image layout tar sent as the raw body (application/x-tar).',
        querystring: Type.Object({ ref: Type.Optional(Type.String({ minLength: 1, maxLength: 512 })) }, { additionalProperties: false }),
        response: withErrors({ 200: Type.Object({ images: Type.Array(ImageSchema) }) }, 413),
      },
    },
    async (req) => {
      if (!(req.headers['content-type'] ?? '').startsWith('application/x-tar')) {
        throw new PrismError('INVALID_ARGUMENT', 'send the archive as the body with content-type application/x-tar');
      }
      const dir = await mkdtemp(join(tmpdir(), 'prism-import-'));
      try {
        const file = join(dir, 'archive.tar');
        let bytes = 0;
        const body = req.body as Readable;
        body.on('data', (b: Buffer) => {
          bytes += b.length;
          if (bytes > maxImportBytes) body.destroy(new PrismError('PAYLOAD_TOO_LARGE', `archive larger than ${maxImportBytes} bytes`));
        });
        await pipeline(body, createWriteStream(file));
        return { images: await svc.images.importArchive(file, req.query.ref) };
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    },
  );

  app.post('/images/gc', { schema: { tags: ['images'], response: withErrors({ 200: GcSchema }) } }, () => svc.images.gc());

  app.get<RefParams>(
    '/images/*',
    { schema: { tags: ['images'], params: RefParamsSchema, response: withErrors({ 200: ImageSchema }, 404) } },
    (req) => svc.images.get(req.params['*']),
  );

  app.delete<RefParams>(
    '/images/*',
    { schema: { tags: ['images'], params: RefParamsSchema, response: withErrors({ 204: Type.Null() }, 404, 412) } },
    async (req, reply) => {
      await svc.images.remove(req.params['*']);
      return reply.status(204).send();
    },
  );
}
