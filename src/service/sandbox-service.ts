import { StepTimer } from '../core/step-timer.js';
import { NO_TELEMETRY, type Telemetry } from './telemetry.js';
import { randomString } from '../core/random-pool.js';
import { PrismError, asPrismError, isErrorCode, isPrismError } from '../core/errors.js';
import { NAME_PATTERN, newSandboxId, readableName } from '../core/ids.js';
import { MAX_PORTS, SANDBOX_STATUSES, type NetworkSpec, type RuntimeName, type Sandbox, type SandboxReason, type SandboxStatus, type VolumeMount } from '../core/types.js';
import type { CreateSandboxWire } from '../core/wire.js';
import { parseReference } from '../images/reference.js';
import { resolvePolicy } from '../net/policy.js';
import type { Logger } from './logger.js';
import type { DirectCreate, DirectShape } from './direct-create.js';
import type { NodeAgent } from './node-agent.js';
import type { SandboxEvents, SandboxFollower } from './sandbox-events.js';
import type { SandboxRepo, Versioned } from './sandbox-repo.js';
import { validateVolumeMounts } from './volume-rules.js';

/** What a create asks for: the API's create body (src/core/wire.ts); the service applies defaults. */
export type CreateSandboxRequest = CreateSandboxWire;

function normaliseNetwork(n: CreateSandboxRequest['network']): NetworkSpec {
  const e = n?.egress ?? 'none';
  return { egress: typeof e === 'string' ? e : { allow: e.allow ?? [], deny: e.deny ?? [] } };
}

/**
 * Places a new sandbox without a `pending` record first (the scheduler, where this node leads): the
 * record as written (`scheduled` or `failed`), or undefined when it cannot (then nothing was written).
 */
export interface Placer {
  place(sb: Sandbox, timeoutMs: number): Promise<Versioned<Sandbox> | undefined>;
}

export interface CreateTimeouts {
  /** How long a create waits for a scheduler to place it before failing with UNAVAILABLE. */
  scheduleMs: number;
  /** How long a create waits for its node to start it (an image pull included). */
  startMs: number;
}

/**
 * A sandbox by id or name, or its record as the same request already read it (the API's owner check
 * does), so that a request reads the record once.
 */
export type SandboxRef = string | Sandbox;

/** Where a sandbox's task lives, for requests that must run on that node. */
export type SandboxLocation = { local: true; sandbox: Sandbox } | { local: false; sandbox: Sandbox; node: string; address: string; alive: boolean };

export interface SandboxDefaults {
  image: string;
  runtime: RuntimeName;
  cpus: number;
  memoryMb: number;
  pidsLimit: number;
  diskMb: number;
  maxOpenFiles: number;
}

const NAME_RE = new RegExp(NAME_PATTERN);
const ENV_KEY_RE = /^[A-Za-z_][A-Za-z0-9_]*$/;

/**
 * Sandbox lifecycle: writes desired state to the Store (every transition a compare-and-swap), places
 * the sandbox, and has the owning node's agent act on it. A single node is a cluster of one.
 */
export class SandboxService {
  constructor(
    private readonly repo: SandboxRepo,
    private readonly events: SandboxEvents,
    private readonly agent: NodeAgent,
    private readonly defaults: SandboxDefaults,
    private readonly log: Logger,
    private readonly timeouts: CreateTimeouts = { scheduleMs: 30_000, startMs: 15 * 60_000 },
    private readonly telemetry: Telemetry = NO_TELEMETRY,
    /** This node's scheduler: a create made on the leader is placed at once, with no `pending` record. */
    private readonly placer?: Placer,
    /** Creates this node makes itself, in one write, when placement would put them here (direct-create.ts). */
    private readonly direct?: DirectCreate,
  ) {
    agent.onTtlExpired = (sb) => {
      const action = sb.onTimeout ?? 'stop';
      this.log.info({ sandbox: sb.id, action }, 'sandbox timeout reached');
      const done =
        action === 'delete' ? this.delete(sb.id)
        : action === 'pause' ? this.pause(sb.id)
        : this.stop(sb.id, { code: 'TTL_EXPIRED', message: 'the sandbox reached its timeoutSec and was stopped' });
      done.catch((e) => this.log.error({ err: e, sandbox: sb.id, action }, 'acting on an expired sandbox failed'));
    };
    agent.onPausedTtlExpired = (sb) => {
      this.log.info({ sandbox: sb.id }, 'paused sandbox reached --paused-ttl: deleting');
      this.get(sb.id)
        .then((cur) => (cur.status === 'paused' ? this.delete(cur.id) : undefined))
        .catch((e) => this.log.error({ err: e, sandbox: sb.id }, 'deleting a sandbox paused too long failed'));
    };
  }

