/**
 * The single-node Store: one SQLite file owned by one daemon. better-sqlite3 is synchronous, so every
 * transaction runs to completion on the event loop; that is what makes CAS, commits and "replay history
 * then go live" in `watch` free of races without any locking of our own.
 */
import Database from 'better-sqlite3';
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { PrismError } from '../../core/errors.js';
import type { CommitOp, KeyValue, Lease, PutOptions, Store, Watch, WatchEvent } from '../store.js';
import { checkKey, invalid, validateOps } from '../store-input.js';

export interface SqliteStoreOptions {
  /** How often expired leases are swept (their keys deleted). Default 250 ms. */
  leaseSweepMs?: number;
  /** How many watch events are kept for `watch` from an older revision. Default 10000. */
  historyLimit?: number;
}

interface KvRow { key: string; value: string; create_rev: number; mod_rev: number; lease: string | null }
interface LeaseRow { id: string; ttl_ms: number; expires_at: number }
interface HistoryRow { rev: number; type: 'put' | 'delete'; key: string; value: string | null }
interface Watcher {
  prefix: string;
  after: number;
  onEvent: (e: WatchEvent) => void;
  queue: WatchEvent[];
  scheduled: boolean;
  closed: boolean;
}

const SCHEMA = `
  CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL, create_rev INTEGER NOT NULL,
    mod_rev INTEGER NOT NULL, lease TEXT) WITHOUT ROWID;
  CREATE INDEX IF NOT EXISTS kv_by_lease ON kv (lease) WHERE lease IS NOT NULL;
  CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
  INSERT OR IGNORE INTO meta (name, value) VALUES ('revision', 0), ('compact_revision', 0);
  CREATE TABLE IF NOT EXISTS history (seq INTEGER PRIMARY KEY, rev INTEGER NOT NULL, type TEXT NOT NULL,
    key TEXT NOT NULL, value TEXT);
  CREATE INDEX IF NOT EXISTS history_by_rev ON history (rev);
  CREATE TABLE IF NOT EXISTS leases (id TEXT PRIMARY KEY, ttl_ms INTEGER NOT NULL, expires_at INTEGER NOT NULL)
    WITHOUT ROWID;
`;

const SQL = {
  get: 'SELECT key, value, create_rev, mod_rev, lease FROM kv WHERE key = ?',
  // Keys with a prefix are one contiguous range from the prefix on (BINARY collation is UTF-8 byte
  // order), so we scan from it and stop at the first key outside; no LIKE/GLOB escaping needed.
  scanFrom: 'SELECT key, value, create_rev, mod_rev, lease FROM kv WHERE key >= ? ORDER BY key',
  upsert: `INSERT INTO kv (key, value, create_rev, mod_rev, lease) VALUES (?, ?, ?, ?, ?)
    ON CONFLICT (key) DO UPDATE SET value = excluded.value, mod_rev = excluded.mod_rev, lease = excluded.lease`,
  del: 'DELETE FROM kv WHERE key = ?',
  keysByLease: 'SELECT key FROM kv WHERE lease = ?',
  meta: 'SELECT value FROM meta WHERE name = ?',
  setMeta: 'UPDATE meta SET value = ? WHERE name = ?',
  addEvent: 'INSERT INTO history (rev, type, key, value) VALUES (?, ?, ?, ?)',
  eventsAfter: 'SELECT rev, type, key, value FROM history WHERE rev > ? ORDER BY seq',
  historyBounds: 'SELECT min(seq) AS lo, max(seq) AS hi FROM history',
  revAtOrBefore: 'SELECT rev FROM history WHERE seq <= ? ORDER BY seq DESC LIMIT 1',
  trimHistory: 'DELETE FROM history WHERE rev <= ?',
  getLease: 'SELECT id, ttl_ms, expires_at FROM leases WHERE id = ?',
  addLease: 'INSERT INTO leases (id, ttl_ms, expires_at) VALUES (?, ?, ?)',
  renewLease: 'UPDATE leases SET expires_at = ? WHERE id = ?',
  extendLeases: 'UPDATE leases SET expires_at = expires_at + ?',
  delLease: 'DELETE FROM leases WHERE id = ?',
  expiredLeases: 'SELECT id FROM leases WHERE expires_at <= ?',
} as const;

type Statements = { [K in keyof typeof SQL]: Database.Statement };

/** A gap this much longer than the sweep interval between two turns of the store is the process standing still (creditStall). */
const STALL_MS = 1000;

