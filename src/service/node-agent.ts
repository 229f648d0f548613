import { StepTimer } from '../core/step-timer.js';
import { PrismError, asPrismError, isPrismError } from '../core/errors.js';
import { isSandboxId } from '../core/ids.js';
import { join } from 'node:path';
import { SANDBOX_STATUSES, canTransition } from '../core/lifecycle.js';
import type { Sandbox, RuntimeName } from '../core/types.js';
import type { ImageStore } from '../images/image-store.js';
import type { NetworkManager, NetworkTraffic } from '../net/network-manager.js';
import type { ExecOptions, RuntimeDriver, TaskHandle, TaskProcess, TaskSpec, TaskStats, TaskVolume } from '../runtime/driver.js';
import type { Logger } from './logger.js';
import { KeyedMutex } from './keyed-mutex.js';
import { SandboxNetworks } from './sandbox-networks.js';
import type { SandboxFeed } from './sandbox-events.js';
import type { DirectTerms, SandboxRepo, Versioned } from './sandbox-repo.js';
import { resolveTaskImage, type TaskImage } from './task-image.js';
import type { Telemetry } from './telemetry.js';

/** `nobody`: what commands run as in an image that names no user (issue 6: never root by default). */
export const DEFAULT_SANDBOX_USER = '65534:65534';

/** Ways to ask for root, the one user the drivers run as when given none. */
const ROOT_USERS = new Set(['root', '0', '0:0', 'root:root']);

export interface NodeAgentOptions {
  /** User of commands when neither the request nor the image names one (`uid[:gid]`, or `root`). */
  defaultUser: string;
  /**
   * Host path of a local volume's image (VolumeService.image), checked first when `hostKernel` and a
   * microVM wrote it; absent: sandboxes with volumes fail.
   */
  volumeImage?: (name: string, hostKernel: boolean) => Promise<string>;
  /** Where memory snapshots live on this node (`<data-dir>/snapshots/<id>/`, SnapshotService). */
  snapshotsDir?: string;
  /** `--paused-ttl`: a sandbox paused this long is deleted; 0 or absent: paused sandboxes are kept. */
  pausedTtlMs?: number;
  /** Where image pulls for creates report their durations (default: nowhere). */
  telemetry?: Pick<Telemetry, 'observePull'>;
}

/** setTimeout past 2^31-1 ms (24.8 days) fires at once: longer waits go in steps. */
const MAX_TIMER_MS = 2 ** 31 - 1;
function longTimer(ms: number, fn: () => void, set: (t: NodeJS.Timeout) => void): void {
  const t = ms > MAX_TIMER_MS ? setTimeout(() => longTimer(ms - MAX_TIMER_MS, fn, set), MAX_TIMER_MS) : setTimeout(fn, Math.max(0, ms));
  t.unref();
  set(t);
}

export type TaskEndReason = 'stopped' | 'deleted' | 'failed';

/** The record changed or went away while its task was being made: someone else decided its fate. */
class Superseded extends Error {}

/**
 * The node agent runs the sandboxes placed on this node: it turns a sandbox record into a driver task,
 * keeps the task handles in the Store (so a restarted daemon can find its tasks again), recovers them
 * at start-up, and enforces sandbox TTLs. Lifecycle operations on one sandbox are serialised.
 */
export class NodeAgent {
  private readonly lock = new KeyedMutex();
  private readonly handles = new Map<string, TaskHandle>();
  private readonly ttlTimers = new Map<string, NodeJS.Timeout>();

  constructor(
    readonly nodeId: string,
    private readonly repo: SandboxRepo,
    private readonly images: ImageStore,
    private readonly drivers: ReadonlyMap<RuntimeName, RuntimeDriver>,
    private readonly log: Logger,
    private readonly opts: NodeAgentOptions = { defaultUser: DEFAULT_SANDBOX_USER },
    /** Absent on hosts without network support: sandboxes that need a network then fail to create. */
    net?: NetworkManager,
  ) {
    this.networks = new SandboxNetworks(nodeId, log, net);
  }

  private readonly networks: SandboxNetworks;

  /** The sandbox's address as the host reaches it, when it has a network on this node. */
  addressOf(id: string): string | undefined {
    return this.networks.addressOf(id);
  }

  runtimes(): RuntimeName[] {
    return [...this.drivers.keys()];
  }

  private driver(runtime: RuntimeName): RuntimeDriver {
    const d = this.drivers.get(runtime);
    if (!d) throw new PrismError('FAILED_PRECONDITION', `runtime '${runtime}' is not available on node ${this.nodeId}`);
    return d;
  }