  async get(ref: SandboxRef): Promise<Sandbox> {
    if (typeof ref !== 'string') return ref;
    const idOrName = ref;
    const byId = await this.repo.getSandbox(idOrName);
    if (byId) return byId.value;
    const id = await this.repo.idForName(idOrName);
    const byName = id ? await this.repo.getSandbox(id) : undefined;
    if (!byName) throw new PrismError('NOT_FOUND', `sandbox '${idOrName}' not found`);
    return byName.value;
  }

  /** Oldest first; `metadata`: only sandboxes carrying all these labels; `status`: only these. */
  async list(filter: { metadata?: Record<string, string>; status?: SandboxStatus[] } = {}): Promise<Sandbox[]> {
    const want = Object.entries(filter.metadata ?? {});
    const all = (await this.repo.listSandboxes()).filter(
      (sb) => want.every(([k, v]) => sb.metadata?.[k] === v) && (!filter.status || filter.status.includes(sb.status)),
    );
    return all.sort((a, b) => a.createdAt.localeCompare(b.createdAt));
  }

  /**
   * Sets when a running sandbox's timeout ends: `timeoutSec` from now (0: never), whatever it was.
   * The owner re-arms its timer (the route runs there).
   */
  async setTimeout(idOrName: string, timeoutSec: number): Promise<Sandbox> {
    const cur = await this.get(idOrName);
    const updated = await this.repo.update(cur.id, (sb) => {
      if (sb.status !== 'running') throw new PrismError('FAILED_PRECONDITION', `sandbox '${sb.name}' is ${sb.status}; a timeout runs only while it runs`);
      const ranSec = Math.max(0, Math.ceil((Date.now() - Date.parse(sb.startedAt ?? sb.createdAt)) / 1000));
      return { ...sb, timeoutSec: timeoutSec === 0 ? 0 : ranSec + timeoutSec };
    });
    this.agent.rearmTtl(updated);
    return updated;
  }

  private validate(req: CreateSandboxRequest): void {
    if (req.name !== undefined && !NAME_RE.test(req.name)) {
      throw new PrismError('INVALID_ARGUMENT', `name '${req.name}' is invalid: use 1-63 lowercase letters, digits and '-', starting and ending with a letter or digit`);
    }
    for (const k of Object.keys(req.env ?? {})) {
      if (!ENV_KEY_RE.test(k)) throw new PrismError('INVALID_ARGUMENT', `environment variable name '${k}' is invalid`);
    }
    if (req.workdir !== undefined && req.workdir !== '' && !req.workdir.startsWith('/')) {
      throw new PrismError('INVALID_ARGUMENT', `workdir must be an absolute path, got '${req.workdir}'`);
    }
    if (req.image !== undefined) parseReference(req.image); // INVALID_ARGUMENT before anything is written
    const network = normaliseNetwork(req.network);
    resolvePolicy(network.egress);
    const ports = req.ports ?? [];
    if (ports.length > MAX_PORTS || new Set(ports).size !== ports.length || ports.some((p) => !Number.isInteger(p) || p < 1 || p > 65535)) {
      throw new PrismError('INVALID_ARGUMENT', `ports must be at most ${MAX_PORTS} distinct TCP ports (1-65535)`);
    }
  }

