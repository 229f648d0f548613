
import { ContainerExits } from './container-exits.js';
import type { WatchEnd } from '../pid-watch.js';
import { constants } from 'node:fs';
import { access, readFile, writeFile } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import type Docker from 'dockerode';
import { asPrismError, PrismError } from '../../core/errors.js';
import type {
  ExecOptions, ProbeResult, RuntimeCapabilities, RuntimeDriver, RuntimeImage, TaskHandle, TaskProcess, TaskSpec, TaskState, TaskStats,
} from '../driver.js';
import { probeDiskLimit, storageSize, type DiskLimitSupport } from './disk-limit.js';
import { dockerExec, AGENT_SOCKET } from './docker-exec.js';
import { describeConnection, dockerConnection } from './docker-host.js';
import { numericUser, resolveContainerUser } from './container-user.js';
import { engineError, engineStatus } from './engine-errors.js';
import { findEngineImage, initArchive, pullEngineImage } from './engine-image.js';
import { resolvConfArchive } from './resolv-conf.js';
import { ensureLayerImage, fileDigest, INIT_PATH, layerImageTag, MANAGED_LABEL, requireLayerDirs } from './layer-image.js';
import { anyVolumeFull, mountHostVolumes, unmountHostVolumes } from '../host-volumes.js';
import { userSpec, type TaskUser } from '../task-user.js';
import { WarmPools } from '../warm-pool.js';
import { runChecked } from '../command.js';

export interface DockerDriverLogger {
  info(o: object, msg?: string): void;
  warn(o: object, msg?: string): void;
  error(o: object, msg?: string): void;
}

export interface DockerDriverOptions {
  /** The engine: `unix:///path` or `tcp://host:port` (TLS from DOCKER_TLS_VERIFY/DOCKER_CERT_PATH); default DOCKER_HOST, then /var/run/docker.sock. */
  dockerHost?: string;
  /** This node's id, labelled on every container so that listTasks sees only this node's tasks on a shared engine. */
  node: string;
  /** The static guest/init/prism-init; it goes into every image as PID 1 and exec relay. */
  initBinary: string;
  /**
   * Owned by this driver: temporary image archives while loading an image into the engine, and
   * `volumes/<id>/`, the host mounts of a task's volumes (which the engine bind-mounts).
   */
  stateDir: string;
  /**
   * Credentials by registry host (`host[:port]`, `docker.io`), as `prismd --registry-auth` gives them:
   * sent with the engine's pull of an image from that registry (engine-image.ts).
   */
  registryAuths?: Record<string, { username: string; password: string }>;
  /** false: never give containers a size limit, even where the engine could (the bench's baseline for its cost). Default true. */
  diskLimit?: boolean;
  /**
   * Ready containers kept per image and shape (`prismd --warm-pool`; default 0), already started, that
   * a create of that shape takes instead of making one. Only with an engine on this host: a claimed
   * container's hostname is set from here, in its namespace.
   */
  warmPool?: number;
  logger?: DockerDriverLogger;
}

export const SANDBOX_LABEL = 'prism.sandbox';
export const NODE_LABEL = 'prism.node';
/** On warm-pool containers: their sandbox is named by the container's name (`prism-<id>`, renamed at a claim), not by SANDBOX_LABEL. */
const POOL_LABEL = 'prism.pool';
/** Shapes with a warm pool at once; the oldest pool goes when another starts. */
const MAX_POOLS = 4;
const ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;
const DEFAULT_STOP_TIMEOUT_MS = 10_000;
const PROBE_TIMEOUT_MS = 5_000;

/**
 * Runs tasks as containers of a Docker Engine (local, Docker Desktop or remote), through its API only:
 * nothing here assumes the engine shares this host's filesystem. Each task is the container
 * `prism-<id>` labelled `prism.sandbox=<id>` and `prism.node=<node>`, made from one of the engine's own
 * images as it is, with prism-init put into the container (engine-image.ts), or from an image the
 * driver builds from the sandbox's layers in Prism's store (layer-image.ts, loaded into the engine
 * once). PID 1 is prism-init, whose exec agent is reached through `docker exec prism-init relay` (docker-exec.ts). The container's writable layer
 * is the task's filesystem, so stop/start keep it; destroy removes the container and its anonymous
 * volumes. Images stay cached in the engine (labelled `prism.managed=true`).
 * diskMb is the container's StorageOpt.size where the engine's storage driver can limit it (asked once,
 * disk-limit.ts); where it cannot, tasks are created without a limit and probe() says why.
 *
 * Volumes are the exception to "API only": the engine bind-mounts the host directory where Prism
 * loop-mounted the volume (host-volumes.ts), so they need an engine on this host (a unix socket).
 * The host mounts exist while the task runs: made before every start, released after stop and destroy.
 */
