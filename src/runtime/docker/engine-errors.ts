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
 * Translates an Engine API failure into a PrismError at the edge that made the call (never by
 * message text above it). 404/409 mean different things per call, so callers pass their own.
 */
export function engineError(e: unknown, what: string, byStatus: Partial<Record<number, ErrorCode>> = {}): PrismError {
  if (e instanceof PrismError) return e;
  const err = (e ?? {}) as EngineError;
  const detail = err.json?.message ?? err.message ?? String(e);
  if (err.statusCode === undefined) {
    // No HTTP answer at all: the engine is down or unreachable.
    return new PrismError('UNAVAILABLE', `${what}: the Docker engine is unreachable (${err.code ?? detail})`, { cause: e, retryable: true });
  }
  const code = byStatus[err.statusCode] ?? 'INTERNAL';
  return new PrismError(code, `${what}: ${detail}`, { cause: e });
}
