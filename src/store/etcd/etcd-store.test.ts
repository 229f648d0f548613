import { spawnSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { storeConformanceSuite } from '../../../test/conformance/store-suite.js';
import { EtcdCluster, etcdSkipReason as skipReason } from '../../../test/fixtures/etcd-cluster.js';
import type { PrismError } from '../../core/errors.js';
import type { WatchEvent } from '../store.js';
import { EtcdStore } from './etcd-store.js';

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
if (skipReason) console.log(`skipping etcd store tests: ${skipReason}`);

let prefixSeq = 0;
const uniquePrefix = () => `prism-test/${process.pid}-${Date.now()}-${++prefixSeq}/`;

describe.skipIf(skipReason !== '')('EtcdStore (single member)', () => {
  const cluster = new EtcdCluster();
  beforeAll(() => cluster.start(1));
  afterAll(() => cluster.stop());

  // etcd raises TTLs to its minimum, 1.5 x election timeout rounded up to whole seconds: 2 s by default.
  storeConformanceSuite('etcd', async () => {
    const store = await EtcdStore.connect({ endpoints: cluster.endpoints(), prefix: uniquePrefix() });
    return { store, cleanup: () => store.close() };
  }, { leaseTtlMs: 2000 });

  it('keeps tests apart by prefix and hides it from keys, lists and events', async () => {
    const a = await EtcdStore.connect({ endpoints: cluster.endpoints(), prefix: uniquePrefix() });
    const b = await EtcdStore.connect({ endpoints: cluster.endpoints(), prefix: uniquePrefix() });
    try {
      const events: WatchEvent[] = [];
      const w = a.watch('', await a.revision(), (e) => events.push(e));
      const rev = await a.put('k', 'from a');
      await b.put('k', 'from b');
      await b.put('other', 'b only');
      await expect(a.list('')).resolves.toEqual([{ key: 'k', value: 'from a', createRevision: rev, modRevision: rev }]);
      await sleep(200);
      w.close();
      expect(events).toEqual([{ type: 'put', key: 'k', value: 'from a', revision: rev }]);
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('reports a watch from a compacted revision as FAILED_PRECONDITION and stops it', async () => {
    const store = await EtcdStore.connect({ endpoints: cluster.endpoints(), prefix: uniquePrefix() });
    try {
      const r1 = await store.put('c/1', 'a');
      const r2 = await store.put('c/1', 'b');
      const compact = spawnSync('etcdctl', ['--endpoints', cluster.endpoints()[0]!, 'compaction', String(r2)],
        { env: { ...process.env, ETCDCTL_API: '3' } });
      expect(compact.status).toBe(0);
      const errors: PrismError[] = [];
      const events: WatchEvent[] = [];
      store.watch('c/', r1 - 1, (e) => events.push(e), (e) => errors.push(e));
      await vi_waitFor(() => errors.length > 0);
      expect(errors.map((e) => e.code)).toEqual(['FAILED_PRECONDITION']);
      expect(events).toEqual([]);
    } finally {
      await store.close();
    }
  });

  it('lists more keys than one page, sorted, at one revision', async () => {
    const store = await EtcdStore.connect({ endpoints: cluster.endpoints(), prefix: uniquePrefix() });
    try {
      const keys = Array.from({ length: 2500 }, (_, i) => `p/${String(i).padStart(5, '0')}`);
      for (let i = 0; i < keys.length; i += 100) {
        await store.commit(keys.slice(i, i + 100).map((key) => ({ op: 'put' as const, key, value: key })));
      }
      expect((await store.list('p/')).map((kv) => kv.key)).toEqual(keys);
    } finally {
      await store.close();
    }
  });
});

async function vi_waitFor(cond: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error('timed out');
    await sleep(10);
  }
}

describe.skipIf(skipReason !== '')('EtcdStore (3 members, leader killed)', () => {
  const cluster = new EtcdCluster();
  beforeAll(() => cluster.start(3));
  afterAll(() => cluster.stop());

  it('completes writes within a bounded stall and keeps watches gap-free', async () => {
    const store = await EtcdStore.connect({ endpoints: cluster.endpoints(), prefix: uniquePrefix() });
    try {
      const events: WatchEvent[] = [];
      const watch = store.watch('f/', await store.revision(), (e) => events.push(e));
      const written: { key: string; revision: number }[] = [];
      const latencies: { at: number; ms: number }[] = [];
      let killedAt = 0;
      const writer = (async () => {
        for (let i = 0; !killedAt || Date.now() - killedAt < 5000; i++) {
          const t0 = Date.now();
          const key = `f/${String(i).padStart(6, '0')}`;
          written.push({ key, revision: await store.put(key, String(i)) });
          latencies.push({ at: t0, ms: Date.now() - t0 });
          await sleep(5);
        }
      })();
      await sleep(1000);
      const leader = cluster.leader();
      killedAt = Date.now();
      await cluster.kill(leader);
      await writer;
      const stall = Math.max(...latencies.filter((l) => l.at + l.ms >= killedAt).map((l) => l.ms));
      console.log(`etcd leader ${leader.name} killed: longest put after the kill took ${stall} ms ` +
        `(${latencies.length} puts; max before the kill ${Math.max(...latencies.filter((l) => l.at + l.ms < killedAt).map((l) => l.ms))} ms)`);
      expect(stall).toBeLessThan(4000);
      await vi_waitFor(() => events.length >= written.length, 10_000);
      await sleep(200);
      watch.close();
      expect(events.map((e) => [e.key, e.revision])).toEqual(written.map((w) => [w.key, w.revision]));
    } finally {
      await store.close();
    }
  }, 60_000);
});
