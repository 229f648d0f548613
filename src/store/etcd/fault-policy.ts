/**
 * Fault handling for the etcd client, tuned so that a write issued during an etcd leader change
 * stalls for roughly the election (1-3 s with etcd's default 1 s election timeout), not 7 s.
 *
 * Why etcd3's defaults stall ~7 s: a write sent to a follower is forwarded to the leader; when the
 * leader dies with the proposal, the follower answers only after etcd's request timeout
 * (5 s + 2 x election timeout = 7 s). etcd3's defaults (3 immediate retries, a per-host breaker open
 * for 5 s after 3 failures) add no per-attempt deadline, so every caller waits for that timeout.
 *
 * What we do instead:
 * - etcd3's own `global` policy is a pass-through: retries live in {@link withRetry}, which knows
 *   whether the call is a read or a write and so whether a retry is safe (see `retryable`).
 * - Each unary attempt gets a deadline (`attemptTimeoutMs`, default 1500 ms), so a proposal lost with
 *   the old leader costs one deadline, not 7 s.
 * - A follower that has not yet elected a new leader drops proposals at once ("raft proposal
 *   dropped": never proposed, so safe to retry even for compare-and-swap writes).
 * - The per-host breaker opens after 2 consecutive transport failures for 1 s: a dead member is
 *   skipped by the next attempts, and re-tried soon after it comes back.
 * - Retries back off 50 ms doubling to 400 ms, within `retryBudgetMs` (default 10 s) per call.
 */
import { isRecoverableError, type IOptions } from 'etcd3';
import { setTimeout as sleep } from 'node:timers/promises';

type FaultHandling = NonNullable<IOptions['faultHandling']>;
type Policy = NonNullable<FaultHandling['global']>;

/** Thrown by the host breaker instead of calling a member believed down: the request was never sent. */
export class HostSkippedError extends Error {}

/**
 * etcd3 calls only `execute` on its policies; the cockatiel event properties are never read, so a
 * plain object stands in for them (cockatiel is etcd3's dependency, not ours).
 */
function policy(execute: <T>(fn: (ctx: { signal: AbortSignal }) => PromiseLike<T> | T) => Promise<T>): Policy {
  return { execute } as unknown as Policy;
}

/**
 * etcd3 hands policies' signals to nobody, so one that never aborts serves every call: an
 * AbortController per attempt (two per call, with the host breaker) was a measurable share of a
 * busy node's CPU.
 */
const NEVER = new AbortController().signal;

export const passThroughPolicy = (): Policy => policy(async (fn) => fn({ signal: NEVER }));

export function hostBreaker(failuresToOpen = 2, openMs = 1000): Policy {
  let failures = 0;
  let openUntil = 0;
  return policy(async (fn) => {
    if (Date.now() < openUntil) throw new HostSkippedError('etcd member skipped after recent failures');
    try {
      const result = await fn({ signal: NEVER });
      failures = 0;
      return result;
    } catch (e) {
      if (e instanceof Error && isRecoverableError(e) && ++failures >= failuresToOpen) {
        failures = 0;
        openUntil = Date.now() + openMs;
      }
      throw e;
    }
  });
}

/**
 * Errors after which the request certainly did not change anything: it never left this process, or
 * etcd refused it before proposing it to raft. Classifying by message is unavoidable here: etcd3 and
 * grpc-js expose these cases only as text, and this is the edge that sees them.
 */
export function notApplied(e: unknown): boolean {
  if (e instanceof HostSkippedError) return true;
  const msg = e instanceof Error ? e.message : String(e);
  return /No connection established|ECONNREFUSED|etcdserver: no leader|raft proposal dropped|etcdserver: too many requests|etcdserver: not capable/i
    .test(msg);
}

export function transient(e: unknown): boolean {
  return e instanceof HostSkippedError || (e instanceof Error && isRecoverableError(e));
}

export interface RetryOptions {
  budgetMs: number;
  /** Whether this error may be retried for this call (reads: any transient error; CAS writes: not applied). */
  retryable: (e: unknown) => boolean;
  isClosed: () => boolean;
}

export async function withRetry<T>(fn: () => Promise<T>, opts: RetryOptions): Promise<T> {
  const deadline = Date.now() + opts.budgetMs;
  let delay = 50;
  for (;;) {
    try {
      return await fn();
    } catch (e) {
      if (opts.isClosed() || !opts.retryable(e) || Date.now() + delay > deadline) throw e;
    }
    await sleep(delay);
    delay = Math.min(delay * 2, 400);
  }
}
