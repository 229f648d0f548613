import { join } from 'node:path';
import type { TaskSpec } from '../driver.js';
import { probeAccelerator, type AccelVerdict } from './accel-probe.js';
import type { AgentConnection } from './agent-connection.js';
import { defaultCmdline, locateGuestFiles, type GuestFiles } from './guest-files.js';
import { bootVm, makeWorkdir, vmShape, type TaskPaths } from './vm-boot.js';
import { imageDisk, makeWritableDisk } from './vm-disks.js';
import { TemplateStore } from './vm-template.js';

export type MicrovmDriverLogger = Record<'info' | 'warn' | 'error', (o: object, msg?: string) => void>;

export interface MicrovmDriverOptions {
  /** Owned by this driver: `tasks/<id>/` and the accelerator verdict. */
  stateDir: string;
  /** vmlinux + initramfs.cpio (+ manifest.json), see guest-files.ts. */
  guestDir: string;
  /** Where image ext4 disks are cached (shared by tasks of one image). */
  imageDiskCache: string;
  kernel?: string;
  initramfs?: string;
  qemuBinary?: string;
  /** Size of a task's writable disk (sparse) when its spec has no diskMb, default 2048 MiB. */
  writableDiskMb?: number;
  /** Where the accelerator verdict is cached; host-wide (default: stateDir). */
  accelCacheDir?: string;
  /** Boot-to-agent-hello timeout, default 30 s (TCG boots take ~2 s, more on a loaded host). */
  bootTimeoutMs?: number;
  /** Create tasks from template snapshots (`<stateDir>/templates/`, see vm-template.ts); default true. */
  snapshots?: boolean;
  logger?: MicrovmDriverLogger;
}

/** A restore answers in ~0.2 s under TCG; one that takes this long is given up for a cold boot. */
const RESTORE_TIMEOUT_MS = 10_000;

/** How a task's VM came up: restored from a template snapshot, or booted. */
export interface LaunchInfo {
  boot: 'restore' | 'cold';
  template?: string;
}

/** What the driver lends a launch: its connection table and its teardown of the task's VM. */
export interface LaunchHooks {
  /** A new, unconnected agent connection, registered as the task's. */
  connection(): AgentConnection;
  /** Kills the task's QEMU and removes its sockets and cgroups, keeping its disk. */
  teardown(): Promise<void>;
}

/**
 * Brings up the VM of a task: the guest files, the accelerator verdict (probed once) and the choice
 * between restoring a template snapshot and a cold boot.
 */
export class VmLauncher {
  readonly templates: TemplateStore | null;
  private accel: Promise<AccelVerdict> | null = null;
  private readonly qemu: string;

  constructor(private readonly opts: MicrovmDriverOptions) {
    this.qemu = opts.qemuBinary ?? 'qemu-system-x86_64';
    this.templates = opts.snapshots === false ? null : new TemplateStore({
      dir: join(opts.stateDir, 'templates'), qemuBinary: this.qemu, bootTimeoutMs: this.bootTimeoutMs, logger: opts.logger,
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

  accelerator(): Promise<AccelVerdict> {
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
   * Runs the task's VM until its agent is ready: restored from its shape's template if there is one,
   * else booted, after which the template is built in the background (so the first task of a shape
   * is not slowed by the build). A failed restore deletes the template and cold-boots. `fresh`
   * (first boot of the task) also creates the workdir.
   */
  async launch(spec: TaskSpec, p: TaskPaths, fresh: boolean, hooks: LaunchHooks): Promise<LaunchInfo> {
    const [files, verdict, image] = await Promise.all([
      this.guestFiles(), this.accelerator(), imageDisk(this.opts.imageDiskCache, spec.layers),
    ]);
    const shape = await vmShape({ files, accel: verdict.accel, imageDisk: image, spec, writableDiskMb: this.writableDiskMb(spec) });
    const vm = { shape, paths: p, qemuBinary: this.qemu, spec };
    const key = await this.templates?.key(shape);
    const state = key ? await this.templates!.find(key) : undefined;
    let conn: AgentConnection | undefined;
    let info: LaunchInfo = { boot: 'cold' };
    if (key && state) {
      try {
        conn = hooks.connection();
        await bootVm({ ...vm, conn, incoming: state, bootTimeoutMs: Math.min(this.bootTimeoutMs, RESTORE_TIMEOUT_MS) });
        info = { boot: 'restore', template: key };
      } catch (e) {
        this.opts.logger?.warn({ err: e, task: spec.id, template: key }, 'restoring the template snapshot failed; deleting it and cold-booting');
        await hooks.teardown();
        await this.templates!.remove(key);
        // `M` may have written to the disk before failing; a fresh task gets a clean one.
        if (fresh) await makeWritableDisk(p.rwDisk, this.writableDiskMb(spec));
      }
    }
    if (info.boot === 'cold') {
      conn = hooks.connection();
      await bootVm({ ...vm, conn, bootTimeoutMs: this.bootTimeoutMs });
      if (key) void this.templates!.buildSoon(key, shape);
    }
    if (fresh) await makeWorkdir(conn!, spec.workdir);
    return info;
  }
}