  private async handle(id: string): Promise<TaskHandle> {
    let h = this.handles.get(id);
    if (!h) {
      h = await this.repo.getHandle(this.nodeId, id);
      if (!h) throw new PrismError('FAILED_PRECONDITION', `sandbox '${id}' has no task on node ${this.nodeId}`);
      this.handles.set(id, h);
    }
    return h;
  }

  private unsubscribe?: () => void;
  private readonly launching = new Set<string>();

  /**
   * Runs what placement assigns to this node: every record that names this node in `scheduled` is
   * created here, whether it was placed before this call (the initial listing) or after (the node's
   * sandbox feed; listed again when the feed had to start over). Call after `recover`.
   */
  async watchAssignments(feed: SandboxFeed): Promise<void> {
    this.unsubscribe?.();
    const mine = (s: Versioned<Sandbox>) => {
      if (s.value.node === this.nodeId && s.value.status === 'scheduled') this.launch(s);
    };
    const relist = async () => {
      for (const s of await this.repo.listSandboxesVersioned()) mine(s);
    };
    this.unsubscribe = feed.onChange((_id, sb, revision) => sb && mine({ value: sb, revision }), () => {
      this.log.warn({}, 'sandbox feed started over: listing assignments again');
      void relist().catch((err) => this.log.error({ err }, 'assignment resync failed'));
    });
    await relist();
  }

  /**
   * Runs the assignment as the feed or a listing delivered it: no read, as its last write (the
   * `running` commit) compares the revision, so a record that changed meanwhile only costs a task
   * made and destroyed. A task this node already runs is never made twice (an old `scheduled` seen
   * after a newer listing).
   */
  private launch(s: Versioned<Sandbox>): void {
    const id = s.value.id;
    if (this.launching.has(id) || this.handles.has(id)) return;
    this.launching.add(id);
    this.runAssignment(s)
      .catch((e) => this.log.error({ err: e, sandbox: id }, 'running an assignment failed'))
      .finally(() => this.launching.delete(id));
  }

  /**
   * scheduled -> running, or -> failed (with the create's error code) leaving no task behind. The
   * `running` record carries the task handle, written by a commit that also checks it did not change while
   * the task was made (a delete meanwhile wins: the new task is destroyed). `starting` is written only
   * when the image must be pulled first (task-image.ts decides from where), since that can take a while.
   */
  private async runAssignment(cur: Versioned<Sandbox>): Promise<void> {
    const id = cur.value.id;
    let { value: sb, revision } = cur;
    // Where a create's time goes on this node, in its debug line (the driver logs its own steps).
    const timer = new StepTimer();
    try {
      await this.lock.run(id, async () => {
        timer.step('queuedMs');
        // A delete that held the lock first (or ran before the feed delivered this record) has moved
        // the record on, and its answer must not go out while a task for the deleted sandbox is still
        // being made here: it destroyed the sandbox on this node, which this node remembers, no read.
        if (this.destroyed.has(id)) return;
        const image = await resolveTaskImage(sb.image, this.driver(sb.runtime), this.images, async () => {
          const starting = await this.repo.transition(id, ['scheduled'], 'starting', (s) => s, { quiet: true }).catch((e: unknown) => {
            throw isPrismError(e, 'NOT_FOUND') ? new Superseded() : e;
          });
          if (!starting) throw new Superseded();
          ({ value: sb, revision } = starting);
        }, this.opts.telemetry);
        timer.step('imageMs');
        const made = await this.makeTask(sb, image, timer);
        const running = await this.commitMade(sb, image, made, (r) => this.repo.commitRunning(made.handle, r, revision)).catch((e: unknown) => {
          throw isPrismError(e, 'CONFLICT') || isPrismError(e, 'NOT_FOUND') ? new Superseded() : e;
        });
        timer.step('commitMs');
        this.armTtl(running);
        this.log.debug({ sandbox: id, ms: timer.totalMs(), steps: timer.steps }, 'sandbox task made');
      });
    } catch (e) {
      if (e instanceof Superseded) {
        this.log.info({ sandbox: id }, 'sandbox changed or was deleted while being created: its task was removed');
        return;
      }
      const err = asPrismError(e, 'INTERNAL', 'creating the sandbox');
      this.log.warn({ sandbox: id, err }, 'sandbox create failed');
      await this.repo
        .update(id, (s) => (s.node === this.nodeId && (s.status === 'scheduled' || s.status === 'starting') ? { ...s, status: 'failed', error: { code: err.code, message: err.message } } : undefined))
        .catch((e2) => this.log.warn({ err: e2, sandbox: id }, 'recording a failed create failed'));
    }
  }

