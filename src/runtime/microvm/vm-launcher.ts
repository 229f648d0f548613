import { join } from 'node:path';
import type { TaskSpec } from '../driver.js';
import { probeAccelerator, type AccelVerdict } from './accel-probe.js';
import { AgentConnection } from './agent-connection.js';
import { defaultCmdline, locateGuestFiles, type GuestFiles } from './guest-files.js';
import { mkdir, rename, rm, writeFile } from 'node:fs/promises';
import { PrismError } from '../../core/errors.js';
import { readPidFile } from './qemu-process.js';
import { bootVm, enterTaskCgroup, makeWorkdir, mountTask, vmShape, type TaskPaths, type VmShape } from './vm-boot.js';
import { WarmPool } from './vm-pool.js';
import type { CgroupHost, TaskCgroups } from '../cgroups/cgroups.js';
import { probeCgroups } from '../cgroups/probe.js';
import { taskCgroups } from '../cgroups/select-cgroups.js';
import type { Vmm, VmmName, VmmStart } from './vmm.js';
import { selectVmm } from './vmm-select.js';
import { DEFAULT_VM_RAM_DIR } from './vm-ram.js';
import { imageDisk, makeWritableDisk } from './vm-disks.js';
import { memoryImageOf, TemplateStore } from './vm-template.js';
import { prepareTap, type GuestNic } from './vm-network.js';

export type MicrovmDriverLogger = Record<'info' | 'warn' | 'error', (o: object, msg?: string) => void>;

export interface MicrovmDriverOptions {
  /** Owned by this driver: `tasks/<id>/` and the accelerator verdict. */
  stateDir: string;
  /** vmlinux + initramfs.cpio (+ manifest.json), see guest-files.ts. */
  guestDir: string;
  /** Where image ext4 disks are cached (shared by tasks of one image). */
  imageDiskCache: string;
  /** The host's prism-init (guest/init): snapshots read a writable disk's overlay xattrs with it. */
  initBinary?: string;
  kernel?: string;
  initramfs?: string;
  qemuBinary?: string;
  /** The VMM: QEMU (default) or Firecracker (opt-in, untested against a real Firecracker; vmm-select.ts). */
  vmm?: VmmName;
  /**
   * QEMU: a directory for guest RAM, made a tmpfs if it is not one (vm-ram.ts; default
   * /run/prism/vm-ram); RAM there is what makes memory snapshots and forks one copy and lets VMs
   * restored from one image share its pages. `false`: anonymous RAM.
   */
  ramDir?: string | false;
  /** Where Firecracker is when `vmm` is firecracker (default: `firecracker` on PATH). */
  firecrackerBinary?: string;
  /** Size of a task's writable disk (sparse) when its spec has no diskMb, default 2048 MiB. */
  writableDiskMb?: number;
  /** Where the accelerator verdict is cached; host-wide (default: stateDir). */
  accelCacheDir?: string;
  /** Boot-to-agent-hello timeout, default 30 s (TCG boots take ~2 s, more on a loaded host). */
  bootTimeoutMs?: number;
  /** Create tasks from template snapshots (`<stateDir>/templates/`, see vm-template.ts); default true. */
  snapshots?: boolean;
  /** Restored VMs kept ready per template (`<stateDir>/pool/`, see vm-pool.ts); default 0. Needs snapshots. */
  warmPool?: number;
  logger?: MicrovmDriverLogger;
  /** The host's cgroups as probed (default: probed here); VMs are limited in those of kind `prism-vm`. */
  cgroupHost?: CgroupHost;
}

/**
 * A template restore answers in ~0.2 s under TCG; one that takes this long is given up for a cold
 * boot. Restores with nothing to fall back on (a resume, a user snapshot or fork) get the boot timeout.
 */
const RESTORE_TIMEOUT_MS = 10_000;

/** How a task's VM came up: restored from a template snapshot, or booted. */
export interface LaunchInfo {
  /** `pool`: a warm-pool VM (already restored) adopted by the task. */
  boot: 'pool' | 'restore' | 'cold' | 'snapshot';
  template?: string;
}

/** What the driver lends a launch: its connection table and its teardown of the task's VM. */
export interface LaunchHooks {
  /** Registers `existing` as the task's connection, or a new, unconnected one. */
  connection(existing?: AgentConnection): AgentConnection;
  /** Kills the task's QEMU and removes its sockets and cgroups, keeping its disk. */
  teardown(): Promise<void>;
}

