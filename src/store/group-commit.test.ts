import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EtcdCluster, etcdSkipReason } from '../../test/fixtures/etcd-cluster.js';
import { PrismError } from '../core/errors.js';
import { EtcdStore } from './etcd/etcd-store.js';
import { GroupCommit } from './group-commit.js';
import { SqliteStore } from './sqlite/sqlite-store.js';
import type { CommitOp, Store } from './store.js';

const put = (key: string, value: string, expectRevision?: number): CommitOp => ({ op: 'put', key, value, ...(expectRevision !== undefined ? { expectRevision } : {}) });
const outcome = (p: Promise<number>) => p.then((revision) => ({ revision }), (e: unknown) => ({ code: e instanceof PrismError ? e.code : String(e) }));

/** The same behaviour on every Store: group commit is written against the seam, not an implementation. */
function groupCommitSuite(name: string, open: () => Promise<Store>, close: (s: Store) => Promise<void>): void {
  describe(`GroupCommit on ${name}`, () => {
    let store: Store;
    beforeAll(async () => {
      store = await open();
    });
    afterAll(() => close(store));

    it('sends commits issued while one is in flight as one commit at one revision', async () => {
      const group = new GroupCommit(store);
      const results = await Promise.all(Array.from({ length: 10 }, (_, i) => group.commit([put(`/a/${i}`, `v${i}`, 0)])));
      // The first goes alone; the nine queued behind it go together.
      expect(group.stats).toEqual({ sent: 2, merged: 1, splits: 0 });
      expect(new Set(results.slice(1)).size).toBe(1);
      const kvs = await store.list('/a/');
      expect(kvs.map((kv) => kv.value)).toEqual(['v0', 'v1', 'v2', 'v3', 'v4', 'v5', 'v6', 'v7', 'v8', 'v9']);
      for (const [i, kv] of kvs.entries()) expect(kv.modRevision).toBe(results[i]);
    });

    it('fails only the commit whose comparison fails; the others of its group still land', async () => {
      const taken = await store.put('/b/taken', 'first');
      const group = new GroupCommit(store);
      const first = group.commit([put('/b/lead', 'x')]);
      const rest = [
        group.commit([put('/b/1', 'one', 0)]),
        group.commit([put('/b/taken', 'second', 0), put('/b/with-taken', 'never')]),
        group.commit([put('/b/2', 'two', 0), { op: 'check', key: '/b/taken', expectRevision: taken }]),
      ];
      const results = await Promise.all([first, ...rest].map(outcome));
      expect(results[2]).toEqual({ code: 'CONFLICT' });
      expect(results.filter((r) => 'revision' in r)).toHaveLength(3);
      expect(group.stats.splits).toBe(1);
      const kvs = Object.fromEntries((await store.list('/b/')).map((kv) => [kv.key, kv.value]));
      // Nothing of the refused commit, everything of the others.
      expect(kvs).toEqual({ '/b/lead': 'x', '/b/1': 'one', '/b/2': 'two', '/b/taken': 'first' });
    });

    it('keeps commits on one key apart and in order', async () => {
      const group = new GroupCommit(store);
      const results = await Promise.all([
        group.commit([put('/c/lead', 'x')]),
        group.commit([put('/c/k', 'one', 0)]),
        group.commit([put('/c/other', 'y')]),
        group.commit([put('/c/k', 'two')]),
      ].map(outcome));
      expect(results.every((r) => 'revision' in r)).toBe(true);
      expect((await store.get('/c/k'))?.value).toBe('two');
      expect(group.stats.splits).toBe(0);
    });

    it('answers an invalid commit with its own error without failing the rest', async () => {
      const group = new GroupCommit(store);
      const results = await Promise.all([
        group.commit([put('/d/lead', 'x')]),
        group.commit([put('/d/1', 'one')]),
        group.commit([put('', 'no key')]),
      ].map(outcome));
      expect(results.map((r) => ('code' in r ? r.code : 'ok'))).toEqual(['ok', 'ok', 'INVALID_ARGUMENT']);
      expect((await store.get('/d/1'))?.value).toBe('one');
    });

    it('splits a group at the operation limit', async () => {
      const group = new GroupCommit(store, { maxOps: 4, maxBytes: 1 << 20 });
      await Promise.all(Array.from({ length: 9 }, (_, i) => group.commit([put(`/e/${i}a`, 'x'), put(`/e/${i}b`, 'y')])));
      // 1 alone, then 8 queued commits of 2 operations in groups of 2.
      expect(group.stats.sent).toBe(5);
      expect(await store.list('/e/')).toHaveLength(18);
    });
  });
}

groupCommitSuite('sqlite', async () => SqliteStore.open(':memory:'), (s) => s.close());

let prefixSeq = 0;
if (etcdSkipReason) console.log(`skipping group commit on etcd: ${etcdSkipReason}`);
describe.skipIf(etcdSkipReason !== '')('etcd', () => {
  const cluster = new EtcdCluster();
  beforeAll(() => cluster.start(1));
  afterAll(() => cluster.stop());
  groupCommitSuite('etcd', () => EtcdStore.connect({ endpoints: cluster.endpoints(), prefix: `prism-test/${process.pid}-${++prefixSeq}/` }), (s) => s.close());
});
