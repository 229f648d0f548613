import { randomBytes } from 'node:crypto';
import { mkdir, readdir, rm } from 'node:fs/promises';
import { AgentConnection } from './agent-connection.js';
import { isQemuAlive, killQemu, readPidFile } from './qemu-process.js';
import { bootVm, taskPaths, type TaskPaths, type VmShape } from './vm-boot.js';
import { memoryImageOf } from './vm-template.js';
import { makeWritableDisk } from './vm-disks.js';
import type { Vmm } from './vmm.js';

/**
 * The warm pool: per template (image + VM shape), up to `size` VMs restored from the template and
 * left at the agent's `booted` hello, each with its own fresh writable disk, ready for a task to
 * adopt (move its directory in, join its cgroup, send `M`). A create that finds one skips QEMU's
 * start-up and the state load; the pool then refills in the background, one restore at a time.
 *
 * Pool VMs are not tasks: they live under `<dir>/<rand>/` (not the driver's tasks/), have no
 * cgroup until adopted, so listTasks and orphan cleanup never see them. A VM is handed out only if
 * its QEMU is alive and its agent connection is up; close() kills them all, and sweep() kills those
 * a crashed process left behind.
 */

type Logger = Record<'info' | 'warn', (o: object, msg?: string) => void>;

export interface WarmPoolOptions {
  dir: string;
  /** VMs kept ready per template; 0 disables the pool. */
  size: number;
  vmm: Vmm;
  bootTimeoutMs: number;
  logger?: Logger | undefined;
}

/** A pooled VM, handed to a task by take(). */
export interface WarmVm {
  paths: TaskPaths;
  conn: AgentConnection;
}

/** After a failed restore the template is not pooled again for this long (each try costs a restore). */
const RETRY_AFTER_MS = 60_000;

export class WarmPool {
  private readonly ready = new Map<string, WarmVm[]>();
  private readonly filling = new Map<string, Promise<void>>();
  private readonly failedAt = new Map<string, number>();
  /** Directories of VMs this pool owns (ready or being restored). */
  private readonly owned = new Set<string>();
  private swept: Promise<void> | null = null;
  private closed = false;

  constructor(private readonly o: WarmPoolOptions) {}

  get size(): number {
    return this.o.size;
  }

  /** VMs ready for `key` right now. */
  count(key: string): number {
    return this.ready.get(key)?.length ?? 0;
  }

  /** A live pooled VM of template `key`, now the caller's; dead ones found on the way are destroyed. */
  async take(key: string): Promise<WarmVm | undefined> {
    const list = this.ready.get(key) ?? [];
    for (let vm = list.shift(); vm; vm = list.shift()) {
      const pid = await readPidFile(vm.paths.pidFile);
      if (vm.conn.connected && (await isQemuAlive(pid, this.o.vmm.marker(vm.paths)))) {
        this.owned.delete(vm.paths.task);
        return vm;
      }
      this.o.logger?.warn({ vm: vm.paths.task }, 'a warm-pool microVM died while pooled; destroying it');
      await this.destroy(vm.paths, vm.conn);
    }
    return undefined;
  }

  /**
   * Restores VMs of template `state` in the background until `size` are ready for `key`. Resolves
   * when this round of filling is over; never rejects (failures are logged and leave nothing).
   */
  fill(key: string, shape: VmShape, state: string): Promise<void> {
    if (this.o.size <= 0 || this.closed) return Promise.resolve();
    const running = this.filling.get(key);
    if (running) return running;
    if (Date.now() - (this.failedAt.get(key) ?? -Infinity) < RETRY_AFTER_MS) return Promise.resolve();
    const round = (async () => {
      await this.sweep();
      while (!this.closed && this.count(key) < this.o.size) {
        try {
          const vm = await this.restore(shape, state);
          if (this.closed) {
            await this.destroy(vm.paths, vm.conn);
            return;
          }
          this.ready.set(key, [...(this.ready.get(key) ?? []), vm]);
        } catch (e) {
          this.failedAt.set(key, Date.now());
          this.o.logger?.warn({ err: e, template: key }, 'restoring a warm-pool microVM failed; not pooling this template for a minute');
          return;
        }
      }
    })().finally(() => this.filling.delete(key));
    this.filling.set(key, round);
    return round;
  }

  /** Resolves when no refill is running. */
  async settled(): Promise<void> {
    while (this.filling.size > 0) await Promise.all(this.filling.values());
  }

  /** Stops refilling and destroys every pooled VM (idempotent); taken VMs are the caller's. */
  async close(): Promise<void> {
    this.closed = true;
    await this.settled();
    const vms = [...this.ready.values()].flat();
    this.ready.clear();
    for (const vm of vms) await this.destroy(vm.paths, vm.conn);
  }

  /** Kills and removes pool VMs left by a process that died without close() (once per pool). */
  sweep(): Promise<void> {
    this.swept ??= (async () => {
      for (const name of await readdir(this.o.dir).catch(() => [] as string[])) {
        const p = taskPaths(this.o.dir, name);
        if (this.owned.has(p.task)) continue;
        this.o.logger?.info({ vm: p.task }, 'removing a warm-pool microVM left by an earlier prismd');
        await this.destroy(p);
      }
    })();
    return this.swept;
  }

  /** Kills the VM's QEMU (if still that QEMU) and removes its directory. */
  async destroy(p: TaskPaths, conn?: AgentConnection): Promise<void> {
    conn?.close();
    await killQemu(await readPidFile(p.pidFile), this.o.vmm.marker(p)).catch((e: unknown) => this.o.logger?.warn({ err: e, vm: p.task }, 'killing a warm-pool microVM failed'));
    await rm(p.task, { recursive: true, force: true });
    this.owned.delete(p.task);
  }

  private async restore(shape: VmShape, state: string): Promise<WarmVm> {
    await mkdir(this.o.dir, { recursive: true });
    // Short names: the directory holds unix sockets (108-byte paths).
    const p = taskPaths(this.o.dir, randomBytes(4).toString('hex'));
    const { vmm } = this.o;
    const conn = new AgentConnection(p.agentSocket, (path, ms) => vmm.dialAgent(path, ms));
    this.owned.add(p.task);
    try {
      await mkdir(p.task);
      await makeWritableDisk(p.rwDisk, shape.writableDiskMb); // the shape (and its template) fixes the size
      await bootVm({ shape, paths: p, vmm, conn, incoming: state, memoryImage: memoryImageOf(state), bootTimeoutMs: this.o.bootTimeoutMs });
      return { paths: p, conn };
    } catch (e) {
      await this.destroy(p, conn);
      throw e;
    }
  }
}