export class DockerDriver implements RuntimeDriver {
  readonly name = 'docker' as const;
  private client?: Docker;
  private readonly connection: Docker.DockerOptions;
  private readonly loading = new Map<string, Promise<void>>();
  private initDigest?: Promise<string>;
  private initTar?: Promise<Buffer>;
  private diskLimit?: Promise<DiskLimitSupport>;
  private readonly imageBytes = new Map<string, number>();
  /** Warm pool: ready containers per shape key (poolKey). */
  private readonly pools: WarmPools;
  /** Exits of running tasks, from the engine's event stream (watchExit). */
  private readonly exits: ContainerExits;

  constructor(private readonly opts: DockerDriverOptions) {
    this.connection = dockerConnection(opts.dockerHost);
    this.exits = new ContainerExits(() => this.docker, `${NODE_LABEL}=${opts.node}`);
    this.pools = new WarmPools({
      size: opts.warmPool ?? 0,
      maxShapes: MAX_POOLS,
      remove: (slot) => this.remove(containerName(slot)),
      onError: (e, key) => this.opts.logger?.warn({ err: e, pool: key }, 'docker warm pool: making or removing a container failed'),
    });
  }

  /** The engine's client; dockerode is loaded on first use (most nodes never use the docker runtime). */
  private get docker(): Docker {
    // Every public entry point loads it first (loadClient).
    return this.client!;
  }

  private async loadClient(): Promise<Docker> {
    if (!this.client) {
      const { default: DockerClient } = await import('dockerode');
      this.client ??= new DockerClient(this.connection);
    }
    return this.client;
  }

  capabilities(): RuntimeCapabilities {
    // The engine cannot join a namespace by path: the NetworkManager links the container's own (taskNetns).
    // Its images (`docker images`) are used as they are, before Prism's store (src/service/task-image.ts).
    return { isolation: 'container', persistentFilesystem: true, survivesDaemonRestart: true, network: 'own', ownImages: true, pause: 'ram' };
  }

  async findImage(ref: string): Promise<RuntimeImage | undefined> {
    return findEngineImage(await this.loadClient(), ref);
  }

  async pullImage(ref: string): Promise<RuntimeImage> {
    await this.loadClient();
    const t0 = Date.now();
    this.opts.logger?.info({ ref }, 'pulling image through the Docker engine');
    const image = await pullEngineImage(this.docker, ref, this.opts.registryAuths ?? {});
    this.opts.logger?.info({ ref, image: image.id, ms: Date.now() - t0 }, 'image pulled by the Docker engine');
    return image;
  }

  async probe(): Promise<ProbeResult> {
    await this.loadClient();
    const host = describeConnection(this.connection);
    const details: Record<string, string> = { host };
    try {
      const v = await withTimeout(this.docker.version(), PROBE_TIMEOUT_MS, 'no answer');
      details.engine = v.Version;
      details.api = v.ApiVersion;
      details.os = `${v.Os}/${v.Arch}`;
    } catch (e) {
      return { usable: false, reason: `no Docker engine reachable at ${host} (${asPrismError(e).message}); set DOCKER_HOST or --docker-host`, details };
    }
    if (details.os !== `linux/${process.arch === 'x64' ? 'amd64' : process.arch}`) {
      return { usable: false, reason: `the engine runs ${details.os}; prism-init is built for linux/${process.arch}`, details };
    }
    try {
      await access(this.opts.initBinary, constants.R_OK);
    } catch {
      return { usable: false, reason: `init binary missing: ${this.opts.initBinary} (run make -C guest/init)`, details };
    }
    try {
      const limit = await this.diskLimitSupport();
      details.diskLimit = limit.detail;
      if (!limit.enforced) this.opts.logger?.warn({ diskLimit: limit.detail }, 'this Docker engine cannot limit a container\'s size: diskMb is not enforced on the docker runtime');
    } catch (e) {
      details.diskLimit = `unknown: ${asPrismError(e).message}`;
    }
    return { usable: true, details };
  }

