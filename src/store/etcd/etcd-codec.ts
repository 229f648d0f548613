/**
 * Translation between the Store's types and etcd's wire types: key namespacing, prefix ranges,
 * compare-and-swap comparisons, and etcd3 errors to PrismError codes.
 */
import {
  ClientClosedError, EtcdLeaseInvalidError, EtcdPermissionDeniedError, EtcdAuthenticationFailedError,
  GRPCDeadlineExceededError, GRPCInvalidArgumentError, GRPCResourceExhastedError,
  type ICompare, type IKeyValue, type IRequestOp,
} from 'etcd3';
import { PrismError } from '../../core/errors.js';
import type { CommitOp, KeyValue } from '../store.js';
import { transient } from './fault-policy.js';

export class KeyCodec {
  /** Byte length of the namespace prefix (keys are encoded and decoded on every call and watch event). */
  private readonly nsBytes: number;
  constructor(private readonly prefix: string) {
    this.nsBytes = Buffer.byteLength(prefix, 'utf8');
  }

  encode(key: string): Buffer {
    return Buffer.from(this.prefix + key, 'utf8');
  }

  decode(key: Buffer): string {
    return key.toString('utf8', this.nsBytes);
  }

  /** [key, range_end) covering every key that starts with `prefix` inside the namespace. */
  range(prefix: string): { key: Buffer; range_end: Buffer } {
    const key = this.encode(prefix);
    // etcd's "all keys >= key" is range_end = "\0"; an empty key is not allowed, "\0" is the smallest.
    if (key.length === 0) return { key: Buffer.from([0]), range_end: Buffer.from([0]) };
    return { key, range_end: prefixEnd(key) };
  }

  toKeyValue(kv: IKeyValue): KeyValue {
    const out: KeyValue = {
      key: this.decode(kv.key),
      value: kv.value.toString('utf8'),
      createRevision: Number(kv.create_revision),
      modRevision: Number(kv.mod_revision),
    };
    if (kv.lease !== '0' && kv.lease !== '') out.lease = kv.lease;
    return out;
  }

  /** The comparison for `expectRevision`: 0 = absent (create_revision 0), n = modRevision n. */
  compare(key: string, expectRevision: number): ICompare {
    return expectRevision === 0
      ? { key: this.encode(key), target: 'Create', result: 'Equal', create_revision: 0 }
      : { key: this.encode(key), target: 'Mod', result: 'Equal', mod_revision: expectRevision };
  }

  txn(ops: CommitOp[]): { compare: ICompare[]; success: IRequestOp[] } {
    const compare: ICompare[] = [];
    const success: IRequestOp[] = [];
    for (const op of ops) {
      if (op.expectRevision !== undefined) compare.push(this.compare(op.key, op.expectRevision));
      if (op.op === 'put') {
        success.push({ request_put: { key: this.encode(op.key), value: Buffer.from(op.value, 'utf8'), lease: op.lease ?? 0 } });
      } else if (op.op === 'delete') {
        success.push({ request_delete_range: { key: this.encode(op.key) } });
      }
    }
    return { compare, success };
  }
}

/** The smallest key greater than every key starting with `key` (etcd's clientv3.GetPrefixRangeEnd). */
function prefixEnd(key: Buffer): Buffer {
  for (let i = key.length - 1; i >= 0; i--) {
    if (key[i]! < 0xff) {
      const end = Buffer.from(key.subarray(0, i + 1));
      end[i]! += 1;
      return end;
    }
  }
  return Buffer.from([0]);
}

export function checkLeaseId(lease: unknown): void {
  if (lease !== undefined && (typeof lease !== 'string' || !/^[1-9][0-9]{0,18}$/.test(lease))) {
    throw new PrismError('NOT_FOUND', `lease ${String(lease)} does not exist; grant a new lease`);
  }
}


/** Maps etcd3 failures to codes at the edge that saw them; PrismErrors pass through. */
export function translate(e: unknown, context: string): PrismError {
  if (e instanceof PrismError) return e;
  const msg = `${context}: ${e instanceof Error ? e.message : String(e)}`;
  const code = e instanceof EtcdLeaseInvalidError ? 'NOT_FOUND'
    : e instanceof GRPCDeadlineExceededError ? 'DEADLINE_EXCEEDED'
    : e instanceof EtcdPermissionDeniedError ? 'PERMISSION_DENIED'
    : e instanceof EtcdAuthenticationFailedError ? 'UNAUTHENTICATED'
    : e instanceof GRPCInvalidArgumentError ? 'INVALID_ARGUMENT'
    : e instanceof GRPCResourceExhastedError ? 'RESOURCE_EXHAUSTED'
    : e instanceof ClientClosedError || transient(e) ? 'UNAVAILABLE'
    : 'INTERNAL';
  return new PrismError(code, msg, { cause: e, retryable: code === 'UNAVAILABLE' || code === 'DEADLINE_EXCEEDED' });
}
