import { readFile, statfs } from 'node:fs/promises';
import os from 'node:os';
import { PrismError } from '../core/errors.js';
import type { NodeInfo, NodeResources, RuntimeName, RuntimeProbeInfo, SandboxStatus } from '../core/types.js';
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
}

/** Real figures for this host: cores, memory (MemAvailable), disk of the data dir, load. */
export async function measureResources(dataDir: string): Promise<NodeResources> {
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
  };
}

/**
 * Publishes this node's record (identity, capacity, live usage) to the Store and refreshes it
 * periodically; answers node and cluster queries from the Store, so they read the same on any node.
 */
export class NodeService {
  private timer?: NodeJS.Timeout;
  private readonly startedAt = new Date();

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
    const sandboxes = (await this.repo.listSandboxes()).filter((s) => s.node === this.self.id).length;
    const now = new Date().toISOString();
    const info: NodeInfo = {
      id: this.self.id,
      name: this.self.name,
      address: this.self.address,
      status: 'alive',
      version: this.self.version,
      runtimes: this.self.runtimes,
      defaultRuntime: this.self.defaultRuntime,
      runtimeInfo: this.self.runtimeInfo,
      resources: await measureResources(this.self.dataDir),
      sandboxes,
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
    if (idOrName === this.self.id || idOrName === this.self.name) return this.publish();
    const n = (await this.repo.listNodes()).find((x) => x.id === idOrName || x.name === idOrName);
    if (!n) throw new PrismError('NOT_FOUND', `node '${idOrName}' not found`);
    return n;
  }

  async clusterInfo() {
    const [nodes, sandboxes] = await Promise.all([this.repo.listNodes(), this.repo.listSandboxes()]);
    const byStatus: Partial<Record<SandboxStatus, number>> = {};
    for (const s of sandboxes) byStatus[s.status] = (byStatus[s.status] ?? 0) + 1;
    return {
      version: this.self.version,
      nodes: nodes.length,
      nodesAlive: nodes.filter((n) => n.status === 'alive').length,
      // A single node leads itself; the etcd backend elects one.
      leader: this.self.id,
      uptimeSec: Math.round((Date.now() - this.startedAt.getTime()) / 1000),
      sandboxes: { total: sandboxes.length, byStatus },
    };
  }

  stop(): void {
    clearInterval(this.timer);
  }
}
