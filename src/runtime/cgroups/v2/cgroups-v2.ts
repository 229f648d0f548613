import { existsSync, readFileSync } from 'node:fs';
import { mkdir, readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { PrismError } from '../../../core/errors.js';
import { runCommand } from '../../command.js';
import { REQUIRED_CONTROLLERS, type AppliedLimits, type CgroupLimits, type CgroupUsage, type TaskCgroups } from '../cgroups.js';
import { cgroupPids, keyedValue, killAll, readCgroupNumber, readCgroupText, readNumber, removeDir } from '../cgroup-files.js';

/**
 * cgroup v2 (the unified hierarchy), in one of two placements:
 * - `systemd` (PID 1 is systemd): a task is the transient scope `<kind>-<id>.scope` in `prism.slice`
 *   (VMs in `prism.slice/prism-vm.slice`). runc makes container scopes itself (--systemd-cgroup,
 *   cgroupsPath `slice:prefix:id`); QEMU is started inside its scope by `systemd-run --scope` (see
 *   `launchCommand`). systemd owns the tree above and enables the controllers down to each scope, so
 *   nothing here writes outside a task's own scope, and tasks are not in prismd's unit: restarting
 *   prismd cannot kill them.
 * - `cgroupfs` (no systemd, e.g. a container with its own cgroup namespace): `<root>/<kind>/<id>`,
 *   made by runc (cgroupsPath `/<kind>/<id>`) or by `enter`, with the controllers enabled on the way
 *   down.
 */
export class CgroupsV2 implements TaskCgroups {
  readonly version = 2 as const;

  constructor(
    private readonly kind: string,
    private readonly root: string,
    readonly placement: 'cgroupfs' | 'systemd',
  ) {}

  /** `prism.slice` for containers, `prism.slice/prism-vm.slice` for VMs (slice names nest by dashes). */
  private get slice(): string {
    return this.kind === 'prism' ? 'prism.slice' : `prism-${this.kind.replace(/^prism-/, '')}.slice`;
  }

  private get sliceDir(): string {
    return this.kind === 'prism' ? join(this.root, 'prism.slice') : join(this.root, 'prism.slice', this.slice);
  }

  /** The systemd unit of a task (placement `systemd`). */
  scopeUnit(id: string): string {
    return `${this.kind}-${id}.scope`;
  }

  private dir(id: string): string {
    return this.placement === 'systemd' ? join(this.sliceDir, this.scopeUnit(id)) : join(this.root, this.kind, id);
  }

  dirs(id: string): string[] {
    return [this.dir(id)];
  }

  runcPath(id: string): string {
    return this.placement === 'systemd' ? `${this.slice}:${this.kind}:${id}` : `/${this.kind}/${id}`;
  }

  runcFlags(): string[] {
    return this.placement === 'systemd' ? ['--systemd-cgroup'] : [];
  }

  /**
   * Swap is accounted when a non-root cgroup has memory.swap.max (the root has no memory files): this
   * process's own cgroup is one we may read.
   */
  swapAccounting(): boolean {
    const own = readFileSync('/proc/self/cgroup', 'utf8').match(/^0::(\/.*)$/m)?.[1];
    return Boolean(own && own !== '/' && existsSync(join(this.root, own, 'memory.swap.max')));
  }

  async usage(id: string): Promise<CgroupUsage> {
    const dir = this.dir(id);
    try {
      const memoryBytes = readCgroupNumber(join(dir, 'memory.current'));
      const memoryLimitBytes = readCgroupNumber(join(dir, 'memory.max'));
      const memoryStat = readCgroupText(join(dir, 'memory.stat'));
      const cpuStat = readCgroupText(join(dir, 'cpu.stat'));
      const pids = readCgroupNumber(join(dir, 'pids.current'));
      return { memoryBytes, memoryLimitBytes, memoryCacheBytes: keyedValue(memoryStat, 'file') ?? 0, cpuUsageNs: (keyedValue(cpuStat, 'usage_usec') ?? 0) * 1000, pids };
    } catch (e) {
      throw new PrismError('NOT_FOUND', `task ${id} has no cgroup`, { cause: e });
    }
  }

  async frozen(id: string): Promise<boolean | undefined> {
    // cgroup.freeze is what was asked (runc pause writes 1); cgroup.events' `frozen` lags behind it.
    const want = (await readFile(join(this.dir(id), 'cgroup.freeze'), 'utf8').catch(() => '')).trim();
    return want === '' ? undefined : want !== '0';
  }

  async applied(id: string): Promise<AppliedLimits> {
    const dir = this.dir(id);
    try {
      const [memoryBytes, pids, cpu] = await Promise.all([
        readNumber(join(dir, 'memory.max')),
        readNumber(join(dir, 'pids.max')),
        readFile(join(dir, 'cpu.max'), 'utf8'),
      ]);
      const [quota, period] = cpu.trim().split(/\s+/);
      return { memoryBytes, pids, cpuQuotaUs: quota === 'max' ? 0 : Number(quota), cpuPeriodUs: Number(period) };
    } catch (e) {
      throw new PrismError('NOT_FOUND', `task ${id} has no cgroup`, { cause: e });
    }
  }

  /** `oom_kill` of memory.events: OOM kills in this cgroup and below since it was made. */
  async oomKills(id: string): Promise<number> {
    try {
      return keyedValue(await readFile(join(this.dir(id), 'memory.events'), 'utf8'), 'oom_kill') ?? -1;
    } catch {
      return -1;
    }
  }

  /**
   * Makes `<root>/<kind>/<id>` with the limits and moves `pid` in (placement `cgroupfs`). Under systemd a
   * process cannot be moved into a scope after the fact without D-Bus, so there QEMU is started inside
   * its scope (`launchCommand`) and this only checks that it is where it should be.
   */
  async enter(id: string, pid: number, limits: CgroupLimits): Promise<void> {
    const dir = this.dir(id);
    try {
      if (this.placement === 'systemd') {
        const own = await readFile(`/proc/${pid}/cgroup`, 'utf8');
        if (!own.includes(`/${this.scopeUnit(id)}`)) throw new Error(`process ${pid} is not in ${this.scopeUnit(id)} (it is in ${own.trim()})`);
        return;
      }
      await enableControllers(this.root, [this.kind]);
      await mkdir(dir, { recursive: true });
      await writeFile(join(dir, 'memory.max'), String(limits.memoryBytes));
      await writeFile(join(dir, 'pids.max'), String(limits.pids));
      await writeFile(join(dir, 'cgroup.procs'), String(pid));
    } catch (e) {
      if (this.placement === 'cgroupfs') await this.remove(id, 1_000).catch(() => undefined);
      throw new PrismError('FAILED_PRECONDITION', `cannot limit process ${pid} in cgroup ${dir}: ${(e as Error).message}`, { cause: e });
    }
  }

  /**
   * The argv that starts `argv` inside the task's scope with its limits (placement `systemd`):
   * `systemd-run --scope` asks systemd for the scope and then execs the command, so the pid is the
   * command's own. `--collect` lets systemd forget a scope that ended badly.
   */
  launchCommand(id: string, limits: CgroupLimits, argv: string[]): string[] {
    if (this.placement !== 'systemd') return argv;
    return [
      'systemd-run', '--scope', '--quiet', '--collect', `--unit=${this.scopeUnit(id)}`, `--slice=${this.slice}`,
      `--property=MemoryMax=${limits.memoryBytes}`, `--property=TasksMax=${limits.pids}`, '--', ...argv,
    ];
  }

  /**
   * cgroup.kill (Linux >= 5.14) kills the whole subtree at once, racing no forks; older kernels get a
   * SIGKILL per process. Under systemd an emptied scope is stopped and its cgroup removed by systemd;
   * rmdir covers the rest (and cgroupfs).
   */
  async remove(id: string, timeoutMs = 5_000): Promise<string[]> {
    const dir = this.dir(id);
    if (!existsSync(dir)) return [];
    const deadline = Date.now() + timeoutMs;
    const killed = await writeFile(join(dir, 'cgroup.kill'), '1').then(() => true, () => false);
    if (!killed) killAll(await cgroupPids(dir));
    if (this.placement === 'systemd') {
      // A scope that runc or systemd-run made outlives an rmdir of its cgroup as a unit: stop it too
      // (not waited for: --no-block only queues the job; a failure leaves the rmdir below to tell).
      await runCommand('systemctl', ['stop', '--no-block', this.scopeUnit(id)], { timeoutMs: 5_000 }).catch(() => undefined);
    }
    return (await removeDir(dir, deadline)) ? [] : [dir];
  }

  pids(id: string): Promise<number[]> {
    return cgroupPids(this.dir(id));
  }

  async list(): Promise<string[]> {
    if (this.placement === 'cgroupfs') {
      const entries = await readdir(join(this.root, this.kind), { withFileTypes: true }).catch(() => []);
      return entries.filter((e) => e.isDirectory()).map((e) => e.name);
    }
    const prefix = `${this.kind}-`;
    const entries = await readdir(this.sliceDir).catch(() => [] as string[]);
    return entries.filter((n) => n.startsWith(prefix) && n.endsWith('.scope')).map((n) => n.slice(prefix.length, -'.scope'.length));
  }
}

/**
 * Enables the required controllers in `root/cgroup.subtree_control` and in each of `path`'s levels
 * below it, so a cgroup made at the end of `path` has them (cgroupfs placement only).
 */
async function enableControllers(root: string, path: string[]): Promise<void> {
  const enable = REQUIRED_CONTROLLERS.map((c) => `+${c}`).join(' ');
  let dir = root;
  for (const part of ['', ...path]) {
    if (part) {
      dir = join(dir, part);
      await mkdir(dir, { recursive: true });
    }
    const current = await readFile(join(dir, 'cgroup.subtree_control'), 'utf8');
    if (REQUIRED_CONTROLLERS.every((c) => current.split(/\s+/).includes(c))) continue;
    await writeFile(join(dir, 'cgroup.subtree_control'), enable);
  }
}
