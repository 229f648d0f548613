import { PrismError, type ErrorCode } from '../../core/errors.js';

/** What dockerode rejects with: the engine's HTTP status and JSON message, or a socket error. */
interface EngineError {
  statusCode?: number;
  json?: { message?: string } | null;
  message?: string;
  code?: string;
}

export function engineStatus(e: unknown): number | undefined {
  return (e as EngineError | null)?.statusCode;
}

/**
 * The engine's own words. For streaming calls (pull, load) dockerode has no JSON body and puts them in
 * its message after `(HTTP code N) <reason> - `.
 */
function engineDetail(e: unknown): string {
  const err = (e ?? {}) as EngineError;
  return err.json?.message ?? (err.message ?? String(e)).replace(/^\(HTTP code \d+\) [^-]*- /, '').trim();
}

/**
 * Translates an Engine API failure into a PrismError at the edge that made the call (never by
 * message text above it). 404/409 mean different things per call, so callers pass their own.
 */
export function engineError(e: unknown, what: string, byStatus: Partial<Record<number, ErrorCode>> = {}): PrismError {
  if (e instanceof PrismError) return e;
  const err = (e ?? {}) as EngineError;
  const detail = engineDetail(e);
  if (err.statusCode === undefined) {
    // No HTTP answer at all: the engine is down or unreachable.
    return new PrismError('UNAVAILABLE', `${what}: the Docker engine is unreachable (${err.code ?? detail})`, { cause: e, retryable: true });
  }
  const code = byStatus[err.statusCode] ?? 'INTERNAL';
  return new PrismError(code, `${what}: ${detail}`, { cause: e });
}

const PULL_STATUS: Partial<Record<number, ErrorCode>> = { 400: 'INVALID_ARGUMENT', 401: 'UNAUTHENTICATED', 403: 'PERMISSION_DENIED', 404: 'NOT_FOUND' };

/**
 * What the engine's registry client says when it gives up, by the words it uses: the engine answers
 * most registry failures with a bare 500 (or inside the 200 progress stream), so its text is the only
 * way to tell refused credentials from an unreachable registry. First match wins.
 */
const PULL_WORDS: [RegExp, ErrorCode][] = [
  // The engine got the image but cannot use a layer of it (e.g. zstd, which dockerd 20.10 cannot unpack).
  [/failed to register layer|ApplyLayer|unsupported media type|error processing tar/i, 'INVALID_ARGUMENT'],
  // Network failures first: their messages embed the registry's URL, whose path could hold any word below.
  [/dial tcp|connection refused|no such host|server misbehaving|name resolution|i\/o timeout|TLS handshake timeout|network is unreachable|connection reset|deadline exceeded|Client\.Timeout|unexpected EOF|service unavailable|bad gateway/i, 'UNAVAILABLE'],
  // The engine would need configuring (insecure-registries, a CA): retrying will not help.
  [/HTTP response to HTTPS client|x509|certificate/i, 'FAILED_PRECONDITION'],
  [/no basic auth credentials|unauthorized|authentication required|incorrect username or password/i, 'UNAUTHENTICATED'],
  [/\bdenied\b|forbidden/i, 'PERMISSION_DENIED'],
  [/toomanyrequests|rate limit/i, 'RESOURCE_EXHAUSTED'],
  [/manifest unknown|not found|does not exist/i, 'NOT_FOUND'],
  [/invalid reference format/i, 'INVALID_ARGUMENT'],
];

/**
 * Translates a failed pull of `ref` by the engine: its HTTP status where that says enough (404 for an
 * unknown manifest or repository; Docker Hub also answers 404 for a private one without credentials),
 * else the engine's words (PULL_WORDS). `e` is dockerode's rejection, or the error message the engine
 * put in the progress stream after answering 200. No HTTP answer at all: the engine is unreachable.
 */
export function pullError(e: unknown, ref: string): PrismError {
  if (e instanceof PrismError) return e;
  const what = `pulling '${ref}' through the Docker engine`;
  const streamed = typeof e === 'string';
  const status = streamed ? undefined : engineStatus(e);
  if (!streamed && status === undefined) return engineError(e, what);
  const detail = streamed ? e : engineDetail(e);
  const code = (status !== undefined ? PULL_STATUS[status] : undefined) ?? PULL_WORDS.find(([re]) => re.test(detail))?.[1] ?? 'INTERNAL';
  return new PrismError(code, `${what}: ${detail}`, { cause: streamed ? undefined : e, retryable: code === 'UNAVAILABLE' || code === 'RESOURCE_EXHAUSTED' });
}
