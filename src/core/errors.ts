/**
 * The one error type of Prism. `code` is API: it never changes meaning, the HTTP layer maps it to a
 * status with {@link httpStatusForCode}, and the SDK maps the status body back to the same code.
 * Branch on `code`, never on `message`.
 */
export const ERROR_CODES = [
  'NOT_FOUND',
  'ALREADY_EXISTS',
  'INVALID_ARGUMENT',
  'FAILED_PRECONDITION',
  'CONFLICT',
  'RESOURCE_EXHAUSTED',
  'UNAVAILABLE',
  'DEADLINE_EXCEEDED',
  'UNAUTHENTICATED',
  'PERMISSION_DENIED',
  'PAYLOAD_TOO_LARGE',
  'UNIMPLEMENTED',
  'INTERNAL',
] as const;

export type ErrorCode = (typeof ERROR_CODES)[number];

export const httpStatusForCode: Record<ErrorCode, number> = {
  NOT_FOUND: 404,
  ALREADY_EXISTS: 409,
  INVALID_ARGUMENT: 400,
  FAILED_PRECONDITION: 412,
  CONFLICT: 409,
  RESOURCE_EXHAUSTED: 429,
  UNAVAILABLE: 503,
  DEADLINE_EXCEEDED: 504,
  UNAUTHENTICATED: 401,
  PERMISSION_DENIED: 403,
  PAYLOAD_TOO_LARGE: 413,
  UNIMPLEMENTED: 501,
  INTERNAL: 500,
};

export interface PrismErrorOptions {
  cause?: unknown;
  retryable?: boolean;
  /** For UNAVAILABLE/RESOURCE_EXHAUSTED: when trying again makes sense (the HTTP layer sends Retry-After). */
  retryAfterSec?: number;
}

export class PrismError extends Error {
  readonly code: ErrorCode;
  readonly retryable: boolean;
  readonly retryAfterSec?: number;

  constructor(code: ErrorCode, message: string, opts: PrismErrorOptions = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'PrismError';
    this.code = code;
    this.retryable = opts.retryable ?? code === 'UNAVAILABLE';
    if (opts.retryAfterSec !== undefined) this.retryAfterSec = opts.retryAfterSec;
  }

  toJSON(): { code: ErrorCode; message: string } {
    return { code: this.code, message: this.message };
  }
}

export function isErrorCode(s: string): s is ErrorCode {
  return (ERROR_CODES as readonly string[]).includes(s);
}

export function isPrismError(e: unknown, code?: ErrorCode): e is PrismError {
  return e instanceof PrismError && (code === undefined || e.code === code);
}

/** Wraps anything thrown into a PrismError, keeping the original as `cause`. */
export function asPrismError(e: unknown, fallback: ErrorCode = 'INTERNAL', context?: string): PrismError {
  if (e instanceof PrismError) return e;
  const msg = e instanceof Error ? e.message : String(e);
  return new PrismError(fallback, context ? `${context}: ${msg}` : msg, { cause: e });
}