  async create(spec: TaskSpec): Promise<TaskHandle> {
    await this.loadClient();
    validateSpec(spec);
    if (spec.volumes?.length && !this.connection.socketPath) {
      throw new PrismError('FAILED_PRECONDITION', `volumes on the docker runtime need an engine on this host (a unix socket); the engine is ${describeConnection(this.connection)}`);
    }
    await requireLayerDirs(spec.layers);
    // An engine image is used as it is (prism-init goes into the container); Prism's layers become an image with it.
    const image = spec.image ?? (await this.imageFor(spec.layers));
    const key = this.poolKey(spec, image);
    if (key) {
      const claimed = await this.claim(key, spec);
      this.refill(key, spec, image);
      if (claimed) return claimed;
    }
    return this.makeTask(spec, image);
  }

  /** A container made and started for `spec` from scratch; on failure nothing is left. */
  private async makeTask(spec: TaskSpec, image: string, labels: Record<string, string> = {}): Promise<TaskHandle> {
    const name = containerName(spec.id);
    const init = spec.image !== undefined ? await this.initArchive() : undefined;
    const storageOpt = await this.storageOpt(spec, image);
    let created = false;
    try {
      const volumeDirs = await mountHostVolumes(spec.volumes ?? [], this.volumesDir(spec.id));
      await this.docker.createContainer(this.containerConfig(spec, name, image, volumeDirs, storageOpt, labels)).catch((e: unknown) => {
        throw engineError(e, `creating task ${spec.id}`, { 409: 'ALREADY_EXISTS', 404: 'FAILED_PRECONDITION' });
      });
      created = true;
      if (init) {
        await this.docker.getContainer(name).putArchive(init, { path: '/' }).catch((e: unknown) => {
          throw engineError(e, `putting prism-init into task ${spec.id} (image ${image})`, { 400: 'FAILED_PRECONDITION', 403: 'FAILED_PRECONDITION' });
        });
      }
      // A user by name is resolved once, in the container's own /etc/passwd; the handle keeps the ids.
      const user = spec.user !== undefined && numericUser(spec.user) === undefined ? await resolveContainerUser(this.docker, name, spec.user) : undefined;
      if (spec.network) {
        await this.docker.getContainer(name).putArchive(resolvConfArchive(spec.network.nameservers), { path: '/etc' }).catch((e: unknown) => {
          throw engineError(e, `writing the resolv.conf of task ${spec.id}`);
        });
      }
      await this.docker.getContainer(name).start().catch((e: unknown) => {
        throw engineError(e, `starting task ${spec.id}`, { 400: 'FAILED_PRECONDITION' });
      });
      this.opts.logger?.info({ task: spec.id, image }, 'docker task created');
      return { id: spec.id, runtime: 'docker', spec, data: { container: name, image, diskLimit: storageOpt !== undefined, ...(user ? { user } : {}) } };
    } catch (e) {
      if (created) {
        await this.remove(name).catch((re: unknown) => this.opts.logger?.error({ err: re, task: spec.id }, 'cleanup after failed create failed'));
      }
      await unmountHostVolumes(this.volumesDir(spec.id)).catch((re: unknown) => this.opts.logger?.error({ err: re, task: spec.id }, 'releasing volumes after failed create failed'));
      throw asPrismError(e, 'INTERNAL', `creating task ${spec.id}`);
    }
  }

  async start(handle: TaskHandle): Promise<void> {
    await this.loadClient();
    const state = await this.state(handle.id);
    if (state === 'gone') throw new PrismError('NOT_FOUND', `task ${handle.id} not found`);
    if (state === 'running' || state === 'paused') return;
    try {
      await mountHostVolumes(handle.spec.volumes ?? [], this.volumesDir(handle.id));
      await this.docker.getContainer(containerName(handle.id)).start();
    } catch (e) {
      if (engineStatus(e) === 304) return; // started meanwhile
      throw engineError(e, `starting task ${handle.id}`, { 404: 'NOT_FOUND' });
    }
    const slot = handle.data.slot;
    if (typeof slot === 'string') await this.setHostname(handle.id, handle.spec.hostname, slot);
  }

  async recover(handle: TaskHandle): Promise<TaskState> {
    await this.loadClient();
    const info = await this.inspectContainer(handle.id);
    if (!info) return 'gone';
    // A paused sandbox stays paused across a restart: the service decides (its record says paused).
    if (info.State.Paused) return 'paused';
    return info.State.Running ? 'running' : 'stopped';
  }