  /**
   * A direct create (direct-create.ts): makes the task of `sb` (placed on this node, no record yet),
   * then writes its record, `running` with the handle, and its claim on this node's reservation in one
   * commit, on the `terms` of SandboxRepo.commitDirect (room on the reservation, else RESOURCE_EXHAUSTED;
   * this node still a live member, else UNAVAILABLE). Whatever fails, the task is destroyed and nothing
   * is written. Undefined, with nothing made, when the image must be pulled first: a direct create never
   * pulls (a pull takes a while, and a create placed by the scheduler shows it as `starting`).
   */
  async createDirect(sb: Sandbox, terms: DirectTerms): Promise<Sandbox | undefined> {
    try {
      return await this.createDirectLocked(sb, terms);
    } catch (e) {
      // As a scheduled create's failure is recorded (runAssignment): a stable code, whatever failed.
      const err = asPrismError(e, 'INTERNAL', 'creating the sandbox');
      if (err.code !== 'RESOURCE_EXHAUSTED' && err.code !== 'ALREADY_EXISTS') this.log.warn({ sandbox: sb.id, err }, 'sandbox create failed');
      throw err;
    }
  }

  private async createDirectLocked(sb: Sandbox, terms: DirectTerms): Promise<Sandbox | undefined> {
    const timer = new StepTimer();
    return this.lock.run(sb.id, async () => {
      timer.step('queuedMs');
      let pulls = false;
      const image = await resolveTaskImage(sb.image, this.driver(sb.runtime), this.images, async () => {
        pulls = true;
        throw new Error('not pulled by a direct create');
      }, this.opts.telemetry).catch((e: unknown) => (pulls ? undefined : Promise.reject(e)));
      if (!image) return undefined;
      timer.step('imageMs');
      const made = await this.makeTask(sb, image, timer);
      const running = await this.commitMade(sb, image, made, (r) => this.repo.commitDirect(made.handle, r, terms));
      timer.step('commitMs');
      this.armTtl(running);
      this.log.debug({ sandbox: sb.id, ms: timer.totalMs(), steps: timer.steps }, 'sandbox task made (direct)');
      return running;
    });
  }

  /**
   * The `running` record of a task just made, written by `commit` (a scheduled create's compare-and-swap,
   * or a direct create's one write). The handle is known before the commit: the watch may deliver
   * `running` (to the watchdog, which asks for the handle) before the commit's own answer arrives, and a
   * store read for it then is wasted. When the commit fails, the task and its network go, and its error is thrown.
   */
  private async commitMade(sb: Sandbox, image: TaskImage, made: { handle: TaskHandle; workdir: string; user?: string }, commit: (running: Sandbox) => Promise<void>): Promise<Sandbox> {
    const running: Sandbox = { ...sb, status: 'running', imageDigest: image.digest, workdir: made.workdir, startedAt: new Date().toISOString() };
    if (made.user) running.user = made.user;
    this.handles.set(sb.id, made.handle);
    try {
      await commit(running);
    } catch (e) {
      this.handles.delete(sb.id);
      await this.driver(sb.runtime).destroy(made.handle).catch((de) => this.log.error({ err: de, sandbox: sb.id }, 'destroying a task whose record was not written failed'));
      await this.networks.teardown(sb.id).catch(() => undefined);
      throw e;
    }
    return running;
  }

  /** Makes the task of a new sandbox from its resolved image. On failure nothing is left behind. */
  private async makeTask(sb: Sandbox, image: TaskImage, timer: StepTimer): Promise<{ handle: TaskHandle; workdir: string; user?: string }> {
    const driver = this.driver(sb.runtime);
    const env: Record<string, string> = {};
    for (const kv of image.env) {
      const i = kv.indexOf('=');
      if (i > 0) env[kv.slice(0, i)] = kv.slice(i + 1);
    }
    Object.assign(env, sb.env);
    const spec: TaskSpec = {
      id: sb.id,
      hostname: sb.name,
      layers: image.layers,
      env,
      workdir: sb.workdir || image.workingDir || '/',
      cpus: sb.cpus,
      memoryMb: sb.memoryMb,
      pidsLimit: sb.pidsLimit,
      // Sandboxes recorded before these limits existed get the defaults of their time.
      diskMb: sb.diskMb ?? 2048,
      maxOpenFiles: sb.maxOpenFiles ?? 1024,
    };
    if (image.runtimeImage) spec.image = image.runtimeImage;
    // The request's user, else the image's, else an unprivileged default; root only when asked for.
    const user = sb.user || image.user || this.opts.defaultUser;
    if (user && !ROOT_USERS.has(user)) spec.user = user;
    if (sb.volumes?.length) spec.volumes = await this.taskVolumes(sb, driver.capabilities().isolation !== 'vm');
    const network = await this.networks.prepare(sb, driver);
    if (network) spec.network = network;
    if (sb.snapshot) {
      const snap = await this.repo.getSnapshot(sb.snapshot);
      if (snap?.memory && this.opts.snapshotsDir) spec.restore = { dir: join(this.opts.snapshotsDir, snap.id) };
    }
    timer.step('prepareMs');
    let handle: TaskHandle | undefined;
    try {
      handle = await driver.create(spec);
      timer.step('driverMs');
      await this.networks.linkOwn(sb, driver, handle);
      timer.step('linkMs');
    } catch (e) {
      if (handle) await driver.destroy(handle).catch((de) => this.log.error({ err: de, sandbox: sb.id }, 'task cleanup after failed network link failed'));
      await this.networks.teardown(sb.id).catch((te) => this.log.error({ err: te, sandbox: sb.id }, 'network cleanup after failed create failed'));
      throw e;
    }
    return { handle, workdir: spec.workdir, ...(user ? { user } : {}) };
  }

