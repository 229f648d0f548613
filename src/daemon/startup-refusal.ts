import { PrismError } from '../core/errors.js';

export const DOCTOR_HINT = 'Run `prismd doctor` for a full check.';

/**
 * prismd refusing to start because of the host (a runtime, the port, the data dir): `what` says which
 * of `prismd doctor`'s checks failed and why; the message sends the user to the full check.
 */
export function startupRefusal(what: string, cause?: unknown): PrismError {
  return new PrismError('FAILED_PRECONDITION', `${what}. ${DOCTOR_HINT}`, cause === undefined ? {} : { cause });
}
