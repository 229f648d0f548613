import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { Sandbox } from '../core/types.js';
import type { TaskStats } from '../runtime/driver.js';
import { silentLogger } from './logger.js';
import { SandboxMetrics, type SandboxFeed, type StatsSource } from './sandbox-metrics.js';

const MiB = 2 ** 20;

function sandbox(id: string): Sandbox {
  const now = new Date(Date.now()).toISOString();
  return { id, name: id, node: 'n1', status: 'running', startedAt: now, createdAt: now, cpus: 2 } as Sandbox;
}

function stats(cpuUsageNs: number, patch: Partial<TaskStats> = {}): TaskStats {
  return { memoryBytes: 10 * MiB, memoryLimitBytes: 512 * MiB, memoryCacheBytes: MiB, cpuUsageNs, pids: 3, diskUsedBytes: 5 * MiB, diskTotalBytes: 2048 * MiB, ...patch };
}

class Feed implements SandboxFeed {
  records = new Map<string, Sandbox>();
  fn?: (id: string, sb: Sandbox | undefined) => void;
  async listSandboxes() {
    return [...this.records.values()];
  }
  onChange(fn: (id: string, sb: Sandbox | undefined) => void) {
    this.fn = fn;
    return () => (this.fn = undefined);
  }
  set(sb: Sandbox | undefined, id = sb?.id ?? '') {
    if (sb) this.records.set(id, sb);
    else this.records.delete(id);
    this.fn?.(id, sb);
  }
}

