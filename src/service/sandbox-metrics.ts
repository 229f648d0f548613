import type { Sandbox } from '../core/types.js';
import type { SandboxMetricWire } from '../core/wire.js';
import type { NetworkTraffic } from '../net/network-manager.js';
import type { TaskStats } from '../runtime/driver.js';
import type { Logger } from './logger.js';

/** Where samples come from: the node agent's driver stats of a task this node runs, and its network's counters. */
export interface StatsSource {
  taskStats(id: string): Promise<{ stats: TaskStats; cpus: number; network?: NetworkTraffic }>;
}

/** The records the sampler follows: this node's sandboxes, listed once and then as they change. */
export interface SandboxFeed {
  listSandboxes(): Promise<Sandbox[]>;
  /** Calls `fn` on every change of a sandbox record (`undefined`: deleted); returns the unsubscribe. */
  onChange(fn: (id: string, sb: Sandbox | undefined) => void): () => void;
}

export interface SandboxMetricsOptions {
  /** Time between samples of every running sandbox; 0 = no background sampling (only on request). */
  intervalMs: number;
  /** How much history each sandbox keeps (a ring of retentionMs / intervalMs samples). */
  retentionMs: number;
  /** Sandboxes sampled at once (each sample reads a few cgroup files and a statfs). */
  concurrency?: number;
}

/** A running sandbox's newest sample, for the node's Prometheus metrics (src/service/prometheus.ts). */
export interface SandboxUsage {
  id: string;
  name: string;
  runtime: string;
  /** CPU time since the task started, from its cgroup (or the engine, or the guest). */
  cpuSeconds: number;
  memoryBytes: number;
  memoryLimitBytes: number;
  pids: number;
  diskUsedBytes: number;
  /** Only for a sandbox with a network: bytes received and sent since its link was made. */
  network?: NetworkTraffic;
}

export const DEFAULT_METRICS: SandboxMetricsOptions = { intervalMs: 5000, retentionMs: 3600_000 };

/** Fields stored per sample, in this order, in a series' Float64Array ring. */
const FIELDS = 6; // timestamp ms, cpu %, memUsed, memCache, diskUsed, pids

/** Samples a series has room for at first; it doubles up to its capacity as they come. */
const FIRST_SLOTS = 16;

/**
 * One sandbox's samples: a ring (no allocation per sample) and the counters of the last one. The ring
 * starts small and doubles until it holds `capacity` samples, so the thousand short-lived or
 * just-made sandboxes of a busy node do not each carry an hour's worth of empty slots.
 */
class Series {
  private ring: Float64Array;
  /**
   * Network bytes received and sent per sample (NaN: none then), beside the ring at the same index;
   * made at the first sample with a network, so most sandboxes (egress none) never carry it.
   */
  private net?: Float64Array;
  /** Samples the ring holds now (<= capacity). */
  private slots: number;
  private head = 0;
  private count = 0;
  memTotal = 0;
  diskTotal = 0;
  cpus = 0;
  lastCpuNs = 0;
  lastAt = 0;

  constructor(readonly capacity: number) {
    this.slots = Math.min(capacity, FIRST_SLOTS);
    this.ring = new Float64Array(this.slots * FIELDS);
  }

  push(at: number, cpuPct: number, s: TaskStats, net: NetworkTraffic | undefined): void {
    if (this.count === this.slots && this.slots < this.capacity) this.grow();
    const o = this.head * FIELDS;
    this.ring.set([at, cpuPct, s.memoryBytes, s.memoryCacheBytes, s.diskUsedBytes, s.pids], o);
    if (net && !this.net) this.net = new Float64Array(this.slots * 2).fill(NaN);
    this.net?.set([net?.rxBytes ?? NaN, net?.txBytes ?? NaN], this.head * 2);
    this.head = (this.head + 1) % this.slots;
    this.count = Math.min(this.count + 1, this.slots);
  }

  /** A full ring doubles (up to capacity), its samples copied oldest first. */
  private grow(): void {
    const slots = Math.min(this.capacity, this.slots * 2);
    const ring = new Float64Array(slots * FIELDS);
    const net = this.net && new Float64Array(slots * 2).fill(NaN);
    for (let i = 0; i < this.count; i++) {
      const from = this.index(i);
      ring.set(this.ring.subarray(from * FIELDS, (from + 1) * FIELDS), i * FIELDS);
      net?.set(this.net!.subarray(from * 2, from * 2 + 2), i * 2);
    }
    [this.ring, this.net, this.slots, this.head] = [ring, net, slots, this.count];
  }

