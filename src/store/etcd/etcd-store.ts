import { EtcdMembers } from './etcd-members.js';
/**
 * The cluster Store on etcd v3. Revisions, compare-and-swap, atomic commits, watches and leases map
 * one to one onto etcd's own: the Store revision is etcd's revision, a commit is one etcd txn, a watch
 * is an etcd watch from `fromRevision + 1`. Keys live under `prefix` (a namespace; callers never see
 * it), so several stores (or tests) can share one etcd cluster; the revision is cluster-wide.
 *
 * Differences from the SQLite store that callers can see:
 * - Lease TTLs are whole seconds, and etcd raises them to its minimum (1.5 x election timeout rounded
 *   up: 2 s with default settings). `Lease.ttlMs` is the TTL etcd granted.
 * - A watch from a compacted revision cannot fail synchronously (the stream is asynchronous); it is
 *   reported as FAILED_PRECONDITION to `onError` (4th argument of `watch`), and the watch stops.
 * - After a failure whose outcome is unknown (the connection dropped or the deadline passed while the
 *   write was in flight), a compare-and-swap write is not retried: it throws UNAVAILABLE and the
 *   caller re-reads, as after a CONFLICT. Writes without comparisons are retried (the final state is the
 *   same; an extra revision may appear, and a retried `delete` may report false).
 */
import { Etcd3, type IOptions } from 'etcd3';
import { readFile } from 'node:fs/promises';
import { PrismError } from '../../core/errors.js';
import type { CommitOp, KeyValue, Lease, PutOptions, Store, Watch, WatchEvent } from '../store.js';
import { checkKey, invalid, validateOps } from '../store-input.js';
import { KeyCodec, checkLeaseId, translate } from './etcd-codec.js';
import { EtcdWatch } from './etcd-watch.js';
import { hostBreaker, notApplied, passThroughPolicy, transient, withRetry } from './fault-policy.js';

export interface EtcdStoreOptions {
  endpoints: string[];
  /** Key namespace; default ''. */
  prefix?: string;
  /** PEM file paths. `ca` is required with `cert`/`key`; without it, https endpoints use system roots. */
  tls?: { ca?: string; cert?: string; key?: string };
  /** How long `connect` waits for the first answer. Default 5000 ms. */
  dialTimeoutMs?: number;
  /** Deadline of one request attempt. Default 1500 ms (see fault-policy.ts). */
  attemptTimeoutMs?: number;
  /** Total time one call may spend retrying. Default 10000 ms. */
  retryBudgetMs?: number;
}

type CallKind = 'read' | 'write' | 'cas';

const PAGE = 1000;

export class EtcdStore implements Store {
  private readonly codec: KeyCodec;
  private readonly watches = new Set<Watch>();
  private closed = false;

  private constructor(private readonly client: Etcd3, prefix: string, private readonly retryBudgetMs: number) {
    this.codec = new KeyCodec(prefix);
  }

