import { PrismError } from '../../core/errors.js';

/** Retries with exponential backoff, and per-attempt idle timeouts, for registry requests. */

export interface RetryOptions {
  /** Retries after the first attempt. */
  retries: number;
  /** Base delay; attempt n waits about base * 2^n (with jitter), at most {@link MAX_DELAY_MS}. */
  delayMs: number;
  signal?: AbortSignal;
  /** What is being attempted, for the final error message. */
  what: string;
}

const MAX_DELAY_MS = 10_000;

/** Network failures, timeouts and PrismErrors marked retryable (5xx, 429) are worth another try. */
export function isTransient(e: unknown): boolean {
  if (e instanceof PrismError) return e.retryable;
  if (!(e instanceof Error)) return false;
  // undici reports refused/reset/dropped connections as TypeError ("fetch failed", "terminated").
  return e instanceof TypeError || e.name === 'AbortError' || e.name === 'TimeoutError' || typeof (e as NodeJS.ErrnoException).code === 'string';
}

export function describeError(e: unknown): string {
  if (!(e instanceof Error)) return String(e);
  const cause = e.cause as NodeJS.ErrnoException | undefined;
  const detail = cause?.code ?? cause?.message;
  return detail && !e.message.includes(detail) ? `${e.message} (${detail})` : e.message;
}

export async function withRetry<T>(fn: (attempt: number) => Promise<T>, o: RetryOptions): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await fn(attempt);
    } catch (e) {
      if (o.signal?.aborted) throw o.signal.reason;
      if (!isTransient(e)) throw e;
      if (attempt >= o.retries) {
        throw new PrismError('UNAVAILABLE', `${o.what} failed after ${attempt + 1} attempts: ${describeError(e)}`, { cause: e, retryable: true });
      }
      const delay = Math.min(MAX_DELAY_MS, o.delayMs * 2 ** attempt) * (0.5 + Math.random() / 2);
      await sleep(delay, o.signal);
    }
  }
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * Aborts its signal when `touch()` has not been called for `ms` (or when `parent` aborts). Used as an
 * idle timeout, so a slow but steady layer download is never cut off while a stalled one is.
 */
export class IdleTimeout {
  readonly signal: AbortSignal;
  private readonly controller = new AbortController();
  private readonly timer: NodeJS.Timeout;

  constructor(ms: number, parent: AbortSignal | undefined, what: string) {
    this.signal = parent ? AbortSignal.any([parent, this.controller.signal]) : this.controller.signal;
    this.timer = setTimeout(() => {
      this.controller.abort(new PrismError('DEADLINE_EXCEEDED', `${what}: nothing received for ${ms} ms`, { retryable: true }));
    }, ms);
    this.timer.unref();
  }

  touch(): void {
    this.timer.refresh();
  }

  clear(): void {
    clearTimeout(this.timer);
  }
}