  /** The engine's pause (the cgroup freezer): processes stop where they are, memory stays resident. */
  async pause(handle: TaskHandle): Promise<void> {
    await this.loadClient();
    const state = await this.state(handle.id);
    if (state === 'paused') return;
    if (state === 'gone') throw new PrismError('NOT_FOUND', `task ${handle.id} not found`);
    if (state !== 'running') throw new PrismError('FAILED_PRECONDITION', `task ${handle.id} is not running`);
    try {
      await this.docker.getContainer(containerName(handle.id)).pause();
    } catch (e) {
      throw engineError(e, `pausing task ${handle.id}`, { 404: 'NOT_FOUND', 409: 'FAILED_PRECONDITION' });
    }
  }

  async resume(handle: TaskHandle): Promise<void> {
    await this.loadClient();
    const state = await this.state(handle.id);
    if (state === 'running') return;
    if (state === 'gone') throw new PrismError('NOT_FOUND', `task ${handle.id} not found`);
    if (state !== 'paused') throw new PrismError('FAILED_PRECONDITION', `task ${handle.id} is not paused`);
    try {
      await this.docker.getContainer(containerName(handle.id)).unpause();
    } catch (e) {
      throw engineError(e, `resuming task ${handle.id}`, { 404: 'NOT_FOUND', 409: 'FAILED_PRECONDITION' });
    }
  }

  inspect(handle: TaskHandle): Promise<TaskState> {
    return this.state(handle.id);
  }

  async exec(handle: TaskHandle, opts: ExecOptions): Promise<TaskProcess> {
    await this.loadClient();
    // Handles from before disk limits (or from an engine without them) have no diskLimit: never full.
    const user = opts.asRoot ? undefined : taskUser(handle);
    const proc = await dockerExec(this.docker, containerName(handle.id), opts, user, handle.data.diskLimit === true);
    const volumes = handle.spec.volumes ?? [];
    if (volumes.length === 0) return proc;
    // Volumes are filesystems of their own, which the relay's check of the root does not see.
    const result = proc.result.then(async (r) => (r.exitCode !== 0 && !r.oomKilled && !r.diskFull ? { ...r, diskFull: await anyVolumeFull(volumes, this.volumesDir(handle.id)) } : r));
    return { ...proc, result };
  }

  async stop(handle: TaskHandle, opts: { timeoutMs?: number } = {}): Promise<void> {
    await this.loadClient();
    const state = await this.state(handle.id);
    if (state === 'gone') throw new PrismError('NOT_FOUND', `task ${handle.id} not found`);
    if (state !== 'stopped') {
      // prism-init exits on SIGTERM at once, and with it every process of the task's pid namespace.
      const t = Math.max(1, Math.ceil((opts.timeoutMs ?? DEFAULT_STOP_TIMEOUT_MS) / 1000));
      try {
        // A frozen process takes the signal only once thawed.
        if (state === 'paused') await this.docker.getContainer(containerName(handle.id)).unpause();
        await this.docker.getContainer(containerName(handle.id)).stop({ t });
      } catch (e) {
        if (engineStatus(e) !== 304) throw engineError(e, `stopping task ${handle.id}`, { 404: 'NOT_FOUND' });
      }
    }
    await unmountHostVolumes(this.volumesDir(handle.id));
  }

  async destroy(handle: TaskHandle): Promise<void> {
    await this.loadClient();
    await this.remove(containerName(handle.id));
    await unmountHostVolumes(this.volumesDir(handle.id));
    this.opts.logger?.info({ task: handle.id }, 'docker task destroyed');
  }

  /** `docker commit`: the engine's own diff of the container (its writable layer) as image `ref`. */
  async commitImage(handle: TaskHandle, ref: string): Promise<{ id: string; size: number }> {
    await this.loadClient();
    if ((await this.state(handle.id)) === 'gone') throw new PrismError('NOT_FOUND', `task ${handle.id} not found`);
    const at = ref.lastIndexOf(':');
    const [repo, tag] = at > ref.lastIndexOf('/') ? [ref.slice(0, at), ref.slice(at + 1)] : [ref, 'latest'];
    try {
      const r = (await this.docker.getContainer(containerName(handle.id)).commit({ repo, tag, pause: true })) as { Id?: string };
      const image = this.docker.getImage(ref);
      const info = (await image.inspect()) as { Id: string };
      // The newest history entry is the commit's own layer: what the sandbox added.
      const history = (await image.history()) as Array<{ Size?: number }>;
      return { id: r.Id ?? info.Id, size: history[0]?.Size ?? 0 };
    } catch (e) {
      throw engineError(e, `committing task ${handle.id}`, { 404: 'NOT_FOUND', 409: 'FAILED_PRECONDITION' });
    }
  }