export class SqliteStore implements Store {
  private readonly q: Statements;
  private readonly watchers = new Set<Watcher>();
  private readonly sweepTimer: NodeJS.Timeout;
  private closed = false;
  /** When (monotonic ms) the store last saw this process run: its sweep timer's tick or a lease operation. */
  private lastTurn = performance.now();

  private constructor(private readonly db: Database.Database, private readonly historyLimit: number, private readonly sweepMs: number) {
    this.q = Object.fromEntries(Object.entries(SQL).map(([k, sql]) => [k, db.prepare(sql)])) as Statements;
    this.sweepTimer = setInterval(() => this.sweep(), sweepMs);
    // A forgotten close() must not keep the process alive.
    this.sweepTimer.unref();
    // Leases that ran out while the daemon was down go now, not one sweep interval after start-up.
    this.sweep();
  }

  static open(path: string, opts: SqliteStoreOptions = {}): SqliteStore {
    const historyLimit = opts.historyLimit ?? 10_000;
    const sweepMs = opts.leaseSweepMs ?? 250;
    if (!Number.isSafeInteger(historyLimit) || historyLimit < 1) throw invalid('historyLimit must be a positive integer');
    if (!(sweepMs > 0)) throw invalid('leaseSweepMs must be positive');
    let db: Database.Database | undefined;
    try {
      db = new Database(path);
      db.pragma('journal_mode = WAL');
      // Another process (backup, sqlite3 shell) may hold the lock briefly; wait rather than fail.
      db.pragma('busy_timeout = 5000');
      // WAL + NORMAL: a commit survives a prismd crash (the case recovery is built for) but may be lost
      // on power loss; FULL would fsync every write on the sandbox create path. The single-node store
      // only; a cluster's durable state lives in etcd.
      db.pragma('synchronous = NORMAL');
      db.exec(SCHEMA);
      return new SqliteStore(db, historyLimit, sweepMs);
    } catch (e) {
      db?.close();
      throw translate(e, `cannot open store database ${path}`);
    }
  }

  async get(key: string): Promise<KeyValue | undefined> {
    this.assertUsable();
    checkKey(key);
    const row = this.run(() => this.q.get.get(key) as KvRow | undefined);
    return row && toKeyValue(row);
  }

  async list(prefix: string): Promise<KeyValue[]> {
    this.assertUsable();
    if (typeof prefix !== 'string') throw invalid('prefix must be a string');
    return this.run(() => {
      const out: KeyValue[] = [];
      for (const row of this.q.scanFrom.iterate(prefix) as IterableIterator<KvRow>) {
        if (!row.key.startsWith(prefix)) break;
        out.push(toKeyValue(row));
      }
      return out;
    });
  }

  async put(key: string, value: string, opts: PutOptions = {}): Promise<number> {
    return this.commitNow([{ op: 'put', key, value, expectRevision: opts.expectRevision, lease: opts.lease }]).revision;
  }

  async delete(key: string, opts: { expectRevision?: number } = {}): Promise<boolean> {
    return this.commitNow([{ op: 'delete', key, expectRevision: opts.expectRevision }]).events.length > 0;
  }

  async commit(ops: CommitOp[]): Promise<number> {
    return this.commitNow(ops).revision;
  }

  async revision(): Promise<number> {
    this.assertUsable();
    return this.run(() => this.meta('revision'));
  }

  watch(prefix: string, fromRevision: number, onEvent: (e: WatchEvent) => void): Watch {
    this.assertUsable();
    if (typeof prefix !== 'string') throw invalid('prefix must be a string');
    if (!Number.isSafeInteger(fromRevision) || fromRevision < 0) throw invalid('fromRevision must be an integer >= 0');
    const watcher: Watcher = { prefix, after: fromRevision, onEvent, queue: [], scheduled: false, closed: false };
    // Reading the history and registering happen in one synchronous step, so no write can fall between
    // the replay and the live events: no gap, no duplicate.
    const replay = this.run(() => {
      const compacted = this.meta('compact_revision');
      if (fromRevision < compacted) {
        throw new PrismError('FAILED_PRECONDITION',
          `cannot watch from revision ${fromRevision}: history up to revision ${compacted} was compacted; ` +
            'list the keys and watch from the current revision');
      }
      return (this.q.eventsAfter.all(fromRevision) as HistoryRow[]).filter((r) => r.key.startsWith(prefix));
    });
    this.watchers.add(watcher);
    this.enqueue(watcher, replay.map(toEvent));
    return {
      close: () => {
        watcher.closed = true;
        watcher.queue.length = 0;
        this.watchers.delete(watcher);
      },
    };
  }