/**
 * Brings up the VM of a task: the guest files, the accelerator verdict (probed once) and the choice
 * between restoring a template snapshot and a cold boot.
 */
export class VmLauncher {
  readonly templates: TemplateStore | null;
  /** Always there (size 0 without --warm-pool or snapshots), so that a crashed prismd's pool VMs are swept. */
  readonly pool: WarmPool;
  private accel: Promise<AccelVerdict> | null = null;
  private readonly refills = new Set<Promise<void>>();
  private readonly qemu: string;
  readonly vmm: Vmm;
  /** Host cgroups of the tasks' VMs. */
  readonly cgroups: TaskCgroups;

  constructor(private readonly opts: MicrovmDriverOptions) {
    this.qemu = opts.qemuBinary ?? 'qemu-system-x86_64';
    this.vmm = selectVmm({ vmm: opts.vmm, qemuBinary: this.qemu, firecrackerBinary: opts.firecrackerBinary, ramDir: opts.ramDir === false ? undefined : (opts.ramDir ?? DEFAULT_VM_RAM_DIR) });
    this.templates = opts.snapshots === false ? null : new TemplateStore({
      dir: join(opts.stateDir, 'templates'), vmm: this.vmm, bootTimeoutMs: this.bootTimeoutMs, logger: opts.logger,
    });
    this.cgroups = taskCgroups('prism-vm', opts.cgroupHost ?? probeCgroups());
    // A pool VM starts before its task exists; systemd scopes cannot take a running process in without
    // D-Bus (cgroups/v2), so there every VM starts in its own task's scope and the pool stays empty.
    const poolSize = this.templates && this.cgroups.placement !== 'systemd' ? (opts.warmPool ?? 0) : 0;
    if (opts.warmPool && poolSize === 0 && this.templates) {
      opts.logger?.warn({ warmPool: opts.warmPool }, 'microvm warm pool is not available with systemd cgroup scopes yet; creates restore templates instead');
    }
    this.pool = new WarmPool({
      dir: join(opts.stateDir, 'pool'), size: poolSize, vmm: this.vmm,
      bootTimeoutMs: Math.min(this.bootTimeoutMs, RESTORE_TIMEOUT_MS), logger: opts.logger,
    });
  }

  /** The task's writable disk follows its diskMb; the option is for specs without one (old handles). */
  writableDiskMb(spec: TaskSpec): number {
    return spec.diskMb || (this.opts.writableDiskMb ?? 2048);
  }

  private get bootTimeoutMs(): number {
    return this.opts.bootTimeoutMs ?? 30_000;
  }

  guestFiles(): Promise<GuestFiles> {
    return locateGuestFiles(this.opts.guestDir, {
      ...(this.opts.kernel ? { kernel: this.opts.kernel } : {}), ...(this.opts.initramfs ? { initramfs: this.opts.initramfs } : {}),
    });
  }

  /** The Vmm's agent connection to `agentSocket`: unconnected, a unix socket under QEMU, vsock under Firecracker. */
  agentConnection(agentSocket: string): AgentConnection {
    return new AgentConnection(agentSocket, (path, ms) => this.vmm.dialAgent(path, ms));
  }

  /** KVM or TCG for QEMU (probed once per host); Firecracker runs on KVM only, so there is nothing to probe. */
  accelerator(): Promise<AccelVerdict> {
    if (this.vmm.name === 'firecracker') return Promise.resolve({ accel: 'kvm', reason: 'Firecracker runs on KVM only' });
    this.accel ??= (async () => {
      const files = await this.guestFiles();
      const cmdline = await defaultCmdline({ tcg: false, pvh: files.pvh });
      return probeAccelerator(files, { stateDir: this.opts.accelCacheDir ?? this.opts.stateDir, qemuBinary: this.qemu, cmdline });
    })().catch((e: unknown) => {
      this.accel = null;
      throw e;
    });
    return this.accel;
  }

