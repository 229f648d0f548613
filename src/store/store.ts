import type { PrismError } from '../core/errors.js';

/**
 * The Store seam: a small revisioned key-value store with compare-and-swap, atomic multi-key commits,
 * prefix watches and leases. SQLite implements it for one node, etcd for a cluster; both must pass
 * test/conformance/store-suite.ts.
 *
 * Contract:
 * - Every successful write bumps one global, monotonically increasing revision; the written key's
 *   `modRevision` is that revision. Deletes bump it too.
 * - `expectRevision` on a write is compare-and-swap: `0` means "the key must not exist", `n > 0`
 *   means "the key's modRevision must be exactly n". A failed comparison throws PrismError CONFLICT and
 *   writes nothing.
 * - `commit` applies all operations atomically at a single revision, or none of them.
 * - `watch(prefix, fromRevision)` delivers every change to keys under `prefix` with revision >
 *   `fromRevision`, in revision order, exactly once, including changes made before the call (as long as
 *   the store still has them; a compacted history throws FAILED_PRECONDITION).
 * - A key written with a lease is deleted (and a delete event is delivered) when the lease expires or
 *   is revoked. Leases expire when not kept alive within their TTL.
 * - Values are opaque strings (callers store JSON).
 * - A write that fails with UNAVAILABLE or DEADLINE_EXCEEDED may or may not have been applied (a
 *   networked store lost the answer): callers re-read before retrying anything that is not idempotent.
 */

export interface KeyValue {
  key: string;
  value: string;
  /** Revision of the write that created the key (survives updates, not delete + re-create). */
  createRevision: number;
  /** Revision of the last write to the key. */
  modRevision: number;
  lease?: string;
}

export interface WatchEvent {
  type: 'put' | 'delete';
  key: string;
  /** The new value for `put`; absent for `delete`. */
  value?: string;
  revision: number;
}

export interface PutOptions {
  expectRevision?: number;
  lease?: string;
}

export type CommitOp =
  | { op: 'put'; key: string; value: string; expectRevision?: number; lease?: string }
  | { op: 'delete'; key: string; expectRevision?: number }
  /** A pure check: the key's modRevision must equal `expectRevision` (0 = absent). */
  | { op: 'check'; key: string; expectRevision: number };

export interface Watch {
  close(): void;
}

export interface Lease {
  id: string;
  ttlMs: number;
  /** Renews the lease. Throws NOT_FOUND when it already expired. */
  keepAlive(): Promise<void>;
  /** Revokes the lease and deletes its keys. Idempotent. */
  revoke(): Promise<void>;
}

export interface Store {
  get(key: string): Promise<KeyValue | undefined>;
  /** All keys starting with `prefix`, sorted by key. */
  list(prefix: string): Promise<KeyValue[]>;
  /** Writes `key`; returns the new revision. */
  put(key: string, value: string, opts?: PutOptions): Promise<number>;
  /** Deletes `key`; returns false when it did not exist (and no expectRevision was given). */
  delete(key: string, opts?: { expectRevision?: number }): Promise<boolean>;
  /** Applies all operations atomically; returns the new revision. CONFLICT when a comparison fails. */
  commit(ops: CommitOp[]): Promise<number>;
  /** The store's current revision. */
  revision(): Promise<number>;
  /**
   * `onError` hears of failures that arrive after the call returned (etcd reports a compacted start
   * revision over the stream): FAILED_PRECONDITION, after which the watch has stopped. A store that can
   * tell at once throws from `watch` instead.
   */
  watch(prefix: string, fromRevision: number, onEvent: (e: WatchEvent) => void, onError?: (e: PrismError) => void): Watch;
  grantLease(ttlMs: number): Promise<Lease>;
  /** Releases resources. Idempotent. Watches stop; leases are left to expire. */
  close(): Promise<void>;
}