  /**
   * Creates a sandbox and resolves once it is running. On the scheduler leader the record is written
   * once placed; elsewhere it goes in as `pending` and the leader places it. The chosen node creates it
   * (pulling the image there). On failure nothing is left behind: the record is removed and the node's
   * error code is the call's. Its duration goes to the telemetry.
   */
  async create(req: CreateSandboxRequest): Promise<Sandbox> {
    const t0 = performance.now();
    const seconds = () => (performance.now() - t0) / 1000;
    try {
      const sb = await this.createUntimed(req);
      this.telemetry.observeCreate(sb.runtime, seconds(), sb.status === 'running');
      return sb;
    } catch (e) {
      this.telemetry.observeCreate(req.runtime ?? this.defaults.runtime, seconds(), false);
      throw e;
    }
  }

  private async createUntimed(req: CreateSandboxRequest): Promise<Sandbox> {
    this.validate(req);
    // From a snapshot: its image, on the node whose image store holds it.
    const snap = req.snapshot === undefined ? undefined : await this.repo.getSnapshot(req.snapshot);
    if (req.snapshot !== undefined && !snap) throw new PrismError('NOT_FOUND', `snapshot '${req.snapshot}' not found`);
    if (snap && req.image !== undefined && req.image !== snap.image) throw new PrismError('INVALID_ARGUMENT', 'give either image or snapshot, not both');
    if (snap) req = { ...req, image: snap.image, runtime: req.runtime ?? snap.runtime };
    // An engine's snapshot lives in that engine: only its runtime can run it.
    if (snap?.runtime === 'docker' && req.runtime !== 'docker') throw new PrismError('INVALID_ARGUMENT', `snapshot '${snap.id}' is a Docker engine image: it runs on the docker runtime only`);
    if (snap?.shape) req = fromMemorySnapshot(req, snap.runtime, snap.shape);
    const sb: Sandbox = {
      id: newSandboxId(),
      name: req.name ?? readableName(),
      status: 'pending',
      node: '',
      image: req.image ?? this.defaults.image,
      runtime: req.runtime ?? this.defaults.runtime,
      cpus: req.cpus ?? this.defaults.cpus,
      memoryMb: req.memoryMb ?? this.defaults.memoryMb,
      pidsLimit: req.pidsLimit ?? this.defaults.pidsLimit,
      diskMb: req.diskMb ?? this.defaults.diskMb,
      maxOpenFiles: req.maxOpenFiles ?? this.defaults.maxOpenFiles,
      env: req.env ?? {},
      // Empty until the node resolves it against the image; then the record says where commands run.
      workdir: req.workdir ?? '',
      timeoutSec: req.timeoutSec ?? 0,
      network: normaliseNetwork(req.network),
      ports: req.ports ?? [],
      createdAt: new Date().toISOString(),
      secrets: { access: randomString(24, 'base64url'), traffic: randomString(24, 'base64url') },
    };
    if (req.metadata && Object.keys(req.metadata).length) sb.metadata = req.metadata;
    if (req.onTimeout) sb.onTimeout = req.onTimeout;
    if (req.autoResume === false) sb.autoResume = false;
    if (req.user) sb.user = req.user;
    if (req.nodeSelector && Object.keys(req.nodeSelector).length) sb.nodeSelector = req.nodeSelector;
    if (req.volumes?.length) {
      sb.volumes = req.volumes.map((v): VolumeMount => ({ name: v.name, mountPath: v.mountPath, readOnly: v.readOnly ?? false }));
      sb.volumeNode = await this.volumeNode(sb.volumes);
    }
    if (snap) {
      if (sb.volumeNode && sb.volumeNode !== snap.node) {
        throw new PrismError('FAILED_PRECONDITION', `snapshot '${snap.id}' is on node ${snap.node} but the volumes are on ${sb.volumeNode}; a sandbox runs where both are`);
      }
      sb.snapshot = snap.id;
      sb.imageNode = snap.node;
    }
    if (this.direct?.takes(shapeOf(sb))) {
      const made = await this.createDirect(sb, req);
      if (made) return made;
    }
    // Followed from before its first write: every change the watch delivers is seen, none is read.
    const follower = this.events.follow(sb.id);
    try {
      return await this.createAndWait(sb, req, follower);
    } finally {
      follower.close();
    }
  }

