import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import fastifyStatic from '@fastify/static';
import type { FastifyInstance, FastifyReply } from 'fastify';
import { PrismError } from '../core/errors.js';

/**
 * The web console (console/, built by `npm run build` into dist/console): one page at `/` and its
 * hashed assets under `/assets/`. Neither carries data, so neither needs a token; everything the page
 * shows comes from the API with the token the user types in.
 */

/** Where `npm run build` puts the console: dist/console, beside dist/src. */
export const CONSOLE_DIR = fileURLToPath(new URL('../../console/', import.meta.url));

const ASSETS = '/assets/';
const NONCE_PLACEHOLDER = '__PRISM_STYLE_NONCE__';

/** Paths the console serves without a token. */
export function isConsolePath(path: string): boolean {
  return path === '/' || path.startsWith(ASSETS);
}

/**
 * Scripts and everything else only from this origin; no inline script, no eval, no plugins, no
 * framing. Styles from this origin, plus the ones carrying this response's nonce (xterm.js creates
 * its own <style> elements; console/src/csp-styles.ts stamps them).
 */
export function contentSecurityPolicy(nonce: string): string {
  return [
    "default-src 'none'",
    "script-src 'self'",
    `style-src 'self' 'nonce-${nonce}'`,
    "img-src 'self' data:",
    "font-src 'self'",
    "connect-src 'self'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
    "object-src 'none'",
  ].join('; ');
}

function secureHeaders(reply: FastifyReply, nonce: string): FastifyReply {
  return reply
    .header('content-security-policy', contentSecurityPolicy(nonce))
    .header('x-content-type-options', 'nosniff')
    .header('referrer-policy', 'no-referrer')
    .header('x-frame-options', 'DENY')
    .header('cross-origin-opener-policy', 'same-origin');
}

export async function registerConsole(app: FastifyInstance, dir: string = CONSOLE_DIR): Promise<void> {
  const indexFile = join(dir, 'index.html');
  if (!existsSync(indexFile)) {
    app.get('/', { schema: { hide: true } }, async () => {
      throw new PrismError('NOT_FOUND', 'the web console is not built here: run npm run build (the API is under /api/v1)');
    });
    return;
  }
  const page = readFileSync(indexFile, 'utf8');
  app.get('/', { schema: { hide: true } }, async (_req, reply) => {
    const nonce = randomBytes(18).toString('base64');
    return secureHeaders(reply, nonce).header('cache-control', 'no-store').type('text/html; charset=utf-8').send(page.replaceAll(NONCE_PLACEHOLDER, nonce));
  });
  await app.register(fastifyStatic, {
    root: join(dir, 'assets'),
    prefix: ASSETS,
    // Names carry a hash of the content: a new build is a new name.
    immutable: true,
    maxAge: '365d',
    index: false,
    list: false,
    wildcard: true,
    setHeaders: (reply) => {
      void reply.header('x-content-type-options', 'nosniff').header('content-security-policy', contentSecurityPolicy('-'));
    },
  });
}
