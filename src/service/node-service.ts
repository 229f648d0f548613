import { readFile, statfs } from 'node:fs/promises';
import os from 'node:os';
import { PrismError } from '../core/errors.js';
import { DEFAULT_CPU_OVERCOMMIT, DEFAULT_MEMORY_OVERCOMMIT, type NodeCapacity, type NodeInfo, type NodeResources, type RuntimeName, type RuntimeProbeInfo, type SandboxStatus } from '../core/types.js';
import type { Logger } from './logger.js';
import type { SandboxRepo } from './sandbox-repo.js';

export interface NodeIdentity {
  id: string;
  name: string;
  address: string;
  version: string;
  runtimes: RuntimeName[];
  defaultRuntime: RuntimeName;
  runtimeInfo: RuntimeProbeInfo[];
  dataDir: string;
  labels: Record<string, string>;
  /** Overrides of what this node offers to sandboxes; absent fields are measured. */
  capacity: Partial<NodeCapacity>;
}

/** Busy share of all CPUs since the previous sample, from /proc/stat (the first sample: since boot). */
class CpuSampler {
  private prev?: { busy: number; total: number };

  async sample(): Promise<number> {
    const line = (await readFile('/proc/stat', 'utf8')).split('\n', 1)[0] ?? '';
    const f = line.trim().split(/\s+/).slice(1).map(Number);
    const idle = (f[3] ?? 0) + (f[4] ?? 0);
    const total = f.reduce((a, b) => a + b, 0);
    const cur = { busy: total - idle, total };
    const base = this.prev ?? { busy: 0, total: 0 };
    this.prev = cur;
    const dt = cur.total - base.total;
    return dt > 0 ? Math.round(((cur.busy - base.busy) / dt) * 1000) / 10 : 0;
  }
}

/** Real figures for this host: cores, memory (MemAvailable), disk of the data dir, load. */
export async function measureResources(dataDir: string, cpu?: CpuSampler): Promise<NodeResources> {
  const meminfo = await readFile('/proc/meminfo', 'utf8');
  const kb = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+)`, 'm').exec(meminfo)?.[1] ?? 0) * 1024;
  const total = kb('MemTotal') || os.totalmem();
  const available = kb('MemAvailable') || os.freemem();
  const fs = await statfs(dataDir);
  return {
    cpus: os.availableParallelism(),
    memoryBytes: total,
    memoryUsedBytes: total - available,
    diskBytes: fs.blocks * fs.bsize,
    diskUsedBytes: (fs.blocks - fs.bfree) * fs.bsize,
    load1: os.loadavg()[0] ?? 0,
    cpuPercent: cpu ? await cpu.sample() : 0,
  };
}

/**
 * Publishes this node's record (identity, capacity, live usage) to the Store and refreshes it
 * periodically; answers node and cluster queries from the Store, so they read the same on any node.
 */
export class NodeService {
  private timer?: NodeJS.Timeout;
  private readonly startedAt = new Date();
  private readonly cpu = new CpuSampler();

  constructor(
    private readonly self: NodeIdentity,
    private readonly repo: SandboxRepo,
    private readonly log: Logger,
    private readonly refreshMs = 5000,
  ) {}

  setAddress(address: string): void {
    this.self.address = address;
  }

  async start(): Promise<void> {
    await this.publish();
    this.timer = setInterval(() => {
      this.publish().catch((e) => this.log.warn({ err: e }, 'publishing node status failed'));
    }, this.refreshMs);
    this.timer.unref();
  }

  async publish(): Promise<NodeInfo> {
    const resources = await measureResources(this.self.dataDir, this.cpu);
    const now = new Date().toISOString();
    const info: NodeInfo = {
      id: this.self.id,
      name: this.self.name,
      address: this.self.address,
      status: 'alive',
      labels: this.self.labels,
      capacity: {
        cpus: this.self.capacity.cpus ?? resources.cpus,
        // Leave a tenth of the host's memory to the host itself unless told otherwise.
        memoryMb: this.self.capacity.memoryMb ?? Math.floor((resources.memoryBytes / 2 ** 20) * 0.9),
        maxSandboxes: this.self.capacity.maxSandboxes ?? 0,
        cpuOvercommit: this.self.capacity.cpuOvercommit ?? DEFAULT_CPU_OVERCOMMIT,
        memoryOvercommit: this.self.capacity.memoryOvercommit ?? DEFAULT_MEMORY_OVERCOMMIT,
      },
      reserved: { cpus: 0, memoryMb: 0, sandboxes: 0 }, // joined from the reservation key on read
      version: this.self.version,
      runtimes: this.self.runtimes,
      defaultRuntime: this.self.defaultRuntime,
      runtimeInfo: this.self.runtimeInfo,
      resources,
      // Joined on read from the reservation key too, which placement and delete keep: a count made here
      // would list every sandbox record of the cluster on each node every refresh.
      sandboxes: 0,
      startedAt: this.startedAt.toISOString(),
      heartbeatAt: now,
    };
    await this.repo.putNode(info);
    return info;
  }

  async list(): Promise<NodeInfo[]> {
    return this.repo.listNodes();
  }

  async get(idOrName: string): Promise<NodeInfo> {
    if (idOrName === this.self.id || idOrName === this.self.name) await this.publish();
    const n = (await this.repo.listNodes()).find((x) => x.id === idOrName || x.name === idOrName);
    if (!n) throw new PrismError('NOT_FOUND', `node '${idOrName}' not found`);
    return n;
  }

  /** Forgets a dead node's record (its sandboxes must be deleted first). */
  /** `beforeDelete` runs once the node may go, before its record does (its etcd member goes first). */
  async remove(idOrName: string, beforeDelete?: (node: NodeInfo) => Promise<unknown>): Promise<void> {
    const n = await this.get(idOrName);
    if (n.status === 'alive') throw new PrismError('FAILED_PRECONDITION', `node '${n.name}' is alive; stop its prismd first`);
    const left = (await this.repo.listSandboxes()).filter((s) => s.node === n.id).length;
    if (left) throw new PrismError('FAILED_PRECONDITION', `node '${n.name}' still has ${left} sandboxes; delete them first`);
    await beforeDelete?.(n);
    await this.repo.deleteNode(n.id);
  }

  async clusterInfo() {
    const [nodes, sandboxes, leader] = await Promise.all([this.repo.listNodes(), this.repo.listSandboxes(), this.repo.leader()]);
    const byStatus: Partial<Record<SandboxStatus, number>> = {};
    for (const s of sandboxes) byStatus[s.status] = (byStatus[s.status] ?? 0) + 1;
    const leaderNode = nodes.find((n) => n.id === leader?.node);
    return {
      version: this.self.version,
      node: this.self.id,
      nodes: nodes.length,
      nodesAlive: nodes.filter((n) => n.status === 'alive').length,
      nodesDead: nodes.filter((n) => n.status === 'dead').length,
      leader: leader?.node ?? '',
      leaderName: leaderNode?.name ?? '',
      uptimeSec: Math.round((Date.now() - this.startedAt.getTime()) / 1000),
      sandboxes: { total: sandboxes.length, byStatus },
    };
  }

  stop(): void {
    clearInterval(this.timer);
  }
}
