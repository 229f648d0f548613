import { PrismError } from '../core/errors.js';
import type { CommitOp } from './store.js';

/** Input rules every Store implementation enforces the same way (the conformance suite checks them). */

export function invalid(message: string): PrismError {
  return new PrismError('INVALID_ARGUMENT', message);
}

export function checkKey(key: unknown): void {
  if (typeof key !== 'string' || key.length === 0) throw invalid('key must be a non-empty string');
}

/**
 * A commit's operations: known kinds, sane revisions, string values, and one write per key (two writes
 * to one key at one revision would make the event stream ambiguous; etcd refuses it too).
 * `checkLease` adds the implementation's own rule for lease ids on puts.
 */
export function validateOps(ops: CommitOp[], checkLease: (lease: unknown) => void = () => undefined): void {
  if (!Array.isArray(ops)) throw invalid('commit takes an array of operations');
  const written = new Set<string>();
  for (const op of ops) {
    checkKey(op?.key);
    const kind: unknown = op.op;
    if (kind !== 'put' && kind !== 'delete' && kind !== 'check') throw invalid(`unknown commit op ${String(kind)}`);
    const rev = op.expectRevision;
    if (rev !== undefined && (!Number.isSafeInteger(rev) || rev < 0)) throw invalid('expectRevision must be an integer >= 0');
    if (op.op === 'check' && rev === undefined) throw invalid(`check on ${op.key} needs expectRevision`);
    if (op.op === 'put' && typeof op.value !== 'string') throw invalid(`value for ${op.key} must be a string`);
    if (op.op === 'put') checkLease(op.lease);
    if (op.op === 'check') continue;
    if (written.has(op.key)) throw invalid(`key ${op.key} is written twice in one commit`);
    written.add(op.key);
  }
}
