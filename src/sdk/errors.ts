import type { ErrorCode } from '../core/errors.js';

/**
 * Every failure the SDK reports. `code` is the API's stable code (docs/api.md, "Errors"): branch on it,
 * never on `message`. Codes this SDK does not know yet are passed through as sent.
 */
export class PrismApiError extends Error {
  readonly code: ErrorCode | (string & {});
  /** HTTP status of the answer; 0 when no answer arrived (connection failure, broken stream). */
  readonly status: number;
  /** True when the same request may succeed if sent again later. */
  readonly retryable: boolean;

  constructor(
    code: ErrorCode | (string & {}),
    message: string,
    opts: { status?: number; retryable?: boolean; cause?: unknown } = {},
  ) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'PrismApiError';
    this.code = code;
    this.status = opts.status ?? 0;
    // Same rule as the daemon's PrismError: only UNAVAILABLE is retryable unless the server says otherwise.
    this.retryable = opts.retryable ?? code === 'UNAVAILABLE';
  }
}

/** The API's code table read backwards; 409 is ambiguous (ALREADY_EXISTS too), CONFLICT is the safer guess. */
const CODE_FOR_STATUS: Record<number, ErrorCode> = {
  400: 'INVALID_ARGUMENT',
  401: 'UNAUTHENTICATED',
  403: 'PERMISSION_DENIED',
  404: 'NOT_FOUND',
  409: 'CONFLICT',
  412: 'FAILED_PRECONDITION',
  413: 'PAYLOAD_TOO_LARGE',
  429: 'RESOURCE_EXHAUSTED',
  500: 'INTERNAL',
  501: 'UNIMPLEMENTED',
  503: 'UNAVAILABLE',
  504: 'DEADLINE_EXCEEDED',
};

export function codeForStatus(status: number): ErrorCode {
  return CODE_FOR_STATUS[status] ?? (status >= 500 ? 'INTERNAL' : 'INVALID_ARGUMENT');
}

/** Builds the error for a non-2xx answer; tolerates bodies that are not the API's error envelope (proxies). */
export async function errorFromResponse(res: Response, what: string): Promise<PrismApiError> {
  const text = await res.text().catch(() => '');
  let envelope: unknown;
  try {
    envelope = JSON.parse(text);
  } catch {
    envelope = undefined;
  }
  const err = (envelope as { error?: { code?: unknown; message?: unknown; retryable?: unknown } } | undefined)?.error;
  if (err && typeof err.code === 'string' && typeof err.message === 'string') {
    return new PrismApiError(err.code, err.message, {
      status: res.status,
      retryable: typeof err.retryable === 'boolean' ? err.retryable : undefined,
    });
  }
  const snippet = text.trim().slice(0, 200);
  const message = `${what}: HTTP ${res.status}${res.statusText ? ` ${res.statusText}` : ''}${snippet ? `: ${snippet}` : ''}`;
  return new PrismApiError(codeForStatus(res.status), message, { status: res.status });
}

/** fetch() rejects with a bare "fetch failed"; the useful part (ECONNREFUSED, ENOTFOUND...) is in `cause`. */
export function connectionError(baseUrl: string, e: unknown): PrismApiError {
  const cause = e instanceof Error && e.cause !== undefined ? e.cause : e;
  return new PrismApiError('UNAVAILABLE', `cannot reach the Prism API at ${baseUrl}: ${describe(cause)}`, {
    status: 0,
    retryable: true,
    cause: e,
  });
}

/** Dual-stack connects fail with an AggregateError whose own message is empty; its parts name the reason. */
function describe(cause: unknown): string {
  if (cause instanceof AggregateError && !cause.message && cause.errors.length > 0) return describe(cause.errors[0]);
  if (cause instanceof Error) return cause.message || (cause as { code?: string }).code || cause.name;
  return String(cause);
}