  async removeImage(ref: string): Promise<void> {
    await this.loadClient();
    try {
      await this.docker.getImage(ref).remove();
    } catch (e) {
      if (engineStatus(e) !== 404) throw engineError(e, `removing image ${ref}`, { 409: 'FAILED_PRECONDITION' });
    }
  }

  async stats(handle: TaskHandle): Promise<TaskStats> {
    await this.loadClient();
    const state = await this.state(handle.id);
    if (state === 'gone') throw new PrismError('NOT_FOUND', `task ${handle.id} not found`);
    if (state !== 'running') throw new PrismError('FAILED_PRECONDITION', `task ${handle.id} is not running`);
    try {
      // one-shot: without it the engine waits for a second sample (about a second) to compute CPU %.
      const container = this.docker.getContainer(containerName(handle.id));
      // SizeRw (the container's writable layer) is what the engine measures when asked for `size`.
      const [s, info] = await Promise.all([
        container.stats({ stream: false, 'one-shot': true } as never) as unknown as Promise<EngineStats>,
        container.inspect({ size: true } as never) as unknown as Promise<{ SizeRw?: number }>,
      ]);
      const mem = s.memory_stats?.stats;
      return {
        memoryBytes: s.memory_stats?.usage ?? 0,
        memoryLimitBytes: s.memory_stats?.limit ?? 0,
        // cgroup v2 engines report memory.stat's `file`, v1 engines `cache`.
        memoryCacheBytes: mem?.file ?? mem?.cache ?? 0,
        cpuUsageNs: s.cpu_stats?.cpu_usage?.total_usage ?? 0,
        pids: s.pids_stats?.current ?? 0,
        diskUsedBytes: info.SizeRw ?? 0,
        diskTotalBytes: handle.spec.diskMb * 2 ** 20,
      };
    } catch (e) {
      throw engineError(e, `reading stats of task ${handle.id}`, { 404: 'NOT_FOUND', 409: 'FAILED_PRECONDITION' });
    }
  }