  /** Ring index of the i-th sample held, oldest first. */
  private index(i: number): number {
    return (this.head - this.count + i + this.slots) % this.slots;
  }

  /** The newest sample's memory used, disk used, pids and network counters; undefined before the first. */
  latest(): { memUsed: number; diskUsed: number; pids: number; network?: NetworkTraffic } | undefined {
    if (this.count === 0) return undefined;
    const i = this.index(this.count - 1);
    const o = i * FIELDS;
    const network = this.network(i);
    return { memUsed: this.ring[o + 2]!, diskUsed: this.ring[o + 4]!, pids: this.ring[o + 5]!, ...(network ? { network } : {}) };
  }

  /** The network counters of the sample at ring index `i`, if it had them. */
  private network(i: number): NetworkTraffic | undefined {
    const rxBytes = this.net?.[i * 2] ?? NaN;
    return Number.isNaN(rxBytes) ? undefined : { rxBytes, txBytes: this.net![i * 2 + 1]! };
  }

  get newest(): number {
    return this.count === 0 ? 0 : this.ring[this.index(this.count - 1) * FIELDS]!;
  }

  /** Samples with startMs <= timestamp <= endMs, oldest first. */
  read(startMs: number, endMs: number): SandboxMetricWire[] {
    const out: SandboxMetricWire[] = [];
    for (let i = 0; i < this.count; i++) {
      const idx = this.index(i);
      const o = idx * FIELDS;
      const at = this.ring[o]!;
      if (at < startMs || at > endMs) continue;
      const net = this.network(idx);
      out.push({
        timestamp: new Date(at).toISOString(),
        cpuUsedPct: this.ring[o + 1]!,
        cpuCount: this.cpus,
        memUsed: this.ring[o + 2]!,
        memTotal: this.memTotal,
        memCache: this.ring[o + 3]!,
        diskUsed: this.ring[o + 4]!,
        diskTotal: this.diskTotal,
        pids: this.ring[o + 5]!,
        ...(net ? { netRxBytes: net.rxBytes, netTxBytes: net.txBytes } : {}),
      });
    }
    return out;
  }
}

/**
 * Usage over time of the sandboxes this node runs: every `intervalMs` each running sandbox's task is
 * asked for its stats (driver.stats: cgroup files and a statfs for oci, the engine for docker, the
 * guest agent for microvm), with the byte counters of its network link when it has one (the same
 * host link on every runtime), and a sample kept in a bounded ring per sandbox. CPU is the share of the
 * sandbox's `cpus` used since the previous sample. A sandbox's history goes when it is deleted;
 * stopped sandboxes keep theirs (no new samples). Reads of a running sandbox whose newest sample is
 * older than the interval sample it first, so a sandbox just made has a sample at once.
 *
 * Only the node running a sandbox has its samples; the API forwards requests there (owner routes).
 */
export class SandboxMetrics {
  private readonly series = new Map<string, Series>();
  /** Running sandboxes of this node, with when they started (the first sample's CPU baseline). */
  private readonly running = new Map<string, number>();
  /** Name and runtime of the sandboxes with samples here (labels of their Prometheus series). */
  private readonly names = new Map<string, { name: string; runtime: string }>();
  private timer?: NodeJS.Timeout;
  private unsubscribe?: () => void;
  private ticks = 0;
  private sampling?: Promise<void>;
  private readonly inflight = new Map<string, Promise<void>>();

  constructor(
    private readonly nodeId: string,
    private readonly feed: SandboxFeed,
    private readonly source: StatsSource,
    private readonly log: Logger,
    readonly opts: SandboxMetricsOptions = DEFAULT_METRICS,
  ) {}

  private get capacity(): number {
    return Math.max(1, Math.ceil(this.opts.retentionMs / Math.max(this.opts.intervalMs || 5000, 1)));
  }

  async start(): Promise<void> {
    this.unsubscribe = this.feed.onChange((id, sb) => this.follow(id, sb));
    await this.resync();
    if (this.opts.intervalMs > 0) {
      this.timer = setInterval(() => void this.tick(), this.opts.intervalMs);
      this.timer.unref();
    }
  }

  stop(): void {
    clearInterval(this.timer);
    this.unsubscribe?.();
  }

