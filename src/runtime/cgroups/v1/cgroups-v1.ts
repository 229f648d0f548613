import { existsSync } from 'node:fs';
import { mkdir, readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { PrismError } from '../../../core/errors.js';
import type { AppliedLimits, CgroupLimits, CgroupUsage, TaskCgroups } from '../cgroups.js';
import { cgroupPids, keyedValue, killAll, readCgroupNumber, readCgroupText, readNumber, removeDir } from '../cgroup-files.js';

/**
 * cgroup v1: a task of kind `k` has `<root>/<controller>/<k>/<id>` in every hierarchy (runc makes them
 * for containers with cgroupsPath `/<k>/<id>`; `enter` makes them for QEMU). Where controllers are
 * co-mounted (`cpu,cpuacct`) the per-controller names are symlinks, so these paths still resolve.
 */
export class CgroupsV1 implements TaskCgroups {
  readonly version = 1 as const;
  readonly placement = 'cgroupfs' as const;

  constructor(
    private readonly kind: string,
    private readonly root: string,
  ) {}

  private dir(controller: string, id: string): string {
    return join(this.root, controller, this.kind, id);
  }

  dirs(id: string): string[] {
    return ['memory', 'cpu', 'cpuacct', 'pids', 'freezer', 'devices', 'blkio', 'cpuset', ...this.tracking()].map((c) => this.dir(c, id));
  }

  /**
   * Hierarchies without controllers that systemd finds a unit's processes in: its own `name=systemd`
   * and, on hybrid hosts, the cgroup2 mount beside the v1 ones. A process left in prismd's cgroup there
   * would die with prismd.service (KillMode=mixed; docs/install.md), so `enter` moves it out of them
   * too, as runc's cgroupfs driver does with containers.
   */
  private tracking(): string[] {
    return ['systemd', 'unified'].filter((h) => existsSync(join(this.root, h, 'cgroup.procs')));
  }

  runcPath(id: string): string {
    return `/${this.kind}/${id}`;
  }

  runcFlags(): string[] {
    return [];
  }

  swapAccounting(): boolean {
    return existsSync(join(this.root, 'memory', 'memory.memsw.limit_in_bytes'));
  }

  async usage(id: string): Promise<CgroupUsage> {
    try {
      const mem = this.dir('memory', id);
      const memoryBytes = readCgroupNumber(join(mem, 'memory.usage_in_bytes'));
      const memoryLimitBytes = readCgroupNumber(join(mem, 'memory.limit_in_bytes'));
      const memoryStat = readCgroupText(join(mem, 'memory.stat'));
      const cpuUsageNs = readCgroupNumber(join(this.dir('cpuacct', id), 'cpuacct.usage'));
      const pids = readCgroupNumber(join(this.dir('pids', id), 'pids.current'));
      // v1 reports "no limit" as a huge page-aligned number.
      return {
        memoryBytes, memoryLimitBytes: memoryLimitBytes >= 2 ** 62 ? 0 : memoryLimitBytes, memoryCacheBytes: keyedValue(memoryStat, 'cache') ?? 0, cpuUsageNs, pids,
      };
    } catch (e) {
      throw new PrismError('NOT_FOUND', `task ${id} has no cgroup`, { cause: e });
    }
  }

  async frozen(id: string): Promise<boolean | undefined> {
    const state = (await readFile(join(this.dir('freezer', id), 'freezer.state'), 'utf8').catch(() => '')).trim();
    return state === '' ? undefined : state !== 'THAWED';
  }

  async applied(id: string): Promise<AppliedLimits> {
    try {
      const [memoryBytes, pids, quota, cpuPeriodUs] = await Promise.all([
        readNumber(join(this.dir('memory', id), 'memory.limit_in_bytes')),
        readNumber(join(this.dir('pids', id), 'pids.max')),
        readFile(join(this.dir('cpu', id), 'cpu.cfs_quota_us'), 'utf8').then((t) => Number(t.trim())),
        readNumber(join(this.dir('cpu', id), 'cpu.cfs_period_us')),
      ]);
      return { memoryBytes: memoryBytes >= 2 ** 62 ? 0 : memoryBytes, pids, cpuQuotaUs: quota < 0 ? 0 : quota, cpuPeriodUs };
    } catch (e) {
      throw new PrismError('NOT_FOUND', `task ${id} has no cgroup`, { cause: e });
    }
  }

  /**
   * `oom_kill` of memory.oom_control (kernel >= 4.13); falls back to memory.failcnt, which counts
   * limit hits and so only says that an OOM kill was possible.
   */
  async oomKills(id: string): Promise<number> {
    const dir = this.dir('memory', id);
    try {
      const kills = keyedValue(await readFile(join(dir, 'memory.oom_control'), 'utf8'), 'oom_kill');
      return kills ?? (await readNumber(join(dir, 'memory.failcnt')));
    } catch {
      return -1;
    }
  }

  async enter(id: string, pid: number, limits: CgroupLimits): Promise<void> {
    try {
      for (const c of ['memory', 'pids', 'cpuacct', ...this.tracking()]) {
        const dir = this.dir(c, id);
        await mkdir(dir, { recursive: true });
        if (c === 'memory') await writeFile(join(dir, 'memory.limit_in_bytes'), String(limits.memoryBytes));
        if (c === 'pids') await writeFile(join(dir, 'pids.max'), String(limits.pids));
        await writeFile(join(dir, 'cgroup.procs'), String(pid));
      }
    } catch (e) {
      await this.remove(id, 1_000).catch(() => undefined);
      throw new PrismError('FAILED_PRECONDITION', `cannot limit process ${pid} in cgroup v1 ${this.kind}/${id}: ${(e as Error).message}`, { cause: e });
    }
  }

  launchCommand(_id: string, _limits: CgroupLimits, argv: string[]): string[] {
    return argv;
  }

  pids(id: string): Promise<number[]> {
    return cgroupPids(this.dir('memory', id));
  }

  async remove(id: string, timeoutMs = 5_000): Promise<string[]> {
    const controllers = await readdir(this.root).catch(() => [] as string[]);
    const deadline = Date.now() + timeoutMs;
    const left: string[] = [];
    for (const controller of controllers) {
      const dir = this.dir(controller, id);
      if (!existsSync(dir)) continue;
      killAll(await cgroupPids(dir));
      if (!(await removeDir(dir, deadline))) left.push(dir);
    }
    return left;
  }

  async list(): Promise<string[]> {
    const entries = await readdir(join(this.root, 'memory', this.kind), { withFileTypes: true }).catch(() => []);
    return entries.filter((e) => e.isDirectory()).map((e) => e.name);
  }
}