  private async taskVolumes(sb: Sandbox, hostKernel: boolean): Promise<TaskVolume[]> {
    const image = this.opts.volumeImage;
    if (!image) throw new PrismError('FAILED_PRECONDITION', `node ${this.nodeId} has no volume store`);
    return Promise.all((sb.volumes ?? []).map(async (v) => ({ name: v.name, image: await image(v.name, hostKernel), mountPath: v.mountPath, readOnly: v.readOnly })));
  }

  /** Why a sandbox's commands end together: its task is stopped, destroyed, or found dead. */
  private readonly taskEndListeners: ((id: string, why: TaskEndReason) => void)[] = [];

  /**
   * Calls `fn` just before this node ends every command of a sandbox on purpose (stop, delete) and
   * when it finds the task dead, so that whoever tracks long-running commands can tell why they ended.
   */
  onTaskEnd(fn: (id: string, why: TaskEndReason) => void): void {
    this.taskEndListeners.push(fn);
  }

  private taskEnding(id: string, why: TaskEndReason): void {
    for (const fn of this.taskEndListeners) {
      try {
        fn(id, why);
      } catch (e) {
        this.log.error({ err: e, sandbox: id }, 'a task-end listener failed');
      }
    }
  }

  async stop(sb: Sandbox): Promise<void> {
    await this.lock.run(sb.id, async () => {
      this.disarmTtl(sb.id);
      const h = await this.handle(sb.id);
      this.taskEnding(sb.id, 'stopped');
      await this.driver(h.runtime).stop(h, { timeoutMs: 5000 });
    });
  }

  async start(sb: Sandbox): Promise<void> {
    await this.lock.run(sb.id, async () => {
      const h = await this.handle(sb.id);
      const driver = this.driver(h.runtime);
      await driver.start(h);
      await this.networks.linkOwn(sb, driver, h);
      this.armTtl(sb);
    });
  }

  /**
   * Sandboxes this node destroyed in the last minute, oldest first: an assignment for one of them
   * that waited for the lock, or that the feed delivered late, is dropped (runAssignment).
   */
  private readonly destroyed = new Map<string, number>();

  private rememberDestroyed(id: string): void {
    const now = Date.now();
    for (const [k, at] of this.destroyed) {
      if (now - at < 60_000) break;
      this.destroyed.delete(k);
    }
    this.destroyed.delete(id);
    this.destroyed.set(id, now);
  }

  /**
   * Removes the task. Idempotent. Its handle stays in the record, which the caller removes
   * (SandboxRepo.deleteSandbox): a crash between the two leaves a `deleting` record with a handle,
   * which recovery finishes (recoverOne).
   */
  async destroy(sb: Sandbox): Promise<void> {
    await this.lock.run(sb.id, async () => {
      this.rememberDestroyed(sb.id);
      this.disarmTtl(sb.id);
      this.taskEnding(sb.id, 'deleted');
      const timer = new StepTimer();
      const h = this.handles.get(sb.id) ?? (await this.repo.getHandle(this.nodeId, sb.id));
      if (h) await this.driver(h.runtime).destroy(h);
      timer.step('taskMs');
      await this.networks.teardown(sb.id);
      timer.step('networkMs');
      this.handles.delete(sb.id);
      this.log.debug({ sandbox: sb.id, steps: timer.steps }, 'sandbox task removed');
    });
  }