  /**
   * Runs the task's VM until its agent is ready: a warm-pool VM of its shape if one is ready (fresh
   * tasks only: a restarted task keeps its disk), else restored from its shape's template, else
   * booted, after which the template is built in the background (so the first task of a shape is not
   * slowed by the build) and then the pool filled. A failed adoption or restore falls through to the
   * next way (a failed restore also deletes the template). `fresh` (first boot of the task) also
   * makes its writable disk and workdir.
   */
  async launch(spec: TaskSpec, p: TaskPaths, fresh: boolean, hooks: LaunchHooks): Promise<LaunchInfo> {
    const [files, verdict, image] = await Promise.all([
      this.guestFiles(), this.accelerator(), imageDisk(this.opts.imageDiskCache, spec.layers),
    ]);
    const shape = await vmShape({ files, accel: verdict.accel, imageDisk: image, spec, writableDiskMb: this.writableDiskMb(spec) });
    if (spec.network) return this.launchNetworked(spec, shape, p, fresh, hooks);
    // Volumes are extra disks, which a template's saved device state does not have (and the microvm
    // machine cannot hot-plug): a task with volumes always cold-boots.
    const key = spec.volumes?.length ? undefined : await this.templates?.key(shape);
    let state = key ? await this.templates!.find(key) : undefined;
    let conn: AgentConnection | undefined;
    let info: LaunchInfo | undefined;
    this.track(this.pool.sweep());
    if (fresh && key && state && this.pool.size > 0) {
      conn = await this.adopt(key, spec, shape, p, hooks);
      if (conn) info = { boot: 'pool', template: key };
    }
    if (fresh && !info) await makeWritableDisk(p.rwDisk, this.writableDiskMb(spec));
    if (!info && key && state) {
      try {
        conn = hooks.connection();
        await bootVm({ shape, paths: p, vmm: this.vmm, spec, cgroups: this.cgroups, conn, incoming: state, memoryImage: memoryImageOf(state), restoreTimeoutMs: RESTORE_TIMEOUT_MS, bootTimeoutMs: Math.min(this.bootTimeoutMs, RESTORE_TIMEOUT_MS) });
        info = { boot: 'restore', template: key };
      } catch (e) {
        this.opts.logger?.warn({ err: e, task: spec.id, template: key }, 'restoring the template snapshot failed; deleting it and cold-booting');
        await hooks.teardown();
        await this.templates!.remove(key);
        state = undefined;
        // `M` may have written to the disk before failing; a fresh task gets a clean one.
        if (fresh) await makeWritableDisk(p.rwDisk, this.writableDiskMb(spec));
      }
    }
    if (!info) {
      conn = hooks.connection();
      await bootVm({ shape, paths: p, vmm: this.vmm, spec, cgroups: this.cgroups, conn, bootTimeoutMs: this.bootTimeoutMs });
      info = { boot: 'cold' };
    }
    if (key) this.track(this.refill(key, shape, state));
    if (fresh) await makeWorkdir(conn!, spec.workdir);
    return info;
  }

  /**
   * A new task restored from another's memory snapshot (its disk already copied to `p.rwDisk`): the
   * VM runs the snapshotted processes; a task with a network gets its own NIC configured again (`N`),
   * since the guest wakes with the snapshotted task's address.
   */
  async restoreSnapshot(spec: TaskSpec, p: TaskPaths, conn: AgentConnection, state: string, memoryImage?: VmmStart['memoryImage']): Promise<void> {
    const nic = await this.restorePaused(spec, p, conn, state, memoryImage);
    if (nic && spec.network) await conn.network({ address: nic.address, gateway: nic.gateway, mtu: nic.mtu, nameservers: spec.network.nameservers });
  }

  /**
   * Restores a paused task's VM from its saved state (`state`, written by Vmm.save on pause) with the
   * task's own disks, volumes and NIC, over `conn`, which keeps the sessions the guest kept. The agent
   * is already `ready`: nothing is mounted again.
   */
  async restorePaused(spec: TaskSpec, p: TaskPaths, conn: AgentConnection, state: string, memoryImage?: VmmStart['memoryImage']): Promise<GuestNic | undefined> {
    const [files, verdict, image] = await Promise.all([this.guestFiles(), this.accelerator(), imageDisk(this.opts.imageDiskCache, spec.layers)]);
    const shape = await vmShape({ files, accel: verdict.accel, imageDisk: image, spec, writableDiskMb: this.writableDiskMb(spec) });
    const net = spec.network;
    const network = net ? { netnsPath: net.netnsPath, nic: await prepareTap(net.netnsPath), nameservers: net.nameservers } : undefined;
    await bootVm({ shape, paths: p, vmm: this.vmm, spec, cgroups: this.cgroups, conn, incoming: state, ...(memoryImage ? { memoryImage } : {}), restoreTimeoutMs: this.bootTimeoutMs, bootTimeoutMs: this.bootTimeoutMs, ...(network ? { network } : {}) });
    if (conn.state !== 'ready') throw new PrismError('INTERNAL', `the resumed VM's agent reported ${conn.state}, not ready`);
    return network?.nic;
  }