  /**
   * Whether a create of `req` would be made on this node directly (direct-create.ts), as things stand
   * now: the API then makes it here rather than sending it to the scheduler leader's node.
   */
  takesDirectly(req: CreateSandboxRequest): boolean {
    if (!this.direct) return false;
    return this.direct.takes({
      runtime: req.runtime ?? this.defaults.runtime, cpus: req.cpus ?? this.defaults.cpus, memoryMb: req.memoryMb ?? this.defaults.memoryMb,
      diskMb: req.diskMb ?? this.defaults.diskMb, volumes: (req.volumes?.length ?? 0) > 0, snapshot: req.snapshot !== undefined,
      ...(req.nodeSelector && Object.keys(req.nodeSelector).length ? { nodeSelector: req.nodeSelector } : {}),
    });
  }

  /**
   * A direct create; undefined when its image must be pulled first, or this node had no room at its
   * commit after all (nothing is left of it then): the create then goes to the scheduler.
   */
  private async createDirect(sb: Sandbox, req: CreateSandboxRequest): Promise<Sandbox | undefined> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.direct!.create(sb);
      } catch (e) {
        // A generated name that happens to be taken: draw another, as for a scheduled create.
        if (req.name !== undefined || attempt >= 5 || !isPrismError(e, 'ALREADY_EXISTS')) throw e;
        sb.name = readableName();
      }
    }
  }

  private async createAndWait(sb: Sandbox, req: CreateSandboxRequest, follower: SandboxFollower): Promise<Sandbox> {
    for (let attempt = 0; ; attempt++) {
      try {
        const { value, revision } = await this.firstWrite(sb);
        follower.wrote(value, revision);
        break;
      } catch (e) {
        // A generated name that happens to be taken is not the user's problem: draw another.
        if (req.name !== undefined || attempt >= 5 || !isPrismError(e, 'ALREADY_EXISTS')) throw e;
        sb.name = readableName();
      }
    }
    const placed = await follower.until((s) => s?.status !== 'pending', this.timeouts.scheduleMs);
    if (placed?.status === 'pending') {
      const removed = await this.repo.deleteSandbox(sb, (s) => s.status === 'pending');
      if (removed) {
        throw new PrismError('UNAVAILABLE', `no scheduler placed the sandbox within ${Math.round(this.timeouts.scheduleMs / 1000)} s (is a leader elected? see 'prismctl info'); try again`, { retryAfterSec: 5 });
      }
    }
    const done = await follower.until((s) => !s || ['running', 'failed', 'lost', 'stopped'].includes(s.status), this.timeouts.startMs);
    if (done?.status === 'running' || done?.status === 'stopped') return done;
    // Deleted by someone while it was being made: their delete stands, so trying again is not the answer.
    if (!done) throw new PrismError('CONFLICT', `sandbox '${sb.name}' was deleted while it was being created`, { retryable: false });
    if (done.status === 'failed' || done.status === 'lost') {
      await this.repo.deleteSandbox(done).catch((e) => this.log.warn({ err: e, sandbox: sb.id }, 'removing a failed sandbox failed'));
      const code = done.error && isErrorCode(done.error.code) ? done.error.code : 'UNAVAILABLE';
      throw new PrismError(code, done.error?.message ?? `creating sandbox '${sb.name}' failed`);
    }
    throw new PrismError('DEADLINE_EXCEEDED', `sandbox '${sb.name}' is still ${done.status} after ${Math.round(this.timeouts.startMs / 1000)} s; it is kept: watch it with 'prismctl sandbox info'`);
  }

  /**
   * A new sandbox's first record: placed at once when this node leads the scheduling (one write
   * fewer, and no wait for the leader to hear of it), else `pending` for the leader to place. Volume
   * attachments are checked in the `pending` write's commit, so those sandboxes always take that way.
   */
  private async firstWrite(sb: Sandbox): Promise<Versioned<Sandbox>> {
    if (this.placer && !sb.volumes?.length) {
      const placed = await this.placer.place(sb, this.timeouts.scheduleMs);
      if (placed) return placed;
    }
    return this.repo.createSandbox(sb);
  }

  /** The one node holding all of `mounts`' volumes; NOT_FOUND for a missing volume. */
  private async volumeNode(mounts: VolumeMount[]): Promise<string> {
    validateVolumeMounts(mounts);
    const nodes = new Map<string, string>();
    for (const m of mounts) {
      const v = await this.repo.volumes.get(m.name);
      if (!v) throw new PrismError('NOT_FOUND', `volume '${m.name}' not found`);
      nodes.set(v.value.node, m.name);
    }
    if (nodes.size > 1) {
      throw new PrismError('FAILED_PRECONDITION', `the volumes live on different nodes (${[...nodes].map(([n, v]) => `'${v}' on ${n}`).join(', ')}); a sandbox can only mount volumes of one node`);
    }
    return [...nodes.keys()][0]!;
  }

  /**
   * Where the host reaches an exposed port of a running sandbox of this node (the port proxy).
   * FAILED_PRECONDITION when the port was not exposed on create or the sandbox is not running.
   */
  /** Where the owner reaches a sandbox port: one exposed on create, or any (`anyPort`, the E2B gateway's hosts). */
  async portTarget(idOrName: string, port: number, opts: { anyPort?: boolean } = {}): Promise<{ host: string; port: number }> {
    const sb = await this.get(idOrName);
    if (!opts.anyPort && !(sb.ports ?? []).includes(port)) {
      throw new PrismError('FAILED_PRECONDITION', `port ${port} of sandbox '${sb.name}' is not exposed (create it with ports: [${port}])`);
    }
    if (sb.status !== 'running') throw new PrismError('FAILED_PRECONDITION', `sandbox '${sb.name}' is ${sb.status}; only a running sandbox serves ports`);
    this.requireLocal(sb, 'reached');
    const address = this.agent.addressOf(sb.id);
    if (!address && (sb.network?.egress ?? 'none') === 'none' && !(sb.ports ?? []).length) {
      throw new PrismError('FAILED_PRECONDITION', `sandbox '${sb.name}' has no network (egress none, no ports), so none of its ports can be reached`);
    }
    if (!address) throw new PrismError('UNAVAILABLE', `the network of sandbox '${sb.name}' is not ready on this node; try again`, { retryAfterSec: 1 });
    return { host: address, port };
  }

  /** The cluster's nodes (for requests that must run on a given node). */
  nodes(): Promise<import('../core/types.js').NodeInfo[]> {
    return this.repo.listNodes();
  }

  /** Where the sandbox's task runs: here, or on which node (and whether that node is alive). */
  async locate(idOrName: string): Promise<SandboxLocation> {
    const sb = await this.get(idOrName);
    if (!sb.node || sb.node === this.agent.nodeId) return { local: true, sandbox: sb };
    const node = (await this.repo.listNodes()).find((n) => n.id === sb.node);
    return { local: false, sandbox: sb, node: node?.name ?? sb.node, address: node?.address ?? '', alive: node?.status === 'alive' };
  }

  /** Lifecycle calls for another node's sandbox reach this node only when that node is gone. */
  private requireLocal(sb: Sandbox, what: string): void {
    if (sb.node && sb.node !== this.agent.nodeId) {
      throw new PrismError('FAILED_PRECONDITION', `sandbox '${sb.name}' runs on node ${sb.node}, which is not reachable (${sb.status}); it cannot be ${what} until that node returns. It can be deleted.`);
    }
  }

  /**
   * A running sandbox for an operation on its task (`what` finishes "sandbox 'x' is <status>; ...").
   * A paused one is resumed first unless it was created with `autoResume: false`.
   */
  async active(idOrName: SandboxRef, what: string): Promise<Sandbox> {
    let sb = await this.get(idOrName);
    if ((sb.status === 'paused' || sb.status === 'resuming') && sb.autoResume !== false) sb = await this.resume(sb.id);
    if (sb.status !== 'running') throw new PrismError('FAILED_PRECONDITION', `sandbox '${sb.name}' is ${sb.status}; ${what}`);
    return sb;
  }

  /** Where a runtime keeps a paused sandbox's memory, or UNIMPLEMENTED when it cannot pause. */
  private requirePause(sb: Sandbox): void {
    if (!this.agent.pauseKeeps(sb.runtime)) {
      throw new PrismError('UNIMPLEMENTED', `the ${sb.runtime} runtime cannot pause a sandbox yet (docs/runtimes.md); stop it instead (the filesystem is kept)`);
    }
  }

  async stop(idOrName: string, reason?: { code: SandboxReason; message: string }): Promise<Sandbox> {
    let sb = await this.get(idOrName);
    if (sb.status === 'stopped') return sb;
    this.requireLocal(sb, 'stopped');
    // A frozen task is thawed before it is killed (a signal to a frozen process waits for the thaw).
    if (sb.status === 'paused') sb = await this.resume(sb.id);
    await this.repo.transition(sb.id, ['running'], 'stopping');
    try {
      await this.agent.stop(sb);
    } catch (e) {
      await this.repo.transition(sb.id, ['stopping'], 'failed', (s) => ({ ...s, error: { code: 'STOP_FAILED', message: String((e as Error).message) } }), { quiet: true });
      throw asPrismError(e, 'INTERNAL', 'stopping the sandbox');
    }
    return this.settled(sb.id, ['stopping'], 'stopped', 'stopped', (s) => {
      const next: Sandbox = { ...s, stoppedAt: new Date().toISOString() };
      if (reason) next.error = reason;
      else delete next.error;
      return next;
    });
  }

  async start(idOrName: string): Promise<Sandbox> {
    const sb = await this.get(idOrName);
    if (sb.status === 'running') return sb;
    this.requireLocal(sb, 'started');
    await this.repo.transition(sb.id, ['stopped'], 'starting');
    const startedAt = new Date().toISOString();
    try {
      await this.agent.start({ ...sb, startedAt });
    } catch (e) {
      await this.repo.transition(sb.id, ['starting'], 'stopped', (s) => s, { quiet: true });
      throw asPrismError(e, 'INTERNAL', 'starting the sandbox');
    }
    return this.settled(sb.id, ['starting'], 'running', 'started', (s) => {
      const next: Sandbox = { ...s, startedAt };
      delete next.error;
      delete next.stoppedAt;
      return next;
    });
  }

  /**
   * Freezes every process of a running sandbox, keeping its memory (capabilities().pause says where:
   * in RAM for oci and docker). Its timeout stops counting until it is resumed.
   */
  async pause(idOrName: string): Promise<Sandbox> {
    const sb = await this.get(idOrName);
    if (sb.status === 'paused') return sb;
    this.requireLocal(sb, 'paused');
    this.requirePause(sb);
    const pausing = await this.repo.transition(sb.id, ['running'], 'pausing');
    try {
      await this.agent.pause(pausing!.value);
    } catch (e) {
      await this.repo.transition(sb.id, ['pausing'], 'running', (s) => s, { quiet: true });
      this.agent.rearmTtl({ ...pausing!.value, status: 'running' });
      throw asPrismError(e, 'INTERNAL', 'pausing the sandbox');
    }
    const paused = await this.settled(sb.id, ['pausing'], 'paused', 'paused', (s) => ({ ...s, pausedAt: new Date().toISOString() }));
    this.agent.armPausedTtl(paused);
    return paused;
  }

  /** Thaws a paused sandbox: its processes continue where they were; its timeout counts again. */
  async resume(idOrName: string): Promise<Sandbox> {
    const sb = await this.get(idOrName);
    if (sb.status === 'running') return sb;
    this.requireLocal(sb, 'resumed');
    if (sb.status === 'resuming') {
      // Another call is resuming it: wait for that one rather than fail.
      const done = await this.events.waitFor(sb.id, (s) => s?.status !== 'resuming', 60_000);
      if (done?.status === 'running') return done;
      throw new PrismError('FAILED_PRECONDITION', `sandbox '${sb.name}' is ${done?.status ?? 'deleted'}; it could not be resumed`);
    }
    const resuming = await this.repo.transition(sb.id, ['paused'], 'resuming');
    try {
      await this.agent.resume(resuming!.value);
    } catch (e) {
      await this.repo.transition(sb.id, ['resuming'], 'paused', (s) => s, { quiet: true });
      throw asPrismError(e, 'INTERNAL', 'resuming the sandbox');
    }
    const running = await this.settled(sb.id, ['resuming'], 'running', 'resumed', (s) => {
      const next: Sandbox = { ...s };
      // The clock stood still while paused: the timeout ends as much later as the pause lasted.
      if (s.timeoutSec > 0 && s.pausedAt) next.timeoutSec = s.timeoutSec + Math.ceil((Date.now() - Date.parse(s.pausedAt)) / 1000);
      delete next.pausedAt;
      return next;
    });
    this.agent.rearmTtl(running);
    return running;
  }

  /**
   * The last step of an operation whose runtime work is done: `from -> to`, unless a delete (or
   * another writer) got there first, in which case the caller learns it lost without anything being
   * written over (FAILED_PRECONDITION naming the status now; NOT_FOUND when the record is gone).
   */
  private async settled(id: string, from: SandboxStatus[], to: SandboxStatus, what: string, patch: (s: Sandbox) => Sandbox): Promise<Sandbox> {
    const done = await this.repo.transition(id, from, to, patch, { quiet: true });
    if (done) return done.value;
    const now = await this.repo.getSandbox(id);
    if (!now) throw new PrismError('NOT_FOUND', `sandbox '${id}' was deleted while it was being ${what}`);
    throw new PrismError('FAILED_PRECONDITION', `sandbox '${now.value.name}' became ${now.value.status} while it was being ${what}`);
  }

  /**
   * Stops if needed and removes everything the sandbox owns. A sandbox of a dead node loses only its
   * record here; the node destroys the task when it returns (it finds no record for it).
   */
  async delete(idOrName: string): Promise<void> {
    const timer = new StepTimer();
    const sb = await this.get(idOrName);
    timer.step('getMs');
    // From any status: a delete wins over whatever is in flight, which then finds the record gone.
    const deleting = await this.repo.transition(sb.id, SANDBOX_STATUSES, 'deleting');
    timer.step('markMs');
    if (sb.node === this.agent.nodeId) await this.agent.destroy(sb);
    timer.step('destroyMs');
    await this.repo.deleteSandbox(sb, undefined, deleting);
    timer.step('recordMs');
    this.log.debug({ sandbox: sb.id, ms: timer.totalMs(), steps: timer.steps }, 'sandbox deleted');
  }
}