  /** Runs a command in the sandbox's task; `env` and `cwd` apply on top of the task's own. */
  async exec(sb: Sandbox, opts: { argv: string[]; env: Record<string, string>; cwd?: string; stdin: boolean; tty?: ExecOptions['tty']; asRoot?: boolean }): Promise<TaskProcess> {
    const h = await this.handle(sb.id);
    const full: ExecOptions = {
      argv: opts.argv,
      env: { ...h.spec.env, ...opts.env },
      cwd: opts.cwd || h.spec.workdir,
      stdin: opts.stdin,
      ...(opts.tty ? { tty: opts.tty } : {}),
    };
    if (opts.asRoot) full.asRoot = true;
    return this.driver(h.runtime).exec(h, full);
  }

  /** Usage of a task this node runs, with its CPU limit (the metrics sampler's source). */
  /** The task's usage, and its network's byte counters when it has a network. */
  async taskStats(id: string): Promise<{ stats: TaskStats; cpus: number; network?: NetworkTraffic }> {
    const h = await this.handle(id);
    const [stats, network] = await Promise.all([this.driver(h.runtime).stats(h), this.networks.traffic(id)]);
    return { stats, cpus: h.spec.cpus, ...(network ? { network } : {}) };
  }

  /** Where a pause keeps memory on this runtime (capabilities().pause); undefined: it cannot pause. */
  pauseKeeps(runtime: RuntimeName): 'ram' | 'disk' | undefined {
    const d = this.drivers.get(runtime);
    return d?.pause && d.resume ? d.capabilities().pause : undefined;
  }

  /** Freezes the task (the service has moved the record to `pausing`); its timer stops. */
  async pause(sb: Sandbox): Promise<void> {
    await this.lock.run(sb.id, async () => {
      const h = await this.handle(sb.id);
      const d = this.driver(h.runtime);
      if (!d.pause) throw new PrismError('UNIMPLEMENTED', `the ${h.runtime} runtime cannot pause`);
      await d.pause(h);
      this.disarmTtl(sb.id);
    });
  }

  async resume(sb: Sandbox): Promise<void> {
    await this.lock.run(sb.id, async () => {
      const h = await this.handle(sb.id);
      const d = this.driver(h.runtime);
      if (!d.resume) throw new PrismError('UNIMPLEMENTED', `the ${h.runtime} runtime cannot resume`);
      await d.resume(h);
    });
  }

  /** The sandbox's writable layer as an OCI layer tar at `dest` (RuntimeDriver.exportLayer). */
  async exportLayer(sb: Sandbox, dest: string): Promise<void> {
    await this.lock.run(sb.id, async () => {
      const h = await this.handle(sb.id);
      const d = this.driver(h.runtime);
      if (!d.exportLayer) throw new PrismError('UNIMPLEMENTED', `snapshots of ${h.runtime} sandboxes are not implemented yet (docs/api.md "Snapshots")`);
      await d.exportLayer(h, dest);
    });
  }

  /** Whether this node's runtime snapshots a task as an image of its own (RuntimeDriver.commitImage). */
  commitsImages(runtime: RuntimeName): boolean {
    return !!this.drivers.get(runtime)?.commitImage;
  }

  /** The sandbox's filesystem as the runtime's image `ref` (RuntimeDriver.commitImage). */
  async commitImage(sb: Sandbox, ref: string): Promise<{ id: string; size: number }> {
    return this.lock.run(sb.id, async () => {
      const h = await this.handle(sb.id);
      const d = this.driver(h.runtime);
      if (!d.commitImage) throw new PrismError('UNIMPLEMENTED', `the ${h.runtime} runtime keeps no images of its own`);
      return d.commitImage(h, ref);
    });
  }

  /** Removes a runtime image a snapshot made (RuntimeDriver.removeImage). */
  async removeRuntimeImage(runtime: RuntimeName, ref: string): Promise<void> {
    await this.drivers.get(runtime)?.removeImage?.(ref);
  }

  /** Whether this node's runtime keeps running processes in snapshots and forks. */
  memorySnapshots(runtime: RuntimeName): boolean {
    const d = this.drivers.get(runtime);
    return !!(d?.snapshotMemory && d.capabilities().memorySnapshots);
  }

  /** The sandbox's memory, devices and disk into `dir` (RuntimeDriver.snapshotMemory). */
  async snapshotMemory(sb: Sandbox, dir: string): Promise<void> {
    await this.lock.run(sb.id, async () => {
      const h = await this.handle(sb.id);
      const d = this.driver(h.runtime);
      if (!d.snapshotMemory) throw new PrismError('UNIMPLEMENTED', `memory snapshots of ${h.runtime} sandboxes are not implemented`);
      await d.snapshotMemory(h, dir);
    });
  }