  /**
   * This node's tasks by id. A warm-pool container is named by its container name (renamed to its
   * sandbox's at a claim); this driver's ready pool containers are not listed (they belong to no
   * sandbox yet), so those a crashed prismd left are, and the caller removes them as orphans.
   */
  async listTasks(): Promise<string[]> {
    await this.loadClient();
    let list: Docker.ContainerInfo[];
    try {
      list = await this.docker.listContainers({ all: true, filters: { label: [`${NODE_LABEL}=${this.opts.node}`] } });
    } catch (e) {
      throw engineError(e, 'listing docker tasks');
    }
    const held = this.pools.held();
    const ids = list.map((c) => (c.Labels[POOL_LABEL] ? c.Names.map((n) => n.replace(/^\//, '')).find((n) => n.startsWith('prism-'))?.slice('prism-'.length) : c.Labels[SANDBOX_LABEL]));
    return [...new Set(ids.filter((id): id is string => !!id && !held.has(id)))].sort();
  }

  /**
   * The warm pool a spec can be served from: the same engine image and limits (set when a container
   * is made). Tasks with volumes (bind mounts, fixed at create) are always made from scratch; so is
   * every task of a remote engine, whose containers' namespaces cannot be reached from here.
   */
  private poolKey(spec: TaskSpec, image: string): string | undefined {
    if (!this.opts.warmPool || spec.volumes?.length || !this.connection.socketPath) return undefined;
    const shape = { image, cpus: spec.cpus, memoryMb: spec.memoryMb, pidsLimit: spec.pidsLimit, diskMb: spec.diskMb, maxOpenFiles: spec.maxOpenFiles };
    return createHash('sha256').update(JSON.stringify(shape)).digest('hex').slice(0, 16);
  }

  /**
   * Turns a ready pool container into `spec`'s: renamed to the task's name (which claims the id as a
   * fresh create would), its hostname set in its UTS namespace and in the engine's /etc/hostname and
   * /etc/hosts files for it, its resolv.conf written, its user resolved. Env and working directory go
   * with each command (ExecOptions), as for any task. Undefined when none is ready or the claim failed
   * (the container is removed, the create goes on from scratch).
   */
  private async claim(key: string, spec: TaskSpec): Promise<TaskHandle | undefined> {
    const slot = this.pools.take(key);
    if (!slot) return undefined;
    const t0 = performance.now();
    const name = containerName(spec.id);
    try {
      await this.docker.getContainer(containerName(slot)).rename({ name });
    } catch (e) {
      if (engineStatus(e) === 409) {
        this.pools.giveBack(key, slot);
        throw new PrismError('ALREADY_EXISTS', `task ${spec.id} already exists`);
      }
      this.opts.logger?.warn({ err: e, task: spec.id, slot }, 'claiming a warm-pool container failed; creating from scratch');
      await this.remove(containerName(slot)).catch(() => undefined);
      return undefined;
    }
    try {
      const info = await this.setHostname(spec.id, spec.hostname, slot);
      if (spec.network) {
        await this.docker.getContainer(name).putArchive(resolvConfArchive(spec.network.nameservers), { path: '/etc' }).catch((e: unknown) => {
          throw engineError(e, `writing the resolv.conf of task ${spec.id}`);
        });
      }
      const user = spec.user !== undefined && numericUser(spec.user) === undefined ? await resolveContainerUser(this.docker, name, spec.user) : undefined;
      const diskLimit = (await this.diskLimitSupport()).enforced;
      this.opts.logger?.info({ task: spec.id, slot, claimMs: Math.round((performance.now() - t0) * 10) / 10 }, 'docker task created from the warm pool');
      return { id: spec.id, runtime: 'docker', spec, data: { container: name, image: info.Config.Image, diskLimit, slot, boot: 'pool', ...(user ? { user } : {}) } };
    } catch (e) {
      this.opts.logger?.warn({ err: e, task: spec.id, slot }, 'claiming a warm-pool container failed; creating from scratch');
      await this.remove(name).catch(() => undefined);
      return undefined;
    }
  }

  /**
   * Gives running container `id` (made as pool container `slot`) the hostname of its sandbox: in its
   * UTS namespace (its own processes may not set it) and in the engine's /etc/hostname and /etc/hosts
   * files for it. A restart gives it back the name it was made with: start() calls this again.
   */
  private async setHostname(id: string, hostname: string, slot: string): Promise<Docker.ContainerInspectInfo> {
    const info = await this.inspectContainer(id);
    if (!info?.State.Running || !info.State.Pid) throw new PrismError('FAILED_PRECONDITION', `task ${id} is not running`);
    const cgroup = await readFile(`/proc/${info.State.Pid}/cgroup`, 'utf8').catch(() => '');
    if (!cgroup.includes(info.Id)) throw new PrismError('FAILED_PRECONDITION', `task ${id} is not in this pid namespace: its hostname cannot be set from here`);
    await runChecked('nsenter', ['-t', String(info.State.Pid), '-u', '--', 'hostname', hostname], "setting the task's hostname", { timeoutMs: 10_000 });
    await writeFile(info.HostnamePath, `${hostname}\n`);
    const hosts = await readFile(info.HostsPath, 'utf8').catch(() => undefined);
    if (hosts !== undefined) await writeFile(info.HostsPath, hosts.replace(new RegExp(`\\b${slot}\\b`, 'g'), hostname));
    return info;
  }

  /** Tops up the pool of `key` to `warmPool` ready containers, in the background, one at a time. */
  private refill(key: string, spec: TaskSpec, image: string): void {
    const { user: _user, network: _network, ...shape } = spec;
    this.pools.refill(key, async (slot) => {
      await this.makeTask({ ...shape, id: slot, hostname: slot, env: {}, volumes: [] }, image, { [POOL_LABEL]: 'true' });
    });
  }

  /** Resolves when no pool refill is running (tests, benches). */
  async poolSettled(): Promise<void> {
    await this.pools.settled();
  }

  /**
   * The namespace of the container's init, which the NetworkManager links (a new one after every
   * start). Only for an engine on this host: the pid must be this container's in our pid namespace,
   * checked by its cgroup naming the container (a remote engine's pid means nothing here).
   */
  async taskNetns(handle: TaskHandle): Promise<string> {
    await this.loadClient();
    const info = await this.inspectContainer(handle.id);
    if (!info) throw new PrismError('NOT_FOUND', `task ${handle.id} not found`);
    if (!info.State.Running || !info.State.Pid) throw new PrismError('FAILED_PRECONDITION', `task ${handle.id} is not running`);
    const cgroup = await readFile(`/proc/${info.State.Pid}/cgroup`, 'utf8').catch(() => '');
    if (!cgroup.includes(info.Id)) {
      throw new PrismError('FAILED_PRECONDITION', 'sandbox networking on the docker runtime needs the Docker engine on this host (its containers\' namespaces are linked from here); this engine is remote or in another pid namespace');
    }
    return `/proc/${info.State.Pid}/ns/net`;
  }

  /** The warm pool's ready containers go (dockerode keeps no connection open between calls). */
  async close(): Promise<void> {
    this.exits.close();
    if (this.client) await this.pools.close();
  }

  /** The engine's `die` events (ContainerExits), checked against the container's state once watched. */
  async watchExit(handle: TaskHandle, onEnd: (why: WatchEnd) => void): Promise<boolean> {
    await this.loadClient();
    const name = containerName(handle.id);
    if (!(await this.exits.watch(name, onEnd))) return false;
    // It may have died before the stream was open: then no event will come.
    const state = await this.state(handle.id).catch(() => 'running' as TaskState);
    if (state === 'stopped' || state === 'gone') {
      this.exits.unwatch(name);
      onEnd('exited');
    }
    return true;
  }

  unwatchExit(handle: TaskHandle): void {
    this.exits.unwatch(containerName(handle.id));
  }

  /** Asked of the engine once; an engine that could not be asked is asked again next time. */
  private diskLimitSupport(): Promise<DiskLimitSupport> {
    if (this.opts.diskLimit === false) return Promise.resolve({ enforced: false, detail: 'off (driver option diskLimit: false)' });
    this.diskLimit ??= probeDiskLimit(this.docker, () => this.imageFor([])).catch((e: unknown) => {
      this.diskLimit = undefined;
      throw e;
    });
    return this.diskLimit;
  }

  /** The task's StorageOpt: its size limit, or undefined where the engine has none. */
  private async storageOpt(spec: TaskSpec, image: string): Promise<Record<string, string> | undefined> {
    const limit = await this.diskLimitSupport();
    if (!limit.enforced) return undefined;
    let bytes: number | undefined;
    if (limit.wholeRootfs) {
      bytes = this.imageBytes.get(image);
      if (bytes === undefined) {
        const info = await this.docker.getImage(image).inspect().catch((e: unknown) => {
          throw engineError(e, `inspecting image ${image}`, { 404: 'FAILED_PRECONDITION' });
        });
        bytes = info.Size;
        this.imageBytes.set(image, bytes);
      }
    }
    return { size: storageSize(spec.diskMb, bytes) };
  }

  /** Host mounts of task `id`'s volumes (host-volumes.ts). */
  private volumesDir(id: string): string {
    return join(this.opts.stateDir, 'volumes', containerName(id));
  }

  private containerConfig(spec: TaskSpec, name: string, image: string, volumeDirs: string[], storageOpt: Record<string, string> | undefined, labels: Record<string, string>): Docker.ContainerCreateOptions {
    const memory = spec.memoryMb * 1024 * 1024;
    return {
      name,
      Image: image,
      // prism-init binds the agent socket, then execs itself as PID 1 with the listener on fd 3.
      Entrypoint: [INIT_PATH, 'listen', AGENT_SOCKET, '--', INIT_PATH],
      Cmd: [],
      Hostname: spec.hostname,
      Env: Object.entries(spec.env).map(([k, v]) => `${k}=${v}`),
      WorkingDir: spec.workdir,
      User: '0:0',
      Labels: { [SANDBOX_LABEL]: spec.id, [NODE_LABEL]: this.opts.node, [MANAGED_LABEL]: 'true', ...labels },
      // A sandbox with a network starts with none too: its namespace is linked after start (taskNetns).
      // Enabled networking in `none` mode would only add the engine's own namespace setup (~0.2 s here).
      NetworkDisabled: true,
      HostConfig: {
        NetworkMode: 'none',
        Memory: memory,
        MemorySwap: memory, // no swap: the limit is the limit, as in the oci driver
        NanoCpus: Math.round(spec.cpus * 1e9),
        PidsLimit: spec.pidsLimit,
        Ulimits: [{ Name: 'nofile', Soft: spec.maxOpenFiles, Hard: spec.maxOpenFiles }],
        SecurityOpt: ['no-new-privileges'],
        RestartPolicy: { Name: 'no' },
        // The engine resolves the target inside the container's root and creates it if missing.
        Mounts: (spec.volumes ?? []).map((v, i) => ({ Type: 'bind' as const, Source: volumeDirs[i]!, Target: v.mountPath, ReadOnly: v.readOnly })),
        LogConfig: { Type: 'none', Config: {} },
        ...(storageOpt ? { StorageOpt: storageOpt } : {}),
      },
    };
  }

  /** The engine's image for these layers, loaded from Prism's layers when the engine lacks it. */
  private async imageFor(layers: string[]): Promise<string> {
    this.initDigest ??= fileDigest(this.opts.initBinary);
    const tag = layerImageTag(layers, await this.initDigest.catch((e: unknown) => {
      this.initDigest = undefined;
      throw new PrismError('FAILED_PRECONDITION', `init binary unreadable: ${this.opts.initBinary}`, { cause: e });
    }));
    let p = this.loading.get(tag);
    if (!p) {
      p = ensureLayerImage(this.docker, tag, layers, this.opts.initBinary, join(this.opts.stateDir, 'tmp')).finally(() => this.loading.delete(tag));
      this.loading.set(tag, p);
    }
    await p;
    return tag;
  }

  /** prism-init as a tar for the archive API, read once (engine-image.ts). */
  private initArchive(): Promise<Buffer> {
    this.initTar ??= readFile(this.opts.initBinary).then(initArchive, (e: unknown) => {
      this.initTar = undefined;
      throw new PrismError('FAILED_PRECONDITION', `init binary unreadable: ${this.opts.initBinary}`, { cause: e });
    });
    return this.initTar;
  }

  private async inspectContainer(id: string): Promise<Docker.ContainerInspectInfo | null> {
    try {
      const info = await this.docker.getContainer(containerName(id)).inspect();
      // A same-named container that is not ours (another node on a shared engine, a user's) is not this task.
      if (info.Config.Labels?.[NODE_LABEL] !== this.opts.node) return null;
      return info;
    } catch (e) {
      if (engineStatus(e) === 404) return null;
      throw engineError(e, `inspecting task ${id}`);
    }
  }

  private async state(id: string): Promise<TaskState> {
    const info = await this.inspectContainer(id);
    if (!info) return 'gone';
    if (info.State.Paused) return 'paused';
    return info.State.Running ? 'running' : 'stopped';
  }

  /** Force-removes a container of this node; gone already is success. */
  private async remove(name: string): Promise<void> {
    const id = name.slice('prism-'.length);
    for (let attempt = 0; ; attempt++) {
      if (!(await this.inspectContainer(id))) return;
      try {
        await this.docker.getContainer(name).remove({ force: true, v: true });
        return;
      } catch (e) {
        if (engineStatus(e) === 404) return;
        // 409: a removal already in progress (a concurrent destroy); wait for it to finish.
        if (engineStatus(e) !== 409 || attempt >= 50) throw engineError(e, `removing task ${id}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }
}

interface EngineStats {
  memory_stats?: { usage?: number; limit?: number; stats?: { file?: number; cache?: number } };
  cpu_stats?: { cpu_usage?: { total_usage?: number } };
  pids_stats?: { current?: number };
}

function containerName(id: string): string {
  if (!ID_PATTERN.test(id)) throw new PrismError('INVALID_ARGUMENT', `invalid task id: ${JSON.stringify(id)}`);
  return `prism-${id}`;
}

/** The agent's "uid gid groups" for the task's commands; undefined: root. */
function taskUser(handle: TaskHandle): string | undefined {
  const named = handle.data.user as TaskUser | undefined;
  if (named) return userSpec(named);
  return handle.spec.user === undefined ? undefined : numericUser(handle.spec.user);
}

function validateSpec(spec: TaskSpec): void {
  containerName(spec.id);
  if (spec.layers.length === 0 && spec.image === undefined) throw new PrismError('INVALID_ARGUMENT', 'a task needs an engine image or at least one layer');
  if (!(spec.memoryMb > 0 && spec.cpus > 0 && spec.pidsLimit > 0 && Number.isInteger(spec.diskMb) && spec.diskMb > 0)) {
    throw new PrismError('INVALID_ARGUMENT', 'memoryMb, cpus and pidsLimit must be positive, diskMb a positive integer');
  }
  if (!spec.workdir.startsWith('/')) throw new PrismError('INVALID_ARGUMENT', 'workdir must be an absolute path');
  if (spec.user !== undefined && !/^[^:\s]+(:[^:\s]+)?$/.test(spec.user)) {
    throw new PrismError('INVALID_ARGUMENT', `user must be name|uid[:group|gid]; got ${JSON.stringify(spec.user)}`);
  }
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new PrismError('UNAVAILABLE', what)), ms);
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