  static async connect(opts: EtcdStoreOptions): Promise<EtcdStore> {
    if (!Array.isArray(opts.endpoints) || opts.endpoints.length === 0) throw invalid('etcd endpoints must not be empty');
    const attemptMs = opts.attemptTimeoutMs ?? 1500;
    const dialMs = opts.dialTimeoutMs ?? 5000;
    const options: IOptions = {
      hosts: opts.endpoints,
      dialTimeout: dialMs,
      credentials: await loadTls(opts.tls),
      defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + attemptMs }),
      faultHandling: { host: () => hostBreaker(), global: passThroughPolicy() },
    };
    const client = new Etcd3(options);
    const store = new EtcdStore(client, opts.prefix ?? '', opts.retryBudgetMs ?? 10_000);
    try {
      await withRetry(() => client.kv.range({ key: Buffer.from([0]), count_only: true }), {
        budgetMs: dialMs, retryable: transient, isClosed: () => false,
      });
    } catch (e) {
      client.close();
      throw new PrismError('UNAVAILABLE', `cannot reach etcd at ${opts.endpoints.join(', ')}: ${String(e)}`, { cause: e });
    }
    return store;
  }

  /** etcd's membership API on this store's client (managed members: src/cluster). */
  members(): EtcdMembers {
    return new EtcdMembers(this.client);
  }

  async get(key: string): Promise<KeyValue | undefined> {
    checkKey(key);
    const res = await this.call('read', 'get', () => this.client.kv.range({ key: this.codec.encode(key) }));
    const kv = res.kvs[0];
    return kv && this.codec.toKeyValue(kv);
  }

  async list(prefix: string): Promise<KeyValue[]> {
    if (typeof prefix !== 'string') throw invalid('prefix must be a string');
    const { key, range_end } = this.codec.range(prefix);
    const out: KeyValue[] = [];
    // Paged at one revision, so a large listing is a consistent snapshot without one huge response.
    let from = key;
    let revision: string | undefined;
    for (;;) {
      const res = await this.call('read', 'list', () =>
        this.client.kv.range({ key: from, range_end, limit: PAGE, revision }));
      revision = res.header.revision;
      for (const kv of res.kvs) out.push(this.codec.toKeyValue(kv));
      if (!res.more || res.kvs.length === 0) return out;
      from = Buffer.concat([res.kvs[res.kvs.length - 1]!.key, Buffer.from([0])]);
    }
  }

  async put(key: string, value: string, opts: PutOptions = {}): Promise<number> {
    return this.commit([{ op: 'put', key, value, expectRevision: opts.expectRevision, lease: opts.lease }]);
  }

  async delete(key: string, opts: { expectRevision?: number } = {}): Promise<boolean> {
    const res = await this.txn([{ op: 'delete', key, expectRevision: opts.expectRevision }]);
    return Number(res.responses[0]?.response_delete_range.deleted ?? 0) > 0;
  }

  async commit(ops: CommitOp[]): Promise<number> {
    return Number((await this.txn(ops)).header.revision);
  }

  async revision(): Promise<number> {
    const res = await this.call('read', 'revision', () =>
      this.client.kv.range({ key: Buffer.from([0]), count_only: true }));
    return Number(res.header.revision);
  }

  /** `onError` hears why a watch stopped on its own (FAILED_PRECONDITION: history compacted). */
  watch(prefix: string, fromRevision: number, onEvent: (e: WatchEvent) => void,
    onError: (e: PrismError) => void = (e) => process.emitWarning(`prism store: watch stopped: ${e.message}`)): Watch {
    this.assertOpen();
    if (typeof prefix !== 'string') throw invalid('prefix must be a string');
    if (!Number.isSafeInteger(fromRevision) || fromRevision < 0) throw invalid('fromRevision must be an integer >= 0');
    const w: Watch = new EtcdWatch({
      client: this.client.watchClient, codec: this.codec, prefix, fromRevision, onEvent, onError,
      onClose: () => this.watches.delete(w),
    });
    this.watches.add(w);
    return w;
  }

  async grantLease(ttlMs: number): Promise<Lease> {
    if (!Number.isSafeInteger(ttlMs) || ttlMs < 1) throw invalid('lease ttlMs must be a positive integer');
    // Retrying a grant whose answer was lost leaves an unused lease behind; it expires on its own.
    const res = await this.call('write', 'grant lease', () =>
      this.client.leaseClient.leaseGrant({ TTL: Math.ceil(ttlMs / 1000), ID: 0 }));
    const id = res.ID;
    return {
      id,
      ttlMs: Number(res.TTL) * 1000,
      keepAlive: () => this.keepAlive(id),
      revoke: async () => {
        await this.call('write', 'revoke lease', () => this.client.leaseClient.leaseRevoke({ ID: id }))
          .catch((e: unknown) => { if (!(e instanceof PrismError && e.code === 'NOT_FOUND')) throw e; });
      },
    };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const w of [...this.watches]) w.close();
    this.client.close();
  }

  private async txn(ops: CommitOp[]) {
    validateOps(ops, checkLeaseId);
    const kind: CallKind = ops.some((op) => op.expectRevision !== undefined) ? 'cas' : 'write';
    const res = await this.call(kind, 'commit', () => this.client.kv.txn(this.codec.txn(ops)));
    if (!res.succeeded) {
      const keys = ops.filter((op) => op.expectRevision !== undefined).map((op) => `${op.key}@${op.expectRevision}`);
      throw new PrismError('CONFLICT', `a compared key changed (expected ${keys.join(', ')}); re-read and retry`);
    }
    return res;
  }

  /** One keepalive round trip on its own stream: etcd answers TTL 0 for an expired or revoked lease. */
  private async keepAlive(id: string): Promise<void> {
    const ttl = await this.call('read', 'lease keepalive', async () => {
      const stream = await this.client.leaseClient.leaseKeepAlive();
      try {
        return await new Promise<string>((resolve, reject) => {
          stream.on('data', (res: { TTL: string }) => resolve(res.TTL));
          stream.on('error', reject);
          stream.on('end', () => reject(new PrismError('UNAVAILABLE', 'etcd closed the keepalive stream')));
          stream.write({ ID: id });
        });
      } finally {
        // A late 'error' from the cancellation must not become an unhandled event.
        stream.on('error', () => {});
        stream.cancel();
      }
    });
    if (Number(ttl) <= 0) {
      throw new PrismError('NOT_FOUND', `lease ${id} expired or was revoked; grant a new lease and rewrite its keys`);
    }
  }

  /**
   * Runs one etcd call with retries: reads and comparison-free writes on any transient failure,
   * compare-and-swap writes only when the request certainly was not applied (see fault-policy.ts).
   */
  private async call<T>(kind: CallKind, what: string, fn: () => Promise<T>): Promise<T> {
    this.assertOpen();
    try {
      return await withRetry(fn, {
        budgetMs: this.retryBudgetMs,
        retryable: kind === 'cas' ? notApplied : transient,
        isClosed: () => this.closed,
      });
    } catch (e) {
      if (this.closed) throw new PrismError('FAILED_PRECONDITION', 'the store is closed', { cause: e });
      const err = translate(e, `etcd ${what}`);
      if (kind !== 'read' && (err.code === 'UNAVAILABLE' || err.code === 'DEADLINE_EXCEEDED')) {
        throw new PrismError(err.code, `${err.message} (the write may or may not have been applied; re-read and retry)`,
          { cause: e, retryable: true });
      }
      throw err;
    }
  }

  private assertOpen(): void {
    if (this.closed) throw new PrismError('FAILED_PRECONDITION', 'the store is closed');
  }
}

async function loadTls(tls: EtcdStoreOptions['tls']): Promise<IOptions['credentials']> {
  if (!tls || (!tls.ca && !tls.cert && !tls.key)) return undefined;
  if (!tls.ca) throw invalid('etcd tls.cert/tls.key need tls.ca');
  if (!tls.cert !== !tls.key) throw invalid('etcd tls.cert and tls.key go together');
  try {
    return {
      rootCertificate: await readFile(tls.ca),
      certChain: tls.cert ? await readFile(tls.cert) : undefined,
      privateKey: tls.key ? await readFile(tls.key) : undefined,
    };
  } catch (e) {
    throw new PrismError('FAILED_PRECONDITION', `cannot read etcd TLS files: ${String(e)}`, { cause: e });
  }
}
