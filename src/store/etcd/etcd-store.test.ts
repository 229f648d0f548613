import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { storeConformanceSuite } from '../../../test/conformance/store-suite.js';
import type { PrismError } from '../../core/errors.js';
import type { WatchEvent } from '../store.js';
import { EtcdStore } from './etcd-store.js';

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
const skipReason = spawnSync('etcd', ['--version']).error ? 'the etcd binary is not installed (apt-get install etcd-server etcd-client)' : '';
if (skipReason) console.log(`skipping etcd store tests: ${skipReason}`);

interface Member { name: string; client: string; proc: ChildProcess }

/** Loopback-only etcd members on free ports with a temp data dir; `stop` kills them and removes it. */
class EtcdCluster {
  readonly dir = mkdtempSync(join(tmpdir(), 'prism-etcd-'));
  members: Member[] = [];

  async start(size: number): Promise<void> {
    const ports = await freePorts(size * 2);
    const names = Array.from({ length: size }, (_, i) => `m${i}`);
    const peer = (i: number) => `http://127.0.0.1:${ports[2 * i + 1]}`;
    const initial = names.map((n, i) => `${n}=${peer(i)}`).join(',');
    for (const [i, name] of names.entries()) {
      const client = `http://127.0.0.1:${ports[2 * i]}`;
      const proc = spawn('etcd', [
        '--name', name, '--data-dir', join(this.dir, name),
        '--listen-client-urls', client, '--advertise-client-urls', client,
        '--listen-peer-urls', peer(i), '--initial-advertise-peer-urls', peer(i),
        '--initial-cluster', initial, '--initial-cluster-token', `prism-test-${process.pid}`,
        '--initial-cluster-state', 'new', '--log-level', 'error',
      ], { stdio: ['ignore', 'ignore', 'pipe'] });
      proc.stderr!.resume();
      this.members.push({ name, client, proc });
    }
    await Promise.all(this.members.map((m) => waitHealthy(m.client)));
  }

  endpoints(): string[] {
    return this.members.map((m) => m.client);
  }

  /** The member etcdctl reports as leader (simple output: endpoint, id, version, size, IS LEADER, ...). */
  leader(): Member {
    const out = spawnSync('etcdctl', ['--endpoints', this.alive().map((m) => m.client).join(','), 'endpoint', 'status'],
      { encoding: 'utf8', env: { ...process.env, ETCDCTL_API: '3' } }).stdout;
    const line = out.split('\n').find((l) => l.split(', ')[4] === 'true');
    const member = this.members.find((m) => line?.startsWith(`${m.client},`));
    if (!member) throw new Error(`no leader in etcdctl output:\n${out}`);
    return member;
  }

  alive(): Member[] {
    return this.members.filter((m) => m.proc.exitCode === null && m.proc.signalCode === null);
  }

  async kill(m: Member): Promise<void> {
    if (m.proc.exitCode !== null || m.proc.signalCode !== null) return;
    const exited = new Promise((resolve) => m.proc.once('exit', resolve));
    m.proc.kill('SIGKILL');
    await exited;
  }

  async stop(): Promise<void> {
    await Promise.all(this.members.map((m) => this.kill(m)));
    rmSync(this.dir, { recursive: true, force: true });
  }
}

async function freePorts(n: number): Promise<number[]> {
  const servers = await Promise.all(Array.from({ length: n }, () => new Promise<ReturnType<typeof createServer>>((resolve) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => resolve(s));
  })));
  const ports = servers.map((s) => (s.address() as { port: number }).port);
  await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))));
  return ports;
}

async function waitHealthy(url: string): Promise<void> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const ok = await fetch(`${url}/health`).then(async (r) => (await r.json() as { health: string }).health === 'true', () => false);
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`etcd at ${url} did not become healthy in 20 s`);
    await sleep(100);
  }
}

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
