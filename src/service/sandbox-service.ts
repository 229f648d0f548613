import { PrismError, asPrismError } from '../core/errors.js';
import { NAME_PATTERN, newSandboxId, readableName } from '../core/ids.js';
import type { RuntimeName, Sandbox, SandboxStatus } from '../core/types.js';
import type { ImageStore } from '../images/image-store.js';
import { place } from '../scheduler/placement.js';
import type { Logger } from './logger.js';
import type { NodeAgent } from './node-agent.js';
import type { SandboxRepo } from './sandbox-repo.js';

export interface CreateSandboxRequest {
  name?: string;
  image?: string;
  runtime?: RuntimeName;
  cpus?: number;
  memoryMb?: number;
  pidsLimit?: number;
  env?: Record<string, string>;
  workdir?: string;
  timeoutSec?: number;
  user?: string;
}

export interface SandboxDefaults {
  image: string;
  runtime: RuntimeName;
  cpus: number;
  memoryMb: number;
  pidsLimit: number;
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
    private readonly images: ImageStore,
    private readonly agent: NodeAgent,
    private readonly defaults: SandboxDefaults,
    private readonly log: Logger,
  ) {
    agent.onTtlExpired = (id) => {
      this.log.info({ sandbox: id }, 'sandbox timeout reached: stopping');
      this.stop(id, { code: 'TIMEOUT', message: 'the sandbox reached its timeoutSec and was stopped' }).catch((e) =>
        this.log.error({ err: e, sandbox: id }, 'stopping an expired sandbox failed'),
      );
    };
  }

  async get(idOrName: string): Promise<Sandbox> {
    const byId = await this.repo.getSandbox(idOrName);
    if (byId) return byId.value;
    const id = await this.repo.idForName(idOrName);
    const byName = id ? await this.repo.getSandbox(id) : undefined;
    if (!byName) throw new PrismError('NOT_FOUND', `sandbox '${idOrName}' not found`);
    return byName.value;
  }

  async list(): Promise<Sandbox[]> {
    const all = await this.repo.listSandboxes();
    return all.sort((a, b) => a.createdAt.localeCompare(b.createdAt));
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
    if (req.runtime && !this.agent.runtimes().includes(req.runtime)) {
      throw new PrismError('FAILED_PRECONDITION', `runtime '${req.runtime}' is not available here (available: ${this.agent.runtimes().join(', ')})`);
    }
  }

  /** Creates a sandbox and resolves once it is running. On failure nothing is left behind. */
  async create(req: CreateSandboxRequest): Promise<Sandbox> {
    this.validate(req);
    const image = req.image ?? this.defaults.image;
    // Present, or pulled now; NOT_FOUND and registry errors come before anything is written.
    const imageRecord = await this.images.ensure(image);
    const id = newSandboxId();
    const sb: Sandbox = {
      id,
      name: req.name ?? `${readableName()}`,
      status: 'pending',
      node: '',
      image,
      runtime: req.runtime ?? this.defaults.runtime,
      cpus: req.cpus ?? this.defaults.cpus,
      memoryMb: req.memoryMb ?? this.defaults.memoryMb,
      pidsLimit: req.pidsLimit ?? this.defaults.pidsLimit,
      env: req.env ?? {},
      // The effective directory, so the record says where commands run.
      workdir: req.workdir || imageRecord.config.workingDir || '/',
      timeoutSec: req.timeoutSec ?? 0,
      createdAt: new Date().toISOString(),
    };
    const user = req.user || imageRecord.config.user;
    if (user) sb.user = user;
    await this.repo.createSandbox(sb);
    try {
      const [nodes, all] = await Promise.all([this.repo.listNodes(), this.repo.listSandboxes()]);
      const node = place(sb, nodes, all);
      if (node !== this.agent.nodeId) {
        throw new PrismError('UNAVAILABLE', `sandbox placed on node ${node}, which this node cannot reach yet`);
      }
      await this.transition(id, 'scheduled', (s) => ({ ...s, node }));
      await this.transition(id, 'starting');
      const { imageDigest } = await this.agent.create({ ...sb, node });
      return await this.transition(id, 'running', (s) => ({ ...s, imageDigest, startedAt: new Date().toISOString() }));
    } catch (e) {
      const err = asPrismError(e, 'INTERNAL', 'creating the sandbox');
      this.log.warn({ sandbox: id, err }, 'sandbox create failed: cleaning up');
      const cur = await this.repo.getSandbox(id);
      if (cur?.value.node) await this.agent.destroy(cur.value).catch(() => undefined);
      if (cur) await this.repo.deleteSandbox(cur.value);
      throw err;
    }
  }

  private transition(id: string, status: SandboxStatus, patch: (s: Sandbox) => Sandbox = (s) => s): Promise<Sandbox> {
    return this.repo.update(id, (s) => ({ ...patch(s), status }));
  }

  async stop(idOrName: string, reason?: { code: string; message: string }): Promise<Sandbox> {
    const sb = await this.get(idOrName);
    if (sb.status === 'stopped') return sb;
    if (sb.status !== 'running') {
      throw new PrismError('FAILED_PRECONDITION', `sandbox '${sb.name}' is ${sb.status}; only a running sandbox can be stopped`);
    }
    await this.transition(sb.id, 'stopping');
    try {
      await this.agent.stop(sb);
    } catch (e) {
      await this.transition(sb.id, 'failed', (s) => ({ ...s, error: { code: 'STOP_FAILED', message: String((e as Error).message) } }));
      throw asPrismError(e, 'INTERNAL', 'stopping the sandbox');
    }
    return this.transition(sb.id, 'stopped', (s) => {
      const next: Sandbox = { ...s, stoppedAt: new Date().toISOString() };
      if (reason) next.error = reason;
      else delete next.error;
      return next;
    });
  }

  async start(idOrName: string): Promise<Sandbox> {
    const sb = await this.get(idOrName);
    if (sb.status === 'running') return sb;
    if (sb.status !== 'stopped') {
      throw new PrismError('FAILED_PRECONDITION', `sandbox '${sb.name}' is ${sb.status}; only a stopped sandbox can be started`);
    }
    await this.transition(sb.id, 'starting');
    const startedAt = new Date().toISOString();
    try {
      await this.agent.start({ ...sb, startedAt });
    } catch (e) {
      await this.transition(sb.id, 'stopped');
      throw asPrismError(e, 'INTERNAL', 'starting the sandbox');
    }
    return this.transition(sb.id, 'running', (s) => {
      const next: Sandbox = { ...s, startedAt };
      delete next.error;
      delete next.stoppedAt;
      return next;
    });
  }

  /** Stops if needed and removes everything the sandbox owns. */
  async delete(idOrName: string): Promise<void> {
    const sb = await this.get(idOrName);
    await this.transition(sb.id, 'deleting');
    if (sb.node) await this.agent.destroy(sb);
    await this.repo.deleteSandbox(sb);
  }
}