  /** Called when a sandbox's TTL ends; set by the service. */
  onTtlExpired: (sb: Sandbox) => void = () => undefined;

  /** A running sandbox's timeout changed: its timer follows, when this node runs it. */
  rearmTtl(sb: Sandbox): void {
    if (sb.status === 'running' && this.handles.has(sb.id)) this.armTtl(sb);
  }

  private armTtl(sb: Sandbox): void {
    this.disarmTtl(sb.id);
    if (!sb.timeoutSec) return;
    const started = sb.startedAt ? Date.parse(sb.startedAt) : Date.now();
    longTimer(started + sb.timeoutSec * 1000 - Date.now(), () => this.onTtlExpired(sb), (t) => this.ttlTimers.set(sb.id, t));
  }

  /** Called when a paused sandbox reaches `--paused-ttl`; set by the service. */
  onPausedTtlExpired: (sb: Sandbox) => void = () => undefined;

  /** A paused sandbox's clock (`--paused-ttl`, from pausedAt), in place of its timeout's. */
  armPausedTtl(sb: Sandbox): void {
    this.disarmTtl(sb.id);
    if (!this.opts.pausedTtlMs || sb.status !== 'paused') return;
    const since = sb.pausedAt ? Date.parse(sb.pausedAt) : Date.now();
    longTimer(since + this.opts.pausedTtlMs - Date.now(), () => this.onPausedTtlExpired(sb), (t) => this.ttlTimers.set(sb.id, t));
  }

  private disarmTtl(id: string): void {
    clearTimeout(this.ttlTimers.get(id));
    this.ttlTimers.delete(id);
  }

  /**
   * Start-up reconciliation: reattach to tasks that still run, keep stopped filesystems, settle
   * transitions a crash cut short, and destroy tasks the Store does not know (orphans).
   * A record with an imageDigest finished its create once; one without it is a create cut short,
   * which leaves nothing behind (as a failed create would).
   */
  async recover(): Promise<void> {
    await this.migrateLegacyHandles();
    const own = await this.repo.listOwn(this.nodeId);
    const known = new Set<string>();
    for (const { task } of own) {
      if (!task) continue;
      known.add(task.id);
      await this.recoverOne(task).catch((e) => this.log.error({ err: e, sandbox: task.id }, 'recovery failed'));
    }
    for (const { sandbox } of own) {
      if (known.has(sandbox.id)) continue;
      await this.settleWithoutTask(sandbox).catch((e) => this.log.error({ err: e, sandbox: sandbox.id }, 'recovery failed'));
    }
    const keep: Sandbox[] = [];
    for (const id of known) {
      const sb = (await this.repo.getSandbox(id))?.value;
      if (sb && sb.node === this.nodeId) keep.push(sb);
    }
    await this.networks.recover(keep, (id) => {
      const h = this.handles.get(id);
      const driver = h && this.drivers.get(h.runtime);
      return h && driver ? { h, driver } : undefined;
    });
    for (const [name, driver] of this.drivers) {
      for (const id of await driver.listTasks().catch(() => [] as string[])) {
        if (known.has(id)) continue;
        this.log.warn({ sandbox: id, runtime: name }, 'destroying orphaned task unknown to the store');
        await driver
          .destroy({ id, runtime: name, spec: { id } as TaskSpec, data: {} })
          .catch((e) => this.log.error({ err: e, sandbox: id }, 'orphan cleanup failed'));
      }
    }
  }

  /**
   * Task handles a Prism from before 2026-12 stored under keys of their own move into their records;
   * one whose record is gone is a task to destroy (it still has its full handle here).
   */
  private async migrateLegacyHandles(): Promise<void> {
    for (const h of await this.repo.migrateLegacyHandles(this.nodeId)) {
      this.log.warn({ sandbox: h.id }, 'task of a deleted sandbox (stored the old way): destroying');
      const driver = this.drivers.get(h.runtime);
      if (driver) await driver.destroy(h).catch((e) => this.log.error({ err: e, sandbox: h.id }, 'orphan cleanup failed'));
      await this.networks.teardown(h.id).catch(() => undefined);
      await this.repo.dropLegacyHandle(this.nodeId, h.id);
    }
  }

