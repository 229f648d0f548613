import { execFile } from 'node:child_process';
import { constants, existsSync } from 'node:fs';
import { access, mkdir, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { asPrismError, PrismError } from '../../core/errors.js';
import type {
  ExecOptions, ProbeResult, RuntimeCapabilities, RuntimeDriver, TaskHandle, TaskProcess, TaskSpec, TaskState, TaskStats,
} from '../driver.js';
import type { CgroupHost, TaskCgroups } from '../cgroups/cgroups.js';
import { probeCgroups } from '../cgroups/probe.js';
import { taskCgroups } from '../cgroups/select-cgroups.js';
import { startExec } from './oci-exec.js';
import { isMounted, overlayOptions, unmountAll } from './overlay-mount.js';
import { anyVolumeFull, mountHostVolumes, unmountHostVolumes } from '../host-volumes.js';
import { Runc, type ContainerState } from './runc.js';
import { diskUsage, isDiskFull, makeTaskDisk, mountTaskDisk } from './task-disk.js';
import { exportUpperLayer } from '../layer-export.js';
import { buildRuntimeSpec, cpuQuotaUs } from './runtime-spec.js';
import type { TaskUser } from '../task-user.js';
import { resolveTaskUser } from './task-user.js';

export interface OciDriverLogger {
  info(o: object, msg?: string): void;
  warn(o: object, msg?: string): void;
  error(o: object, msg?: string): void;
}

export interface OciDriverOptions {
  /** Owned by this driver: `runc/` (runc's state root) and `tasks/<id>/`. */
  stateDir: string;
  /** The static guest/init/prism-init, bind-mounted read-only as every task's PID 1. */
  initBinary: string;
  runcBinary?: string;
  logger?: OciDriverLogger;
  /** The host's cgroups as probed (default: probed here); tasks are limited in those of kind `prism`. */
  cgroupHost?: CgroupHost;
  /** The tasks' cgroups, instead of those of `cgroupHost` (tests wrap the real ones). */
  cgroups?: TaskCgroups;
}

/** A task id names a directory, a runc container and cgroups, so it must be a plain name. */
const ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;
const DEFAULT_STOP_TIMEOUT_MS = 10_000;

interface TaskPaths {
  task: string;
  bundle: string;
  /** The sparse ext4 image of the writable layer (task-disk.ts) and where it is mounted. */
  diskImage: string;
  disk: string;
  /** Overlay's upper and work dirs: on the disk, or directly in the task dir for tasks made before disks. */
  upper: string;
  work: string;
  rootfs: string;
  /** Host mounts of the task's volumes, one directory per TaskSpec.volumes entry (host-volumes.ts). */
  volumes: string;
  pidFile: string;
  runLog: string;
  /** The exec agent's socket (host side); see guest/init/prism-init.c. */
  agentSocket: string;
}

/**
 * Runs tasks as runc containers on an overlay of the image layers, with a private writable layer
 * (`upper/`) that survives stop/start. Everything a task owns is `<stateDir>/tasks/<id>/`, the runc
 * container `<id>` and its cgroup of kind `prism` (cgroups/), so destroy and orphan cleanup are total. Paths are
 * always derived from stateDir and the id; the handle's `data` records them for humans only, so a
 * corrupt handle cannot point destroy at another directory.
 */
export class OciDriver implements RuntimeDriver {
  readonly name = 'oci' as const;
  private readonly runc: Runc;
  private readonly tasksDir: string;
  private readonly cgroupHost: CgroupHost;
  /** Where the tasks' cgroups are (cgroup v1 or v2, cgroupfs or systemd scopes). */
  readonly cgroups: TaskCgroups;

  constructor(private readonly opts: OciDriverOptions) {
    this.cgroupHost = opts.cgroupHost ?? probeCgroups();
    this.cgroups = opts.cgroups ?? taskCgroups('prism', this.cgroupHost);
    this.runc = new Runc(opts.runcBinary ?? 'runc', join(opts.stateDir, 'runc'), this.cgroups.runcFlags());
    this.tasksDir = join(opts.stateDir, 'tasks');
  }

  capabilities(): RuntimeCapabilities {
    return { isolation: 'container', persistentFilesystem: true, survivesDaemonRestart: true, pause: 'ram' };
  }

  async probe(): Promise<ProbeResult> {
    const details: Record<string, string> = {};
    try {
      details.runc = await this.runc.version();
    } catch (e) {
      return { usable: false, reason: `runc does not run: ${asPrismError(e).message}`, details };
    }
    if (process.getuid?.() !== 0) return { usable: false, reason: 'the oci driver must run as root', details };
    if (!(await overlayAvailable())) return { usable: false, reason: 'the kernel does not support overlayfs (no overlay in /proc/filesystems, and `modprobe overlay` failed)', details };
    try {
      await access(this.opts.initBinary, constants.X_OK);
    } catch {
      return { usable: false, reason: `init binary missing: ${this.opts.initBinary} (run make -C guest/init)`, details };
    }
    // Limits, stats and OOM detection need the memory, cpu and pids controllers; never run without them.
    details.cgroups = `v${this.cgroups.version} (${this.cgroups.placement})`;
    if (this.cgroupHost.problem) return { usable: false, reason: this.cgroupHost.problem, details };
    if (this.cgroups.placement === 'systemd' && !existsSync('/run/systemd/private')) {
      return { usable: false, reason: "systemd's private socket /run/systemd/private is missing: runc's systemd cgroup driver needs it", details };
    }
    return { usable: true, details };
  }

  async create(spec: TaskSpec): Promise<TaskHandle> {
    validateSpec(spec);
    await Promise.all(spec.layers.map((layer) => requireDir(layer)));
    const p = this.paths(spec.id);
    await mkdir(this.tasksDir, { recursive: true });
    try {
      await mkdir(p.task); // non-recursive: claims the id atomically
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EEXIST') throw new PrismError('ALREADY_EXISTS', `task ${spec.id} already exists`);
      throw asPrismError(e, 'INTERNAL', 'creating task directory');
    }
    const handle: TaskHandle = { id: spec.id, runtime: 'oci', spec, data: { taskDir: p.task, rootfs: p.rootfs } };
    try {
      await Promise.all([p.bundle, p.disk, p.rootfs].map((d) => mkdir(d)));
      const t0 = performance.now();
      await makeTaskDisk(p.diskImage, spec.diskMb);
      await mountTaskDisk(p.diskImage, p.disk);
      handle.data.diskMs = Math.round(performance.now() - t0);
      await Promise.all([p.upper, p.work].map((d) => mkdir(d)));
      await mountHostVolumes(spec.volumes ?? [], p.volumes);
      await this.writeConfig(spec, p);
      await this.runAndVerify(spec.id, p, overlayOptions(spec.layers, p.upper, p.work));
      await this.verifyLimits(spec);
      if (spec.user) handle.data.user = await resolveTaskUser(p.rootfs, spec.user);
      this.opts.logger?.info({ task: spec.id, diskMs: handle.data.diskMs }, 'oci task created');
      return handle;
    } catch (e) {
      await this.teardown(spec.id, p, true).catch((te: unknown) =>
        this.opts.logger?.error({ err: te, task: spec.id }, 'cleanup after failed create failed'),
      );
      throw asPrismError(e, 'INTERNAL', `creating task ${spec.id}`);
    }
  }

  async start(handle: TaskHandle): Promise<void> {
    const p = this.paths(handle.id);
    if (!existsSync(p.task)) throw new PrismError('NOT_FOUND', `task ${handle.id} not found`);
    const state = await this.runc.state(handle.id);
    if (isLive(state)) return;
    if (state) await this.runc.delete(handle.id, true);
    try {
      if (existsSync(p.diskImage) && !(await isMounted(p.disk))) await mountTaskDisk(p.diskImage, p.disk);
      await mountHostVolumes(handle.spec.volumes ?? [], p.volumes);
      const overlay = (await isMounted(p.rootfs)) ? undefined : overlayOptions(handle.spec.layers, p.upper, p.work);
      // The config written by create is reused, so a restarted task is the same task.
      if (!existsSync(join(p.bundle, 'config.json'))) await this.writeConfig(handle.spec, p);
      await this.runAndVerify(handle.id, p, overlay);
      await this.verifyLimits(handle.spec);
    } catch (e) {
      await this.teardown(handle.id, p, false).catch((te: unknown) =>
        this.opts.logger?.error({ err: te, task: handle.id }, 'cleanup after failed start failed'),
      );
      throw asPrismError(e, 'INTERNAL', `starting task ${handle.id}`);
    }
  }

  async recover(handle: TaskHandle): Promise<TaskState> {
    const p = this.paths(handle.id);
    const state = await this.runc.state(handle.id);
    if (state?.status === 'running') return 'running';
    // A paused sandbox stays paused across a restart: the service decides (its record says paused).
    if (state?.status === 'paused') return 'paused';
    if (!existsSync(p.task)) {
      // A container without its directory cannot be started again: remove what is left.
      if (state) await this.teardown(handle.id, p, true);
      return 'gone';
    }
    // Stopped, half-created, or unknown to runc (e.g. after a host reboot): bring it to a clean stop.
    await this.teardown(handle.id, p, false);
    return 'stopped';
  }

  async inspect(handle: TaskHandle): Promise<TaskState> {
    const state = await this.runc.state(handle.id);
    if (state?.status === 'paused') return 'paused';
    if (isLive(state)) return 'running';
    return state || existsSync(this.paths(handle.id).task) ? 'stopped' : 'gone';
  }

  async exec(handle: TaskHandle, opts: ExecOptions): Promise<TaskProcess> {
    const p = this.paths(handle.id);
    try {
      const volumes = handle.spec.volumes ?? [];
      const layerFull = existsSync(p.diskImage) ? () => isDiskFull(p.disk) : async () => false;
      const diskFull = async () => (await layerFull()) || anyVolumeFull(volumes, p.volumes);
      return await startExec(() => this.cgroups.oomKills(handle.id), p.agentSocket, opts, opts.asRoot ? undefined : (handle.data.user as TaskUser | undefined), diskFull);
    } catch (e) {
      // No agent listening: tell "gone" from "stopped" the way callers expect.
      if (e instanceof PrismError && e.code === 'FAILED_PRECONDITION' && !existsSync(p.task)) {
        throw new PrismError('NOT_FOUND', `task ${handle.id} not found`);
      }
      throw e;
    }
  }

  /** The cgroup freezer (`runc pause`): processes stop where they are, memory stays resident. */
  async pause(handle: TaskHandle): Promise<void> {
    const state = await this.runc.state(handle.id);
    if (state?.status === 'paused') return;
    if (state?.status !== 'running') {
      if (!state && !existsSync(this.paths(handle.id).task)) throw new PrismError('NOT_FOUND', `task ${handle.id} not found`);
      throw new PrismError('FAILED_PRECONDITION', `task ${handle.id} is not running`);
    }
    await this.runc.pause(handle.id);
  }

  async resume(handle: TaskHandle): Promise<void> {
    const state = await this.runc.state(handle.id);
    if (state?.status === 'running') return;
    if (state?.status !== 'paused') {
      if (!state && !existsSync(this.paths(handle.id).task)) throw new PrismError('NOT_FOUND', `task ${handle.id} not found`);
      throw new PrismError('FAILED_PRECONDITION', `task ${handle.id} is not paused`);
    }
    await this.runc.resume(handle.id);
  }

  /** The upper directory as a layer tar; a running task is frozen meanwhile, a stopped one's disk mounted for the read. */
  async exportLayer(handle: TaskHandle, dest: string): Promise<void> {
    const p = this.paths(handle.id);
    if (!existsSync(p.task)) throw new PrismError('NOT_FOUND', `task ${handle.id} not found`);
    const state = await this.runc.state(handle.id);
    const freeze = state?.status === 'running';
    const mount = existsSync(p.diskImage) && !(await isMounted(p.disk));
    if (mount) await mountTaskDisk(p.diskImage, p.disk);
    if (freeze) await this.runc.pause(handle.id);
    try {
      await exportUpperLayer(p.upper, dest, this.opts.initBinary);
    } finally {
      if (freeze) await this.runc.resume(handle.id).catch((e: unknown) => this.opts.logger?.error({ err: e, task: handle.id }, 'thawing after a snapshot failed'));
      if (mount) await unmountAll(p.disk).catch(() => undefined);
    }
  }

  async stop(handle: TaskHandle, opts: { timeoutMs?: number } = {}): Promise<void> {
    const p = this.paths(handle.id);
    const state = await this.runc.state(handle.id);
    if (!state && !existsSync(p.task)) throw new PrismError('NOT_FOUND', `task ${handle.id} not found`);
    if (state && state.status !== 'stopped') {
      // A frozen process takes a signal only once thawed.
      if (state.status === 'paused') await this.runc.resume(handle.id);
      // KILL of a pid namespace's init takes every process of the task with it.
      await this.runc.kill(handle.id, 'KILL');
      await this.waitStopped(handle.id, opts.timeoutMs ?? DEFAULT_STOP_TIMEOUT_MS);
    }
    await this.teardown(handle.id, p, false);
  }

  async destroy(handle: TaskHandle): Promise<void> {
    await this.teardown(handle.id, this.paths(handle.id), true);
    this.opts.logger?.info({ task: handle.id }, 'oci task destroyed');
  }

  /**
   * Usage from the task's cgroup and its disk. A running task always has its cgroup, so only when it
   * has none is runc asked why (a sampler of many tasks spawns no runc per sample).
   */
  async stats(handle: TaskHandle): Promise<TaskStats> {
    const p = this.paths(handle.id);
    let usage;
    try {
      usage = await this.cgroups.usage(handle.id);
    } catch (e) {
      await this.requireRunning(handle.id);
      throw asPrismError(e, 'INTERNAL', `reading cgroup stats of ${handle.id}`);
    }
    // Tasks made before writable-layer disks have none: their layer is on the host's disk, unbounded.
    const disk = existsSync(p.diskImage) ? await diskUsage(p.disk).catch(() => undefined) : undefined;
    return { ...usage, diskUsedBytes: disk?.usedBytes ?? 0, diskTotalBytes: disk?.totalBytes ?? 0 };
  }

  /** Nothing to release: every exec has its own connection. */
  async close(): Promise<void> {}

  async listTasks(): Promise<string[]> {
    const dirs = await readdir(this.tasksDir).catch(() => [] as string[]);
    return [...new Set([...dirs, ...(await this.runc.list())])].sort();
  }

  private paths(id: string): TaskPaths {
    if (!ID_PATTERN.test(id)) throw new PrismError('INVALID_ARGUMENT', `invalid task id: ${JSON.stringify(id)}`);
    const task = join(this.tasksDir, id);
    const bundle = join(task, 'bundle');
    const diskImage = join(task, 'disk.ext4');
    const disk = join(task, 'disk');
    // Tasks created before writable-layer disks keep their layer where it was (no disk.ext4, no limit).
    const layerDir = existsSync(join(task, 'upper')) && !existsSync(diskImage) ? task : disk;
    return {
      task, bundle, diskImage, disk, upper: join(layerDir, 'upper'), work: join(layerDir, 'work'), rootfs: join(task, 'rootfs'), volumes: join(task, 'volumes'),
      pidFile: join(bundle, 'init.pid'), runLog: join(bundle, 'runc.log'), agentSocket: join(task, 'agent.sock'),
    };
  }

  private async requireRunning(id: string): Promise<void> {
    const state = await this.runc.state(id);
    if (state?.status === 'running') return;
    if (!state && !existsSync(this.paths(id).task)) throw new PrismError('NOT_FOUND', `task ${id} not found`);
    throw new PrismError('FAILED_PRECONDITION', `task ${id} is not running`);
  }

  private async writeConfig(spec: TaskSpec, p: TaskPaths): Promise<void> {
    const resolvConf = join(p.task, 'resolv.conf');
    if (spec.network) await writeFile(resolvConf, spec.network.nameservers.map((ns) => `nameserver ${ns}\n`).join('') || '# no name servers: egress policy allows no names\n');
    const volumes = (spec.volumes ?? []).map((v, i) => ({ source: join(p.volumes, String(i)), destination: v.mountPath, readOnly: v.readOnly }));
    const config = buildRuntimeSpec({
      spec, rootfs: p.rootfs, initBinary: this.opts.initBinary, resolvConf, volumes,
      cgroups: { path: this.cgroups.runcPath(spec.id), swapAccounting: this.cgroups.swapAccounting(), namespace: this.cgroups.version === 2 },
    });
    await writeFile(join(p.bundle, 'config.json'), JSON.stringify(config, null, 2));
  }

  /**
   * Starts the container through prism-init's host side, which mounts the overlay (when `overlay`
   * options are given) and hands runc the exec agent's listening socket.
   */
  private async runAndVerify(id: string, p: TaskPaths, overlay?: string): Promise<void> {
    const wrapper = [this.opts.initBinary, 'listen', p.agentSocket, ...(overlay ? ['--overlay', overlay, p.rootfs] : []), '--'];
    await this.runc.runDetached(id, p.bundle, p.pidFile, p.runLog, wrapper);
    const pid = Number((await readFile(p.pidFile, 'utf8')).trim());
    await ensureLoopbackUp(pid);
  }

  /**
   * Reads back the limits the kernel holds for the task: a limit that did not land (a controller
   * missing or not delegated on a cgroup v2 host) fails the create instead of running the task without it.
   */
  private async verifyLimits(spec: TaskSpec): Promise<void> {
    const got = await this.cgroups.applied(spec.id).catch((e: unknown) => {
      throw new PrismError('FAILED_PRECONDITION', `task ${spec.id} has no cgroup to limit it (${(e as Error).message}); run 'prismd doctor'`, { cause: e });
    });
    const wantCpu = cpuQuotaUs(spec.cpus) / 100_000;
    const gotCpu = got.cpuPeriodUs > 0 ? got.cpuQuotaUs / got.cpuPeriodUs : 0;
    const wrong = [
      got.memoryBytes !== spec.memoryMb * 1024 * 1024 && `memory ${got.memoryBytes || 'unlimited'} instead of ${spec.memoryMb} MiB`,
      got.pids !== spec.pidsLimit && `pids ${got.pids || 'unlimited'} instead of ${spec.pidsLimit}`,
      Math.abs(gotCpu - wantCpu) > 0.01 && `cpu ${gotCpu || 'unlimited'} instead of ${spec.cpus}`,
    ].filter(Boolean);
    if (wrong.length) {
      throw new PrismError('FAILED_PRECONDITION', `the host did not apply the limits of task ${spec.id}: ${wrong.join(', ')}; run 'prismd doctor'`);
    }
  }

  private async waitStopped(id: string, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const state = await this.runc.state(id);
      if (!state || state.status === 'stopped') return;
      if (Date.now() > deadline) throw new PrismError('DEADLINE_EXCEEDED', `task ${id} did not stop within ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  /**
   * Removes the container, its mounts and cgroups; with `removeFiles` also the task directory.
   * Safe to repeat. Unmounting comes before removal so that rm can never reach into a layer.
   */
  private async teardown(id: string, p: TaskPaths, removeFiles: boolean): Promise<void> {
    // `runc delete -f` alone sleeps 100 ms after its SIGKILL; killing and polling first is faster.
    const state = await this.runc.state(id);
    if (state && state.status !== 'stopped') {
      if (state.status === 'paused') await this.runc.resume(id).catch(() => undefined);
      await this.runc.kill(id, 'KILL');
      await this.waitStopped(id, DEFAULT_STOP_TIMEOUT_MS).catch(() => {});
    }
    for (let attempt = 0; ; attempt++) {
      try {
        await this.runc.delete(id, true);
        break;
      } catch (e) {
        // Deleting while the kernel still tears down the task's processes can fail with EBUSY.
        if (attempt >= 20) throw e;
        await new Promise((r) => setTimeout(r, 50));
      }
    }
    // The overlay first: it holds the disk busy. The disk's loop device goes with its last unmount.
    await unmountAll(p.rootfs);
    await unmountHostVolumes(p.volumes);
    await unmountAll(p.disk);
    if (removeFiles) await unmountAll(p.task);
    if (removeFiles) await rm(p.task, { recursive: true, force: true });
    const left = await this.cgroups.remove(id);
    if (left.length > 0) throw new PrismError('INTERNAL', `cgroups of task ${id} still busy: ${left.join(', ')}`);
  }
}

function isLive(state: ContainerState | null): boolean {
  return state?.status === 'running' || state?.status === 'paused';
}

function validateSpec(spec: TaskSpec): void {
  if (!ID_PATTERN.test(spec.id)) throw new PrismError('INVALID_ARGUMENT', `invalid task id: ${JSON.stringify(spec.id)}`);
  if (spec.layers.length === 0) throw new PrismError('INVALID_ARGUMENT', 'a task needs at least one layer');
  if (!(spec.memoryMb > 0 && spec.cpus > 0 && spec.pidsLimit > 0 && spec.diskMb > 0 && spec.maxOpenFiles > 0)) {
    throw new PrismError('INVALID_ARGUMENT', 'memoryMb, cpus, pidsLimit, diskMb and maxOpenFiles must be positive');
  }
  if (!spec.workdir.startsWith('/')) throw new PrismError('INVALID_ARGUMENT', 'workdir must be an absolute path');
  for (const v of spec.volumes ?? []) {
    if (!v.mountPath.startsWith('/') || v.mountPath === '/') throw new PrismError('INVALID_ARGUMENT', `volume mountPath must be an absolute path other than /, got '${v.mountPath}'`);
  }
}

async function requireDir(path: string): Promise<void> {
  const st = await stat(path).catch(() => null);
  if (!st?.isDirectory()) throw new PrismError('FAILED_PRECONDITION', `image layer not found: ${path}`);
}

/**
 * runc brings `lo` up in a new network namespace; this checks it through the task's own sysfs and
 * repairs it from the host (images need not contain `ip`) should a runc version leave it down.
 */
async function ensureLoopbackUp(pid: number): Promise<void> {
  const flags = await readFile(`/proc/${pid}/root/sys/class/net/lo/flags`, 'utf8').catch(() => '0x0');
  if ((Number(flags.trim()) & 0x1) === 1) return;
  await new Promise<void>((resolve, reject) => {
    execFile('nsenter', ['-t', String(pid), '-n', 'ip', 'link', 'set', 'lo', 'up'], { timeout: 10_000 }, (err, _o, stderr) =>
      err ? reject(new PrismError('INTERNAL', `bringing up lo in task: ${stderr.trim() || err.message}`, { cause: err })) : resolve(),
    );
  });
}

/**
 * overlayfs is in the kernel, or a module that loads. Stock distribution kernels build it as a module
 * that nothing loads until the first overlay mount (a fresh Debian server has no overlay in
 * /proc/filesystems); load it now, as dockerd does, so the probe answers for the host, not for its
 * module cache.
 */
async function overlayAvailable(): Promise<boolean> {
  const listed = async () => /\toverlay$/m.test(await readFile('/proc/filesystems', 'utf8').catch(() => ''));
  if (await listed()) return true;
  await new Promise<void>((resolve) => execFile('modprobe', ['-q', 'overlay'], () => resolve()));
  return listed();
}