  /**
   * A task with a network always boots cold: its VM has a NIC, which template snapshots and pool VMs
   * (all made without one) lack, and QEMU must be started in the task's namespace. Measured cost in
   * docs/network.md.
   */
  private async launchNetworked(spec: TaskSpec, shape: VmShape, p: TaskPaths, fresh: boolean, hooks: LaunchHooks): Promise<LaunchInfo> {
    const net = spec.network!;
    if (this.vmm.name !== 'qemu') throw new PrismError('FAILED_PRECONDITION', `sandbox networking on the microvm runtime needs QEMU; this node runs ${this.vmm.name}`);
    const nic = await prepareTap(net.netnsPath);
    if (fresh) await makeWritableDisk(p.rwDisk, this.writableDiskMb(spec));
    const conn = hooks.connection();
    await bootVm({ shape, paths: p, vmm: this.vmm, spec, cgroups: this.cgroups, conn, bootTimeoutMs: this.bootTimeoutMs, network: { netnsPath: net.netnsPath, nic, nameservers: net.nameservers } });
    if (fresh) await makeWorkdir(conn, spec.workdir);
    return { boot: 'cold' };
  }

  /** Resolves when no template build or pool refill is running (or queued to run). */
  async settled(): Promise<void> {
    while (this.refills.size > 0) await Promise.all(this.refills);
    await this.templates?.settled();
    await this.pool.settled();
  }

  private track(work: Promise<void>): void {
    const p = work.catch((e: unknown) => this.opts.logger?.warn({ err: e }, 'microvm template or pool refill failed'))
      .finally(() => this.refills.delete(p));
    this.refills.add(p);
  }

  /** Builds the template of `key` if missing, then tops up its warm pool; in the background. */
  private async refill(key: string, shape: VmShape, state: string | undefined): Promise<void> {
    if (!state) {
      await this.templates!.buildSoon(key, shape);
      state = await this.templates!.find(key);
    }
    if (state) await this.pool.fill(key, shape, state);
  }

  /**
   * Moves a ready pool VM into the task: its directory becomes the task's (QEMU keeps its open files
   * and listening sockets across the rename; `qemu.origin` records the socket path QEMU was started
   * with, its identity for isQemuAlive), then it joins the task's cgroup and gets `M`. Undefined if
   * no VM was ready or the adoption failed (logged; the VM is destroyed and the task dir left empty).
   */
  private async adopt(key: string, spec: TaskSpec, shape: VmShape, p: TaskPaths, hooks: LaunchHooks): Promise<AgentConnection | undefined> {
    const vm = await this.pool.take(key);
    if (!vm) return undefined;
    let moved = false;
    try {
      await writeFile(vm.paths.origin, this.vmm.marker(vm.paths));
      await rename(vm.paths.task, p.task); // the task dir is empty (just claimed): rename replaces it
      moved = true;
      vm.conn.relocate(p.agentSocket);
      const conn = hooks.connection(vm.conn);
      const pid = await readPidFile(p.pidFile);
      if (!pid) throw new PrismError('INTERNAL', 'the pool VM has no pid file');
      await enterTaskCgroup(this.cgroups, spec, shape, pid);
      await mountTask(conn, spec);
      return conn;
    } catch (e) {
      this.opts.logger?.warn({ err: e, task: spec.id }, 'adopting a warm-pool microVM failed; restoring instead');
      if (!moved) {
        await this.pool.destroy(vm.paths, vm.conn);
        return undefined;
      }
      await hooks.teardown();
      await rm(p.task, { recursive: true, force: true });
      await mkdir(p.task);
      return undefined;
    }
  }
}