  /**
   * After this node rejoins the cluster (its lease had run out while it kept running): tasks of
   * sandboxes deleted meanwhile (their records went, handles with them) are destroyed here, and
   * records marked `lost` take the state their task is in.
   */
  async reconcileAfterRejoin(): Promise<void> {
    const own = await this.repo.listOwn(this.nodeId);
    for (const { sandbox, task: h } of own) {
      if (!h || sandbox.status !== 'lost') continue;
      await this.lock.run(h.id, async () => {
        const cur = await this.repo.getSandbox(h.id);
        if (!cur || cur.value.node !== this.nodeId || cur.value.status !== 'lost') return;
        const driver = this.drivers.get(h.runtime);
        const state = driver ? await driver.inspect(h) : 'gone';
        if (state === 'gone') {
          await this.repo.transition(h.id, ['lost'], 'failed', (s) => ({ ...s, error: { code: 'LOST', message: 'the task was gone when its node rejoined the cluster' } }), { quiet: true });
        } else {
          await this.repo.transition(h.id, ['lost'], state, (s) => {
            const next: Sandbox = { ...s };
            delete next.error;
            return next;
          }, { quiet: true });
        }
      }).catch((e) => this.log.error({ err: e, sandbox: h.id }, 'reconciling after rejoin failed'));
    }
    for (const { sandbox, task } of own) {
      if (!task && sandbox.status === 'lost') await this.settleWithoutTask(sandbox).catch((e) => this.log.error({ err: e, sandbox: sandbox.id }, 'reconciling after rejoin failed'));
    }
    const tasks = new Set(own.filter((o) => o.task).map((o) => o.sandbox.id));
    for (const [name, driver] of this.drivers) {
      for (const id of await driver.listTasks().catch(() => [] as string[])) {
        // Only sandboxes' tasks: a warm-pool task being claimed is briefly nobody's (the driver clears its own at start).
        if (tasks.has(id) || !isSandboxId(id)) continue;
        // A create in flight holds the lock from making its task to committing it: wait it out, look again.
        await this.lock.run(id, async () => {
          const h = await this.repo.getHandle(this.nodeId, id);
          if (h) return;
          this.log.warn({ sandbox: id, runtime: name }, 'sandbox deleted while this node was away: destroying its task');
          this.disarmTtl(id);
          await driver.destroy(this.handles.get(id) ?? { id, runtime: name, spec: { id } as TaskSpec, data: {} });
          await this.networks.teardown(id);
          this.handles.delete(id);
        }).catch((e) => this.log.error({ err: e, sandbox: id }, 'reconciling after rejoin failed'));
      }
    }
  }

  /** A record of this node with no task handle: a create cut short, a delete cut short, or a lost task. */
  private async settleWithoutTask(sb: Sandbox): Promise<void> {
    if (sb.status === 'scheduled') return; // placed while we were away: watchAssignments creates it
    if (sb.status === 'deleting' || !sb.imageDigest) {
      this.log.warn({ sandbox: sb.id, status: sb.status }, 'removing a sandbox whose create or delete was cut short');
      await this.repo.deleteSandbox(sb);
      return;
    }
    if (sb.status === 'failed') return;
    await this.markLost(sb.id, 'its task handle is missing');
  }

  private async markLost(id: string, why: string): Promise<void> {
    const from = SANDBOX_STATUSES.filter((st) => canTransition(st, 'failed'));
    await this.repo.transition(id, from, 'failed', (s) => ({ ...s, error: { code: 'LOST', message: `the sandbox's task could not be recovered after a prismd restart (${why}; was ${s.status})` } }), { quiet: true });
    this.log.warn({ sandbox: id }, 'sandbox could not be recovered: marked failed');
  }