describe('SandboxMetrics', () => {
  let feed: Feed;
  let cpu: Map<string, number>;
  let source: StatsSource & { calls: string[] };
  let m: SandboxMetrics;

  beforeEach(() => {
    vi.useFakeTimers({ now: new Date('2026-12-06T00:00:00Z') });
    feed = new Feed();
    cpu = new Map();
    source = {
      calls: [],
      async taskStats(id: string) {
        source.calls.push(id);
        if (!cpu.has(id)) throw new Error('not running');
        return { stats: stats(cpu.get(id)!), cpus: 2 };
      },
    };
  });
  afterEach(() => {
    m?.stop();
    vi.useRealTimers();
  });

  async function start(intervalMs = 1000, retentionMs = 5000) {
    m = new SandboxMetrics('n1', feed, source, silentLogger, { intervalMs, retentionMs });
    await m.start();
  }

  it('samples running sandboxes of this node every interval; CPU is the share of the sandbox cpus since the last sample', async () => {
    feed.set({ ...sandbox('a'), cpus: 2 });
    feed.set({ ...sandbox('other'), node: 'n2' });
    feed.set({ ...sandbox('stopped'), status: 'stopped' });
    cpu.set('a', 0).set('other', 0).set('stopped', 0);
    await start();
    cpu.set('a', 1e9); // 1 s of CPU in 1 s on 2 cpus: 50%
    await vi.advanceTimersByTimeAsync(1000);
    cpu.set('a', 1e9 + 2e9); // 2 s in 1 s: 100%
    await vi.advanceTimersByTimeAsync(1000);
    cpu.set('a', 3e9); // idle
    await vi.advanceTimersByTimeAsync(1000);
    expect(new Set(source.calls)).toEqual(new Set(['a']));
    const samples = await m.read(feed.records.get('a')!);
    expect(samples.map((s) => s.cpuUsedPct)).toEqual([50, 100, 0]);
    expect(samples[0]).toEqual({
      timestamp: '2026-12-06T00:00:01.000Z', cpuUsedPct: 50, cpuCount: 2, memUsed: 10 * MiB, memTotal: 512 * MiB, memCache: MiB, diskUsed: 5 * MiB, diskTotal: 2048 * MiB, pids: 3,
    });
  });

  it('keeps a bounded ring (retention / interval samples) and reads a time window', async () => {
    feed.set(sandbox('a'));
    cpu.set('a', 0);
    await start(1000, 3000);
    await vi.advanceTimersByTimeAsync(10_000);
    const all = await m.read(feed.records.get('a')!);
    expect(all.map((s) => s.timestamp)).toEqual(['2026-12-06T00:00:08.000Z', '2026-12-06T00:00:09.000Z', '2026-12-06T00:00:10.000Z']);
    const window = await m.read(feed.records.get('a')!, { startMs: Date.parse('2026-12-06T00:00:09Z'), endMs: Date.parse('2026-12-06T00:00:09.5Z') });
    expect(window.map((s) => s.timestamp)).toEqual(['2026-12-06T00:00:09.000Z']);
  });

  it('grows the ring as samples come, keeping them in order, up to the retention (40 samples here)', async () => {
    feed.set(sandbox('a'));
    cpu.set('a', 0);
    let rx = 0; // network counters come from the 10th sample on: they grow with the ring too
    const plain = source.taskStats.bind(source);
    source.taskStats = async (id) => ({ ...(await plain(id)), ...(++rx >= 10 ? { network: { rxBytes: rx, txBytes: 2 * rx } } : {}) });
    await start(1000, 40_000);
    const at = (s: number) => new Date(Date.parse('2026-12-06T00:00:00Z') + s * 1000).toISOString();
    await vi.advanceTimersByTimeAsync(17_000); // past the first 16 slots: one doubling
    expect((await m.read(feed.records.get('a')!)).map((s) => s.timestamp)).toEqual(Array.from({ length: 17 }, (_, i) => at(i + 1)));
    await vi.advanceTimersByTimeAsync(83_000); // 100 samples into room for 40: the newest 40
    const all = await m.read(feed.records.get('a')!);
    expect(all.map((s) => s.timestamp)).toEqual(Array.from({ length: 40 }, (_, i) => at(i + 61)));
    expect(all.map((s) => [s.netRxBytes, s.netTxBytes])).toEqual(Array.from({ length: 40 }, (_, i) => [i + 61, 2 * (i + 61)]));
  });

  it('stops sampling a stopped sandbox but keeps its history; forgets a deleted one', async () => {
    feed.set(sandbox('a'));
    cpu.set('a', 0);
    await start();
    await vi.advanceTimersByTimeAsync(2000);
    feed.set({ ...feed.records.get('a')!, status: 'stopped' });
    source.calls = [];
    await vi.advanceTimersByTimeAsync(3000);
    expect(source.calls).toEqual([]);
    expect(await m.read(feed.records.get('a')!)).toHaveLength(2);
    feed.set(undefined, 'a');
    expect(m.sampled()).toEqual([]);
  });

  it('samples on a read when the newest sample is older than the interval (a sandbox just created)', async () => {
    await start(0);
    const sb = sandbox('new');
    cpu.set('new', 5e8);
    await vi.advanceTimersByTimeAsync(1000);
    const samples = await m.read(sb);
    expect(samples).toHaveLength(1);
    // The first sample's CPU is its average since the sandbox started: 0.5 s of 2 cpus over 1 s.
    expect(samples[0]!.cpuUsedPct).toBe(25);
    expect(await m.read(sb)).toHaveLength(1); // fresh enough (interval 0: at most one per second)
  });

  it("carries a networked sandbox's byte counters in its samples and current usage; none for one without a network", async () => {
    feed.set(sandbox('net'));
    feed.set(sandbox('plain'));
    cpu.set('net', 0).set('plain', 0);
    let rx: number | undefined = 1000;
    const plain = source.taskStats.bind(source);
    source.taskStats = async (id) => ({ ...(await plain(id)), ...(id === 'net' && rx !== undefined ? { network: { rxBytes: rx, txBytes: 200 } } : {}) });
    await start();
    await vi.advanceTimersByTimeAsync(1000);
    rx = undefined; // its link gone for a moment (a docker task between namespaces)
    await vi.advanceTimersByTimeAsync(1000);
    rx = 5000;
    await vi.advanceTimersByTimeAsync(1000);
    const samples = await m.read(feed.records.get('net')!);
    expect(samples.map((x) => [x.netRxBytes, x.netTxBytes])).toEqual([[1000, 200], [undefined, undefined], [5000, 200]]);
    expect(samples[1]).not.toHaveProperty('netRxBytes');
    const none = await m.read(feed.records.get('plain')!);
    expect(none[0]).not.toHaveProperty('netRxBytes');
    const usage = new Map(m.current().map((u) => [u.id, u]));
    expect(usage.get('net')!.network).toEqual({ rxBytes: 5000, txBytes: 200 });
    expect(usage.get('plain')).not.toHaveProperty('network');
  });

  it('a sandbox that fails to answer gets no sample and no error; one read at a time per sandbox', async () => {
    feed.set(sandbox('gone'));
    await start();
    await vi.advanceTimersByTimeAsync(1000);
    expect(await m.read(feed.records.get('gone')!)).toEqual([]);
    cpu.set('gone', 0);
    source.calls = [];
    const reads = await Promise.all([m.read(feed.records.get('gone')!), m.read(feed.records.get('gone')!)]);
    expect(source.calls).toHaveLength(1);
    expect(reads[0]).toHaveLength(1);
  });
});
