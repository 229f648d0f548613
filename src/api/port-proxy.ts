import type { FastifyInstance, FastifyReply } from 'fastify';

/**
 * HTTP to a port of a sandbox, streamed both ways: what Prism's `/sandboxes/:id/ports/:port/...` and
 * the E2B gateway's `<port>-<id>.<domain>` routes share. Runs on the node owning the sandbox.
 */

/** Bodies of any type go to the sandbox as a stream, unparsed (call in the routes' own scope). */
export function passBodiesThrough(scope: FastifyInstance): void {
  scope.removeAllContentTypeParsers();
  scope.addContentTypeParser('*', (_req, payload, done) => done(null, payload));
}

/** The raw rest of the URL after `prefix` (still percent-encoded, query kept), always starting with `/`. */
export function pathAfter(url: string, prefix: RegExp): string {
  const rest = new RegExp(`^${prefix.source}(.*)$`).exec(url)?.[1] ?? '';
  return rest.startsWith('/') ? rest : `/${rest}`;
}

/**
 * Sends the request to `target` with the headers in `strip` removed (lower case: credentials and
 * routing that are the server's business, never the sandbox's); `unreachable` answers when nothing
 * listens there.
 */
export function proxyToPort(
  reply: FastifyReply,
  target: { host: string; port: number },
  path: string,
  strip: readonly string[],
  unreachable: (reply: FastifyReply) => void,
): FastifyReply {
  return reply.from(`http://${target.host}:${target.port}${path}`, {
    rewriteRequestHeaders: (_r, headers) => Object.fromEntries(Object.entries(headers).filter(([k]) => !strip.includes(k.toLowerCase()))),
    onError: (r) => unreachable(r as unknown as FastifyReply),
  });
}