/**
 * A create from a memory snapshot gets the snapshotted VM's shape: its runtime, resources, and a
 * network or none (the restored guest has the devices it had). Asking for something else is refused.
 */
function fromMemorySnapshot(req: CreateSandboxRequest, runtime: RuntimeName, shape: NonNullable<import('../core/types.js').Snapshot['shape']>): CreateSandboxRequest {
  if (req.runtime !== runtime) throw new PrismError('INVALID_ARGUMENT', `this snapshot holds a running ${runtime} sandbox: it can only become a ${runtime} sandbox`);
  for (const k of ['cpus', 'memoryMb', 'diskMb'] as const) {
    if (req[k] !== undefined && req[k] !== shape[k]) throw new PrismError('INVALID_ARGUMENT', `${k} must be the snapshot's (${shape[k]}): its memory was saved with that shape`);
  }
  const nic = (n: NetworkSpec | CreateSandboxRequest['network'] | undefined, ports: number[] | undefined) => (n?.egress ?? 'none') !== 'none' || !!ports?.length;
  if (req.network !== undefined && nic(req.network, req.ports ?? shape.ports) !== nic(shape.network, shape.ports)) {
    throw new PrismError('INVALID_ARGUMENT', `the snapshot's sandbox had ${nic(shape.network, shape.ports) ? 'a network' : 'no network'}, and so must one made from it`);
  }
  return {
    ...req, cpus: shape.cpus, memoryMb: shape.memoryMb, diskMb: shape.diskMb, pidsLimit: req.pidsLimit ?? shape.pidsLimit, maxOpenFiles: req.maxOpenFiles ?? shape.maxOpenFiles,
    network: req.network ?? shape.network, ports: req.ports ?? shape.ports,
  };
}

function shapeOf(sb: Sandbox): DirectShape {
  return {
    runtime: sb.runtime, cpus: sb.cpus, memoryMb: sb.memoryMb, diskMb: sb.diskMb ?? 0, volumes: (sb.volumes?.length ?? 0) > 0, snapshot: sb.snapshot !== undefined,
    ...(sb.nodeSelector ? { nodeSelector: sb.nodeSelector } : {}),
  };
}