  private async recoverOne(h: TaskHandle): Promise<void> {
    const cur = await this.repo.getSandbox(h.id);
    const driver = this.drivers.get(h.runtime);
    const destroyTask = async () => {
      if (driver) await driver.destroy(h).catch(() => undefined);
      await this.networks.teardown(h.id).catch(() => undefined);
      this.handles.delete(h.id);
    };
    const forget = async () => {
      await destroyTask();
      await this.repo.clearTask(this.nodeId, h.id);
    };
    if (!cur || cur.value.status === 'deleting' || !cur.value.imageDigest) {
      this.log.warn({ sandbox: h.id }, 'task of a deleting or half-created sandbox: destroying');
      await destroyTask();
      if (cur) await this.repo.deleteSandbox(cur.value);
      return;
    }
    const sb = cur.value;
    const state = driver ? await driver.recover(h) : 'gone';
    this.handles.set(h.id, h);
    if (state === 'gone') {
      await forget();
      await this.markLost(sb.id, 'the task is gone');
      return;
    }
    // `lost`: the cluster gave up on this node while it was away; whatever still runs is kept.
    const wantRunning = ['running', 'starting', 'resuming', 'lost'].includes(sb.status);
    const wantPaused = sb.status === 'paused' || sb.status === 'pausing';
    let now = state;
    if (now === 'paused' && !wantPaused) {
      if (sb.status === 'lost') {
        // A paused sandbox of a node that came back: it stays paused.
        const paused = await this.repo.transition(sb.id, ['lost'], 'paused', (s) => ({ ...s, pausedAt: s.pausedAt ?? new Date().toISOString(), error: undefined }), { quiet: true });
        if (paused) this.armPausedTtl(paused.value);
        this.log.info({ sandbox: sb.id }, 'reattached to paused sandbox');
        return;
      }
      await driver!.resume!(h); // a resume cut short: the record wants it running
      now = 'running';
    }
    if (wantPaused) {
      // A pause cut short either way: the task is made to match a `paused` record, a `pausing` one settles as paused.
      if (now === 'running') await driver!.pause?.(h);
      if (now === 'running' || now === 'paused') {
        const settled = await this.repo.transition(sb.id, ['pausing'], 'paused', (s) => ({ ...s, pausedAt: s.pausedAt ?? new Date().toISOString() }), { quiet: true });
        this.armPausedTtl(settled?.value ?? sb);
        this.log.info({ sandbox: sb.id }, 'reattached to paused sandbox');
        return;
      }
    }
    if (now === 'running' && wantRunning) {
      this.log.info({ sandbox: sb.id }, 'reattached to running sandbox');
      const running = await this.repo.transition(sb.id, ['starting', 'resuming', 'lost'], 'running', (s) => {
        const next: Sandbox = { ...s };
        if (s.status === 'lost') delete next.error;
        delete next.pausedAt;
        return next;
      }, { quiet: true });
      this.armTtl(running?.value ?? sb);
      return;
    }
    if (now === 'running' || now === 'paused') await driver!.stop(h); // stopped or stopping while we were down
    if (sb.status === 'stopped' || sb.status === 'failed') return;
    // Processes are gone (a host reboot, a stop or start cut short) but the filesystem is intact.
    await this.repo.transition(sb.id, ['running', 'starting', 'stopping', 'pausing', 'paused', 'resuming', 'lost'], 'stopped', (s) => {
      const next: Sandbox = { ...s, stoppedAt: new Date().toISOString() };
      delete next.pausedAt;
      if (wantRunning || wantPaused) next.error = { code: 'INTERRUPTED', message: 'its processes ended while prismd was down; the filesystem was kept' };
      return next;
    }, { quiet: true });
    this.log.warn({ sandbox: sb.id, was: sb.status }, 'sandbox settled as stopped after restart');
  }

  /** The task handle of a sandbox this node runs, if any (the watchdog's view; TaskWatchdog). */
  async handleOf(id: string): Promise<TaskHandle | undefined> {
    return this.handles.get(id) ?? (await this.repo.getHandle(this.nodeId, id));
  }

  driverOf(h: TaskHandle): RuntimeDriver | undefined {
    return this.drivers.get(h.runtime);
  }

  /** Checks one running sandbox's task; returns false (and marks the sandbox failed) when it is gone. */
  async checkTask(id: string): Promise<boolean> {
    return this.lock.run(id, async () => {
      const cur = await this.repo.getSandbox(id);
      const h = this.handles.get(id) ?? (await this.repo.getHandle(this.nodeId, id));
      if (!cur || cur.value.status !== 'running' || !h) return true;
      const driver = this.drivers.get(h.runtime);
      if (driver?.seemsAlive && (await driver.seemsAlive(h).catch(() => false))) return true;
      const state = driver ? await driver.inspect(h) : 'gone';
      if (state === 'running') return true;
      if (state === 'paused' && driver?.resume) {
        // Frozen under a running record (a pause whose record write failed): the record wins.
        await driver.resume(h);
        this.log.warn({ sandbox: id }, 'task of a running sandbox was paused: resumed');
        return true;
      }
      this.disarmTtl(id);
      this.taskEnding(id, 'failed');
      if (driver && state === 'stopped') await driver.stop(h).catch(() => undefined); // release mounts, cgroups
      await this.repo.transition(id, ['running'], 'failed', (s) => ({ ...s, error: { code: 'TASK_EXITED', message: `the sandbox's ${h.runtime} task ended unexpectedly (${state}); delete it` } }), { quiet: true });
      this.log.warn({ sandbox: id, state }, 'task of a running sandbox is gone: marked failed');
      return false;
    });
  }

  /** Stops timers; tasks keep running so that a restarted daemon can reattach. */
  close(): void {
    this.unsubscribe?.();
    this.unsubscribe = undefined;
    for (const id of [...this.ttlTimers.keys()]) this.disarmTtl(id);
  }
}