  async grantLease(ttlMs: number): Promise<Lease> {
    this.assertUsable();
    if (!Number.isSafeInteger(ttlMs) || ttlMs < 1) throw invalid('lease ttlMs must be a positive integer');
    const id = randomBytes(8).toString('hex');
    this.run(() => this.q.addLease.run(id, ttlMs, Date.now() + ttlMs));
    return {
      id,
      ttlMs,
      keepAlive: async () => this.keepAlive(id),
      revoke: async () => {
        this.assertUsable();
        this.dropLeases([id]);
      },
    };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.sweepTimer);
    for (const w of this.watchers) {
      w.closed = true;
      w.queue.length = 0;
    }
    this.watchers.clear();
    this.db.close();
  }

  private keepAlive(id: string): void {
    this.assertUsable();
    this.creditStall();
    const now = Date.now();
    const state = this.run(() => this.db.transaction(() => {
      const lease = this.q.getLease.get(id) as LeaseRow | undefined;
      if (!lease) return 'gone';
      if (lease.expires_at <= now) return 'expired';
      this.q.renewLease.run(now + lease.ttl_ms, id);
      return 'renewed';
    })());
    // The sweep may not have run yet; a lease past its TTL must not come back to life.
    if (state === 'expired') this.dropLeases([id]);
    if (state !== 'renewed') {
      throw new PrismError('NOT_FOUND', `lease ${id} expired or was revoked; grant a new lease and rewrite its keys`);
    }
  }

  /**
   * Lease holders live in this process (the store is one daemon's): when the process stood still (its
   * event loop blocked by a long synchronous step, the process stopped or starved of CPU, the host
   * suspended), neither they nor the store ran, and the time is credited to every lease before any
   * lease is judged, as etcd extends its leases when a new leader's lessor takes over. Without it a
   * daemon whose event loop was blocked for longer than its member TTL (a start-up on a slow or
   * emulated machine) expired its own membership and leadership on the next turn, though nothing had
   * failed. A lease its holder stops renewing while the process runs still expires on time; leases
   * that ran out while the daemon was down are not credited (the constructor's sweep drops them).
   */
  private creditStall(): void {
    const now = performance.now();
    const gap = now - this.lastTurn;
    this.lastTurn = now;
    if (gap < this.sweepMs + STALL_MS) return;
    const credit = Math.round(gap - this.sweepMs);
    this.run(() => this.q.extendLeases.run(credit));
    process.emitWarning(`prism store: the process stood still for ${(gap / 1000).toFixed(1)} s; leases were credited that time`);
  }

  private sweep(): void {
    if (this.closed) return;
    try {
      this.creditStall();
      const ids = (this.q.expiredLeases.all(Date.now()) as { id: string }[]).map((r) => r.id);
      if (ids.length > 0) this.dropLeases(ids);
    } catch (e) {
      // A timer has no caller to throw to; the next sweep retries.
      process.emitWarning(`prism store: lease sweep failed: ${String(e)}`);
    }
  }

  /** Deletes leases and all their keys at one revision. Unknown ids are ignored (revoke is idempotent). */
  private dropLeases(ids: string[]): void {
    this.write(() => {
      const ops: CommitOp[] = [];
      for (const id of ids) {
        for (const { key } of this.q.keysByLease.all(id) as { key: string }[]) ops.push({ op: 'delete', key });
        this.q.delLease.run(id);
      }
      return ops;
    });
  }

  private commitNow(ops: CommitOp[]): { revision: number; events: WatchEvent[] } {
    this.assertUsable();
    validateOps(ops);
    return this.write(() => ops);
  }

  /**
   * Runs `prepare` and then the ops in one transaction: every comparison is checked before anything is
   * written, and all writes share one revision. Watchers hear of it only after the commit.
   */
  private write(prepare: () => CommitOp[]): { revision: number; events: WatchEvent[] } {
    const result = this.run(() => this.db.transaction(() => {
      const ops = prepare();
      const before = new Map<string, KvRow | undefined>();
      for (const op of ops) before.set(op.key, this.checkOp(op));
      return this.applyOps(ops, before);
    })());
    for (const w of this.watchers) {
      // `after` matters only for a watch from a future revision.
      this.enqueue(w, result.events.filter((e) => e.revision > w.after && e.key.startsWith(w.prefix)));
    }
    return result;
  }

  private checkOp(op: CommitOp): KvRow | undefined {
    const row = this.q.get.get(op.key) as KvRow | undefined;
    const actual = row?.mod_rev ?? 0;
    if (op.expectRevision !== undefined && op.expectRevision !== actual) {
      throw new PrismError('CONFLICT',
        `key ${op.key} is at revision ${actual}, expected ${op.expectRevision}; re-read it and retry`);
    }
    if (op.op === 'put' && op.lease !== undefined) {
      this.creditStall();
      const lease = this.q.getLease.get(op.lease) as LeaseRow | undefined;
      if (!lease || lease.expires_at <= Date.now()) {
        throw new PrismError('NOT_FOUND', `lease ${op.lease} expired or was revoked; grant a new lease`);
      }
    }
    return row;
  }

  private applyOps(ops: CommitOp[], before: Map<string, KvRow | undefined>): { revision: number; events: WatchEvent[] } {
    const current = this.meta('revision');
    const writes = ops.filter((op) => op.op === 'put' || (op.op === 'delete' && before.get(op.key)));
    // Checks alone and deletes of absent keys change nothing, so they do not cost a revision.
    if (writes.length === 0) return { revision: current, events: [] };
    const rev = current + 1;
    const events: WatchEvent[] = [];
    for (const op of writes) {
      if (op.op === 'put') {
        this.q.upsert.run(op.key, op.value, rev, rev, op.lease ?? null);
        this.q.addEvent.run(rev, 'put', op.key, op.value);
        events.push(Object.freeze({ type: 'put', key: op.key, value: op.value, revision: rev }));
      } else {
        this.q.del.run(op.key);
        this.q.addEvent.run(rev, 'delete', op.key, null);
        events.push(Object.freeze({ type: 'delete', key: op.key, revision: rev }));
      }
    }
    this.q.setMeta.run(rev, 'revision');
    this.trimHistory();
    return { revision: rev, events };
  }

  /**
   * Keeps at most `historyLimit` events, dropping whole revisions so that a watch never sees half a
   * commit. seq only grows and is trimmed from the bottom, so hi - lo + 1 is the event count.
   */
  private trimHistory(): void {
    const { lo, hi } = this.q.historyBounds.get() as { lo: number | null; hi: number | null };
    if (lo === null || hi === null || hi - lo + 1 <= this.historyLimit) return;
    const row = this.q.revAtOrBefore.get(hi - this.historyLimit) as { rev: number } | undefined;
    if (!row) return;
    this.q.trimHistory.run(row.rev);
    if (row.rev > this.meta('compact_revision')) this.q.setMeta.run(row.rev, 'compact_revision');
  }

  private enqueue(w: Watcher, events: WatchEvent[]): void {
    if (events.length === 0 || w.closed) return;
    w.queue.push(...events);
    if (w.scheduled) return;
    w.scheduled = true;
    // Delivered outside the write's call stack, so a callback that writes never re-enters a transaction;
    // its own writes are appended to the queue this loop is draining, keeping revision order.
    queueMicrotask(() => {
      while (!w.closed && w.queue.length > 0) {
        const e = w.queue.shift()!;
        try {
          w.onEvent(e);
        } catch (err) {
          // One faulty subscriber must not stop delivery to itself or others.
          process.emitWarning(`prism store: watch callback for prefix "${w.prefix}" threw: ${String(err)}`);
        }
      }
      w.scheduled = false;
    });
  }

  private meta(name: 'revision' | 'compact_revision'): number {
    return (this.q.meta.get(name) as { value: number }).value;
  }

  private assertUsable(): void {
    if (this.closed) throw new PrismError('FAILED_PRECONDITION', 'the store is closed');
  }

  private run<T>(fn: () => T): T {
    try {
      return fn();
    } catch (e) {
      throw translate(e, 'store');
    }
  }
}

function toKeyValue(r: KvRow): KeyValue {
  const kv: KeyValue = { key: r.key, value: r.value, createRevision: r.create_rev, modRevision: r.mod_rev };
  if (r.lease !== null) kv.lease = r.lease;
  return kv;
}

function toEvent(r: HistoryRow): WatchEvent {
  return Object.freeze(r.type === 'put'
    ? { type: 'put' as const, key: r.key, value: r.value ?? '', revision: r.rev }
    : { type: 'delete' as const, key: r.key, revision: r.rev });
}


/** Maps SQLite failures to codes at the edge that saw them; PrismErrors pass through. */
function translate(e: unknown, context: string): PrismError {
  if (e instanceof PrismError) return e;
  const code = (e as { code?: unknown }).code;
  const msg = `${context}: ${e instanceof Error ? e.message : String(e)}`;
  if (code === 'SQLITE_BUSY' || code === 'SQLITE_LOCKED') return new PrismError('UNAVAILABLE', msg, { cause: e });
  if (code === 'SQLITE_FULL') return new PrismError('RESOURCE_EXHAUSTED', msg, { cause: e });
  return new PrismError('INTERNAL', msg, { cause: e });
}