  /** Samples of one sandbox in [startMs, endMs], oldest first; empty when this node has none. */
  async read(sb: Sandbox, range: { startMs?: number; endMs?: number } = {}): Promise<SandboxMetricWire[]> {
    this.follow(sb.id, sb);
    const series = this.series.get(sb.id);
    const stale = !series || Date.now() - series.newest >= (this.opts.intervalMs || 1000);
    if (this.running.has(sb.id) && stale) await this.sampleOne(sb.id);
    return this.series.get(sb.id)?.read(range.startMs ?? 0, range.endMs ?? Number.MAX_SAFE_INTEGER) ?? [];
  }

  /** The newest sample of each running sandbox of this node (no read: what the sampler last took). */
  current(): SandboxUsage[] {
    const out: SandboxUsage[] = [];
    for (const id of this.running.keys()) {
      const s = this.series.get(id);
      const last = s?.latest();
      const names = this.names.get(id);
      if (!s || !last || !names) continue;
      out.push({
        id, ...names, cpuSeconds: s.lastCpuNs / 1e9, memoryBytes: last.memUsed, memoryLimitBytes: s.memTotal, pids: last.pids, diskUsedBytes: last.diskUsed,
        ...(last.network ? { network: last.network } : {}),
      });
    }
    return out;
  }

  /** Sandbox ids that have samples here (for tests and leak checks). */
  sampled(): string[] {
    return [...this.series.keys()];
  }

  private follow(id: string, sb: Sandbox | undefined): void {
    if (!sb || sb.status === 'deleting') {
      this.running.delete(id);
      this.series.delete(id);
      this.names.delete(id);
    } else if (sb.node === this.nodeId && sb.status === 'running') {
      this.names.set(id, { name: sb.name, runtime: sb.runtime });
      const started = Date.parse(sb.startedAt ?? sb.createdAt);
      // A restart starts the counters again: forget the previous run's CPU baseline.
      if (this.running.get(id) !== started) {
        const s = this.series.get(id);
        if (s) s.lastAt = 0;
      }
      this.running.set(id, started);
    } else {
      this.running.delete(id);
      if (sb.node !== this.nodeId) {
        this.series.delete(id);
        this.names.delete(id);
      }
    }
  }

  /** Records missed while the store's watch resynchronised are picked up by a periodic re-list. */
  private async resync(): Promise<void> {
    const all = await this.feed.listSandboxes();
    const seen = new Set(all.map((sb) => sb.id));
    for (const id of [...this.series.keys(), ...this.running.keys()]) if (!seen.has(id)) this.follow(id, undefined);
    for (const sb of all) this.follow(sb.id, sb);
  }

  private async tick(): Promise<void> {
    if (this.sampling) return; // the previous round is still running: skip rather than pile up
    this.sampling = (async () => {
      if (++this.ticks % 12 === 0) await this.resync().catch((e) => this.log.warn({ err: e }, 'metrics: listing sandboxes failed'));
      const ids = [...this.running.keys()];
      const width = this.opts.concurrency ?? 16;
      for (let i = 0; i < ids.length; i += width) await Promise.all(ids.slice(i, i + width).map((id) => this.sampleOne(id)));
    })().finally(() => (this.sampling = undefined));
    await this.sampling;
  }

  /** One read at a time per sandbox: a read on request joins the background one in flight. */
  private sampleOne(id: string): Promise<void> {
    let p = this.inflight.get(id);
    if (!p) {
      p = this.take(id).finally(() => this.inflight.delete(id));
      this.inflight.set(id, p);
    }
    return p;
  }

  private async take(id: string): Promise<void> {
    let got;
    try {
      got = await this.source.taskStats(id);
    } catch (e) {
      // Stopped or gone between the record and the read: the next record change says which.
      this.log.debug({ err: e, sandbox: id }, 'metrics: no sample');
      return;
    }
    const started = this.running.get(id);
    if (started === undefined) return; // deleted or stopped while it was being read
    const now = Date.now();
    let s = this.series.get(id);
    if (!s) this.series.set(id, (s = new Series(this.capacity)));
    const since = s.lastAt || started;
    const cpuNs = got.stats.cpuUsageNs - (s.lastAt ? s.lastCpuNs : 0);
    const wallNs = Math.max(now - since, 1) * 1e6;
    const pct = got.cpus > 0 && cpuNs >= 0 ? Math.min(100, (cpuNs / (wallNs * got.cpus)) * 100) : 0;
    s.cpus = got.cpus;
    s.memTotal = got.stats.memoryLimitBytes;
    s.diskTotal = got.stats.diskTotalBytes;
    s.lastCpuNs = got.stats.cpuUsageNs;
    s.lastAt = now;
    s.push(now, Math.round(pct * 100) / 100, got.stats, got.network);
  }
}
