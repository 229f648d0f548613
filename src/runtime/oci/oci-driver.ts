import { execFile } from 'node:child_process';
import { runChecked } from '../command.js';
import { createHash } from 'node:crypto';
import { constants, existsSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import { access, mkdir, readFile, readdir, readlink, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { asPrismError, PrismError } from '../../core/errors.js';
import type {
  ExecOptions, ProbeResult, RuntimeCapabilities, RuntimeDriver, TaskHandle, TaskProcess, TaskSpec, TaskState, TaskStats,
} from '../driver.js';
import { PidWatcher, type WatchEnd } from '../pid-watch.js';
import { POOL_SLOT, WarmPools } from '../warm-pool.js';
import type { CgroupHost, TaskCgroups } from '../cgroups/cgroups.js';
import { probeCgroups } from '../cgroups/probe.js';
import { taskCgroups } from '../cgroups/select-cgroups.js';
import { startExec } from './oci-exec.js';
import { isMounted, overlayOptions, unmountAll } from './overlay-mount.js';
import { anyVolumeFull, mountHostVolumes } from '../host-volumes.js';
import { Runc, type ContainerState } from './runc.js';
import { diskUsage, isDiskFull, makeTaskDisk, mountNewTaskDisk, mountTaskDisk } from './task-disk.js';
import { exportUpperLayer } from '../layer-export.js';
import { buildRuntimeSpec, cpuQuotaUs } from './runtime-spec.js';
import type { TaskUser } from '../task-user.js';
import { resolveTaskUser } from './task-user.js';
import { StepTimer } from '../../core/step-timer.js';
import { claimTaskDir, createOrTeardown } from '../task-dir.js';

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
  /**
   * Ready tasks kept per image and shape (`prismd --warm-pool`; default 0): containers already running,
   * with their disk, overlay and cgroup, that a create of that shape takes instead of making one.
   */
  warmPool?: number;
}

/** A task id names a directory, a runc container and cgroups, so it must be a plain name. */
const ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;
/** Shapes with a warm pool at once; the oldest pool goes when another starts. */
const MAX_POOLS = 4;
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
  /** Warm pool: ready tasks per shape key (poolKey). */
  private readonly pools: WarmPools;
  /** Exits of the tasks' init processes, as events (watchExit). */
  private readonly exits: PidWatcher;

  constructor(private readonly opts: OciDriverOptions) {
    this.exits = new PidWatcher(opts.initBinary, opts.logger);
    this.pools = new WarmPools({
      size: opts.warmPool ?? 0,
      maxShapes: MAX_POOLS,
      remove: (slot) => this.teardown(slot, this.paths(slot), true),
      onError: (e, key) => this.opts.logger?.warn({ err: e, pool: key }, 'oci warm pool: making or removing a task failed'),
    });
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
    const key = this.poolKey(spec);
    if (key) {
      const claimed = await this.claim(key, spec);
      this.refill(key, spec);
      if (claimed) return claimed;
    }
    return this.createTask(spec);
  }

  /** A task made from scratch: its writable disk, overlay, config and container (runc run). */
  private async createTask(spec: TaskSpec): Promise<TaskHandle> {
    const p = this.paths(spec.id);
    await claimTaskDir(this.tasksDir, p.task, spec.id);
    const handle: TaskHandle = { id: spec.id, runtime: 'oci', spec, data: { taskDir: p.task, rootfs: p.rootfs } };
    // Each step's time, in the log line of the create: where a create's time goes (bench/oci-latency.ts).
    const timer = new StepTimer();
    const step = (name: string) => timer.step(name);
    const steps = timer.steps;
    return createOrTeardown(spec.id, async () => {
      await Promise.all([p.bundle, p.disk, p.rootfs].map((d) => mkdir(d)));
      step('dirsMs');
      await makeTaskDisk(p.diskImage, spec.diskMb, join(this.opts.stateDir, 'disk-templates'));
      step('diskImageMs');
      await mountNewTaskDisk(p.diskImage, p.disk, this.opts.initBinary);
      step('diskMountMs');
      handle.data.diskMs = Math.round(steps.diskImageMs! + steps.diskMountMs!);
      await Promise.all([p.upper, p.work].map((d) => mkdir(d)));
      await mountHostVolumes(spec.volumes ?? [], p.volumes);
      step('volumesMs');
      await this.writeConfig(spec, p);
      step('configMs');
      await this.runAndVerify(spec.id, p, overlayOptions(spec.layers, p.upper, p.work));
      step('runcRunMs');
      await this.verifyLimits(spec);
      step('verifyLimitsMs');
      if (spec.user) handle.data.user = await resolveTaskUser(p.rootfs, spec.user);
      step('userMs');
      this.opts.logger?.info({ task: spec.id, diskMs: handle.data.diskMs, steps }, 'oci task created');
      return handle;
    }, () => this.teardown(spec.id, p, true), this.opts.logger);
  }

  async start(handle: TaskHandle): Promise<void> {
    const id = this.slot(handle);
    const p = this.paths(id);
    if (!existsSync(p.task)) throw new PrismError('NOT_FOUND', `task ${handle.id} not found`);
    const state = await this.runc.state(id);
    if (isLive(state)) return;
    if (state) await this.runc.delete(id, true);
    try {
      if (existsSync(p.diskImage) && !(await isMounted(p.disk))) await mountTaskDisk(p.diskImage, p.disk);
      await mountHostVolumes(handle.spec.volumes ?? [], p.volumes);
      const overlay = (await isMounted(p.rootfs)) ? undefined : overlayOptions(handle.spec.layers, p.upper, p.work);
      // The config written by create is reused, so a restarted task is the same task.
      if (!existsSync(join(p.bundle, 'config.json'))) await this.writeConfig(handle.spec, p, id);
      await this.runAndVerify(id, p, overlay);
      await this.verifyLimits(handle.spec, id);
    } catch (e) {
      await this.teardown(id, p, false).catch((te: unknown) =>
        this.opts.logger?.error({ err: te, task: handle.id }, 'cleanup after failed start failed'),
      );
      throw asPrismError(e, 'INTERNAL', `starting task ${handle.id}`);
    }
  }

  async recover(handle: TaskHandle): Promise<TaskState> {
    const id = this.slot(handle);
    const p = this.paths(id);
    // Its init alive in its cgroup and the freezer readable: no `runc state` (a process spawn each,
    // which made a restart of a node with a thousand sandboxes take over 30 s).
    if (await this.seemsAlive(handle)) {
      const frozen = await this.cgroups.frozen(id);
      if (frozen !== undefined) return frozen ? 'paused' : 'running';
    }
    const state = await this.runc.state(id);
    if (state?.status === 'running') return 'running';
    // A paused sandbox stays paused across a restart: the service decides (its record says paused).
    if (state?.status === 'paused') return 'paused';
    if (!existsSync(p.task)) {
      // A container without its directory cannot be started again: remove what is left.
      if (state) await this.teardown(id, p, true);
      return 'gone';
    }
    // Stopped, half-created, or unknown to runc (e.g. after a host reboot): bring it to a clean stop.
    await this.teardown(id, p, false);
    return 'stopped';
  }

  /**
   * The init process of the task's container (its pid file, written by runc at every start) exists,
   * is not a zombie, and is in the task's cgroup (so a recycled pid does not count): a few small reads.
   */
  async seemsAlive(handle: TaskHandle): Promise<boolean> {
    return (await this.livePid(this.slot(handle))) !== undefined;
  }

  /** The init's pid as runc wrote it to the pid file (not checked to be alive); undefined without one. */
  private recordedPid(id: string): number | undefined {
    let text = '';
    try {
      text = readFileSync(this.paths(id).pidFile, 'utf8');
    } catch {
      return undefined;
    }
    const pid = Number(text.trim());
    return Number.isInteger(pid) && pid > 1 ? pid : undefined;
  }

  /** The pid of container `id`'s init when seemsAlive holds for it (`pid` given: that one, not the file's). */
  private async livePid(id: string, pid?: number): Promise<number | undefined> {
    // Synchronous: three small reads answered from memory (microseconds each), where the async ones
    // cost a thread-pool trip each; deletes and the watchdog ask this of many tasks.
    const read = (path: string) => {
      try {
        return readFileSync(path, 'utf8');
      } catch {
        return '';
      }
    };
    pid ??= this.recordedPid(id);
    if (pid === undefined) return undefined;
    const stat = read(`/proc/${pid}/stat`);
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    if (!state || state === 'Z' || state === 'X') return undefined;
    return read(`/proc/${pid}/cgroup`).includes(id) ? pid : undefined;
  }

  /** Whether init `pid` of container `id` ends within `timeoutMs`: told by a pidfd (PidWatcher), else polled. */
  private async waitExit(id: string, pid: number, timeoutMs: number): Promise<boolean> {
    const key = `end-${id}`;
    const ended = await new Promise<WatchEnd | 'timeout'>((resolve) => {
      const timer = setTimeout(() => resolve('timeout'), timeoutMs);
      const watching = this.exits.watch(key, pid, (why) => {
        clearTimeout(timer);
        resolve(why);
      });
      if (!watching) {
        clearTimeout(timer);
        resolve('unwatchable');
      }
    });
    this.exits.unwatch(key);
    if (ended === 'exited') return true;
    const deadline = Date.now() + (ended === 'timeout' ? 0 : timeoutMs);
    for (;;) {
      if ((await this.livePid(id, pid)) === undefined) return true;
      if (Date.now() > deadline) return false;
      await new Promise((r) => setTimeout(r, 5));
    }
  }

  /** The task's init process through a pidfd (PidWatcher), checked to be the task's after it is watched. */
  async watchExit(handle: TaskHandle, onEnd: (why: WatchEnd) => void): Promise<boolean> {
    const id = this.slot(handle);
    const pid = this.recordedPid(id);
    if (pid === undefined || !this.exits.watch(handle.id, pid, onEnd)) return false;
    // The pid may have been reused between the file's read and the pidfd's open: then it is not ours.
    if ((await this.livePid(id, pid)) === undefined) {
      this.exits.unwatch(handle.id);
      onEnd('exited');
    }
    return true;
  }

  unwatchExit(handle: TaskHandle): void {
    this.exits.unwatch(handle.id);
  }

  async inspect(handle: TaskHandle): Promise<TaskState> {
    const id = this.slot(handle);
    const state = await this.runc.state(id);
    if (state?.status === 'paused') return 'paused';
    if (isLive(state)) return 'running';
    return state || existsSync(this.paths(id).task) ? 'stopped' : 'gone';
  }

  async exec(handle: TaskHandle, opts: ExecOptions): Promise<TaskProcess> {
    const id = this.slot(handle);
    const p = this.paths(id);
    try {
      const volumes = handle.spec.volumes ?? [];
      const layerFull = existsSync(p.diskImage) ? () => isDiskFull(p.disk) : async () => false;
      const diskFull = async () => (await layerFull()) || anyVolumeFull(volumes, p.volumes);
      return await startExec(() => this.cgroups.oomKills(id), p.agentSocket, opts, opts.asRoot ? undefined : (handle.data.user as TaskUser | undefined), diskFull);
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
    const id = this.slot(handle);
    const state = await this.runc.state(id);
    if (state?.status === 'paused') return;
    if (state?.status !== 'running') {
      if (!state && !existsSync(this.paths(id).task)) throw new PrismError('NOT_FOUND', `task ${handle.id} not found`);
      throw new PrismError('FAILED_PRECONDITION', `task ${handle.id} is not running`);
    }
    await this.runc.pause(id);
  }

  async resume(handle: TaskHandle): Promise<void> {
    const id = this.slot(handle);
    const state = await this.runc.state(id);
    if (state?.status === 'running') return;
    if (state?.status !== 'paused') {
      if (!state && !existsSync(this.paths(id).task)) throw new PrismError('NOT_FOUND', `task ${handle.id} not found`);
      throw new PrismError('FAILED_PRECONDITION', `task ${handle.id} is not paused`);
    }
    await this.runc.resume(id);
  }

  /** The upper directory as a layer tar; a running task is frozen meanwhile, a stopped one's disk mounted for the read. */
  async exportLayer(handle: TaskHandle, dest: string): Promise<void> {
    const id = this.slot(handle);
    const p = this.paths(id);
    if (!existsSync(p.task)) throw new PrismError('NOT_FOUND', `task ${handle.id} not found`);
    const state = await this.runc.state(id);
    const freeze = state?.status === 'running';
    const mount = existsSync(p.diskImage) && !(await isMounted(p.disk));
    if (mount) await mountTaskDisk(p.diskImage, p.disk);
    if (freeze) await this.runc.pause(id);
    try {
      await exportUpperLayer(p.upper, dest, this.opts.initBinary);
    } finally {
      if (freeze) await this.runc.resume(id).catch((e: unknown) => this.opts.logger?.error({ err: e, task: handle.id }, 'thawing after a snapshot failed'));
      if (mount) await unmountAll(p.disk).catch(() => undefined);
    }
  }

  async stop(handle: TaskHandle, opts: { timeoutMs?: number } = {}): Promise<void> {
    const id = this.slot(handle);
    const p = this.paths(id);
    if (!existsSync(p.task) && !(await this.runc.state(id))) throw new PrismError('NOT_FOUND', `task ${handle.id} not found`);
    const timeoutMs = opts.timeoutMs ?? DEFAULT_STOP_TIMEOUT_MS;
    if (!(await this.kill(id, timeoutMs)).ended) throw new PrismError('DEADLINE_EXCEEDED', `task ${handle.id} did not stop within ${timeoutMs} ms`);
    await this.teardown(id, p, false);
  }

  async destroy(handle: TaskHandle): Promise<void> {
    const id = this.slot(handle);
    const timer = new StepTimer();
    await this.teardown(id, this.paths(id), true, timer);
    // A task made from a warm-pool one is named by a link to it: the link goes last.
    if (id !== handle.id) await rm(join(this.tasksDir, handle.id), { force: true });
    this.opts.logger?.info({ task: handle.id, ms: timer.totalMs(), steps: timer.steps }, 'oci task destroyed');
  }

  /**
   * Usage from the task's cgroup and its disk. A running task always has its cgroup, so only when it
   * has none is runc asked why (a sampler of many tasks spawns no runc per sample).
   */
  async stats(handle: TaskHandle): Promise<TaskStats> {
    const id = this.slot(handle);
    const p = this.paths(id);
    let usage;
    try {
      usage = await this.cgroups.usage(id);
    } catch (e) {
      await this.requireRunning(id, handle.id);
      throw asPrismError(e, 'INTERNAL', `reading cgroup stats of ${handle.id}`);
    }
    // Tasks made before writable-layer disks have none: their layer is on the host's disk, unbounded.
    const disk = existsSync(p.diskImage) ? await diskUsage(p.disk).catch(() => undefined) : undefined;
    return { ...usage, diskUsedBytes: disk?.usedBytes ?? 0, diskTotalBytes: disk?.totalBytes ?? 0 };
  }

  /** The warm pool's ready tasks go (a crash leaves them to the next start's orphan cleanup, see listTasks). */
  async close(): Promise<void> {
    this.exits.close();
    await this.pools.close();
  }

  /**
   * Tasks by the ids they were created with: a task made from a warm-pool one is listed by its link's
   * name, not by the pool one's; this driver's ready pool tasks are not listed (they belong to no
   * sandbox yet), so the pool tasks a crashed prismd left are, and the caller removes them as orphans.
   */
  async listTasks(): Promise<string[]> {
    const entries = await readdir(this.tasksDir, { withFileTypes: true }).catch(() => []);
    const hidden = this.pools.held();
    const names: string[] = [];
    for (const e of entries) {
      if (e.isSymbolicLink()) hidden.add(await readlink(join(this.tasksDir, e.name)).catch(() => ''));
      names.push(e.name);
    }
    return [...new Set([...names, ...(await this.runc.list())])].filter((n) => !hidden.has(n)).sort();
  }

  /**
   * The container (runc id, cgroups, directory) of a task: its own id, or the warm-pool task it was
   * made from (recorded in its handle; for a handle without data, read off the link named by its id).
   */
  private slot(h: TaskHandle): string {
    const recorded = h.data?.slot;
    if (typeof recorded === 'string' && POOL_SLOT.test(recorded)) return recorded;
    // A handle the driver made records its directory; only a bare one (orphan cleanup) needs the link read.
    if (h.data?.taskDir || POOL_SLOT.test(h.id) || !ID_PATTERN.test(h.id)) return h.id;
    try {
      const target = readlinkSync(join(this.tasksDir, h.id));
      if (POOL_SLOT.test(target)) return target;
    } catch {
      /* not a link: the task's own directory, or none */
    }
    return h.id;
  }

  /**
   * The warm pool a spec can be served from: same image layers and the same limits (they are set when
   * a container starts). Tasks with a network or volumes, which are set up when a container starts, are
   * always made from scratch.
   */
  private poolKey(spec: TaskSpec): string | undefined {
    if (!this.opts.warmPool || spec.network || spec.volumes?.length || spec.image) return undefined;
    const shape = { layers: spec.layers, cpus: spec.cpus, memoryMb: spec.memoryMb, pidsLimit: spec.pidsLimit, diskMb: spec.diskMb, maxOpenFiles: spec.maxOpenFiles };
    return createHash('sha256').update(JSON.stringify(shape)).digest('hex').slice(0, 16);
  }

  /**
   * Turns a ready pool task into `spec`'s: a link named by the task id (which claims the id as the
   * directory of a fresh create would), the sandbox's hostname set in the running container, its
   * config rewritten (a stop and start runs the sandbox, not the pool task) and its limits read back.
   * Undefined when none is ready or the claim failed (the pool task is removed, the create goes on from scratch).
   */
  private async claim(key: string, spec: TaskSpec): Promise<TaskHandle | undefined> {
    const slot = this.pools.take(key);
    if (!slot) return undefined;
    const t0 = performance.now();
    const p = this.paths(slot);
    const link = join(this.tasksDir, spec.id);
    try {
      await symlink(slot, link);
    } catch (e) {
      this.pools.giveBack(key, slot);
      if ((e as NodeJS.ErrnoException).code === 'EEXIST') throw new PrismError('ALREADY_EXISTS', `task ${spec.id} already exists`);
      throw asPrismError(e, 'INTERNAL', 'claiming a warm-pool task');
    }
    try {
      const pid = this.recordedPid(slot);
      if (pid === undefined) throw new PrismError('INTERNAL', `warm-pool task ${slot} has no init pid in ${p.pidFile}`);
      await setHostname(pid, spec.hostname);
      await this.writeConfig(spec, p, slot);
      await this.verifyLimits(spec, slot);
      const handle: TaskHandle = { id: spec.id, runtime: 'oci', spec, data: { slot, taskDir: p.task, rootfs: p.rootfs, boot: 'pool' } };
      if (spec.user) handle.data.user = await resolveTaskUser(p.rootfs, spec.user);
      this.opts.logger?.info({ task: spec.id, slot, claimMs: Math.round((performance.now() - t0) * 10) / 10 }, 'oci task created from the warm pool');
      return handle;
    } catch (e) {
      this.opts.logger?.warn({ err: e, task: spec.id, slot }, 'claiming a warm-pool task failed; creating from scratch');
      await this.teardown(slot, p, true).catch(() => undefined);
      await rm(link, { force: true });
      return undefined;
    }
  }

  /** Tops up the pool of `key` to `warmPool` ready tasks, in the background, one at a time. */
  private refill(key: string, spec: TaskSpec): void {
    const { user: _user, ...shape } = spec;
    this.pools.refill(key, async (slot) => {
      await this.createTask({ ...shape, id: slot, hostname: slot, env: {}, volumes: [] });
    });
  }

  /** Resolves when no pool refill is running (tests, benches). */
  async poolSettled(): Promise<void> {
    await this.pools.settled();
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

  private async requireRunning(id: string, name = id): Promise<void> {
    const state = await this.runc.state(id);
    if (state?.status === 'running') return;
    if (!state && !existsSync(this.paths(id).task)) throw new PrismError('NOT_FOUND', `task ${name} not found`);
    throw new PrismError('FAILED_PRECONDITION', `task ${name} is not running`);
  }

  /** config.json of `spec`, for the container `slot` (its cgroup is named by it). */
  private async writeConfig(spec: TaskSpec, p: TaskPaths, slot = spec.id): Promise<void> {
    const resolvConf = join(p.task, 'resolv.conf');
    if (spec.network) await writeFile(resolvConf, spec.network.nameservers.map((ns) => `nameserver ${ns}\n`).join('') || '# no name servers: egress policy allows no names\n');
    const volumes = (spec.volumes ?? []).map((v, i) => ({ source: join(p.volumes, String(i)), destination: v.mountPath, readOnly: v.readOnly }));
    const config = buildRuntimeSpec({
      spec, rootfs: p.rootfs, initBinary: this.opts.initBinary, resolvConf, volumes,
      cgroups: { path: this.cgroups.runcPath(slot), swapAccounting: this.cgroups.swapAccounting(), namespace: this.cgroups.version === 2 },
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
    const pid = this.recordedPid(id);
    if (pid === undefined) throw new PrismError('INTERNAL', `runc started task ${id} but wrote no init pid to ${p.pidFile}`);
    await ensureLoopbackUp(pid);
  }

  /**
   * Reads back the limits the kernel holds for the task: a limit that did not land (a controller
   * missing or not delegated on a cgroup v2 host) fails the create instead of running the task without it.
   */
  private async verifyLimits(spec: TaskSpec, slot = spec.id): Promise<void> {
    const got = await this.cgroups.applied(slot).catch((e: unknown) => {
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
   * When the init its pid file names is seen gone, `runc delete` would only remove the container's
   * cgroups and its state directory: both are done here, with no runc process (the largest share of a
   * delete's CPU). Otherwise (no pid file: a run that failed early) runc deletes as it knows how.
   */
  private async teardown(id: string, p: TaskPaths, removeFiles: boolean, timer?: StepTimer): Promise<void> {
    const { initGone } = await this.kill(id);
    timer?.step('killMs');
    for (let attempt = 0; !initGone; attempt++) {
      try {
        await this.runc.delete(id, true);
        break;
      } catch (e) {
        // Deleting while the kernel still tears down the task's processes can fail with EBUSY.
        if (attempt >= 20) throw e;
        await new Promise((r) => setTimeout(r, 50));
      }
    }
    timer?.step('runcDeleteMs');
    // Every process gone (cgroup.kill or a SIGKILL each, then rmdir when empty) before the unmounts:
    // none holds a mount busy.
    const left = await this.cgroups.remove(id);
    timer?.step('cgroupsMs');
    if (left.length > 0) throw new PrismError('INTERNAL', `cgroups of task ${id} still busy: ${left.join(', ')}`);
    // The overlay first: it holds the disk busy. The disk's loop device goes with its last unmount.
    const mounted = removeFiles ? [p.rootfs, p.volumes, p.disk, p.task] : [p.rootfs, p.volumes, p.disk];
    await unmountAll(mounted, { initBinary: this.opts.initBinary });
    timer?.step('unmountMs');
    // Synchronous: a dozen small entries, where the async walk costs a thread-pool trip per entry.
    rmSync(p.volumes, { recursive: true, force: true });
    if (removeFiles) rmSync(p.task, { recursive: true, force: true });
    // Last: while it is there, runc lists the container, and a teardown cut short is found again.
    if (initGone) rmSync(join(this.runc.root, id), { recursive: true, force: true });
    timer?.step('rmMs');
  }

  /**
   * Kills every process of the task and waits for its init to end. `runc delete -f` alone sleeps
   * 100 ms after its SIGKILL; and a live init found from its pid file takes the signal directly, with
   * no `runc state` and `runc kill` (two runc processes per delete, most of a delete's CPU).
   * `ended`: the task is not running (any more). `initGone`: the init its pid file names has ended (so
   * no process of the task is left to runc but those the kernel is killing with its pid namespace).
   */
  private async kill(id: string, timeoutMs = DEFAULT_STOP_TIMEOUT_MS): Promise<{ ended: boolean; initGone: boolean }> {
    const recorded = this.recordedPid(id);
    const pid = await this.livePid(id, recorded);
    if (pid !== undefined) {
      // A frozen process takes a signal only once thawed.
      if ((await this.cgroups.frozen(id)) !== false) await this.runc.resume(id).catch(() => undefined);
      // KILL of a pid namespace's init takes every process of the task with it.
      process.kill(pid, 'SIGKILL');
      const ended = await this.waitExit(id, pid, timeoutMs);
      return { ended, initGone: ended };
    }
    if (recorded !== undefined) return { ended: true, initGone: true };
    const state = await this.runc.state(id);
    if (state && state.status !== 'stopped') {
      if (state.status === 'paused') await this.runc.resume(id).catch(() => undefined);
      await this.runc.kill(id, 'KILL');
      const ended = await this.waitStopped(id, timeoutMs).then(() => true, () => false);
      return { ended, initGone: false };
    }
    return { ended: true, initGone: false };
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

/** The UTS hostname of a running task, from the host (its own processes may not set it). */
function setHostname(pid: number, hostname: string): Promise<void> {
  if (!Number.isInteger(pid) || pid <= 1) return Promise.reject(new PrismError('INTERNAL', 'the task has no init pid'));
  return runChecked('nsenter', ['-t', String(pid), '-u', '--', 'hostname', hostname], "setting the task's hostname", { timeoutMs: 10_000 }).then(() => undefined);
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
  await runChecked('nsenter', ['-t', String(pid), '-n', 'ip', 'link', 'set', 'lo', 'up'], 'bringing up lo in task', { timeoutMs: 10_000 });
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
