import { PrismError, isPrismError } from '../core/errors.js';
import { NAME_PATTERN } from '../core/ids.js';
import { VOLUME_MB_MAX, VOLUME_MB_MIN, type NodeInfo, type Volume } from '../core/types.js';
import type { VolumeStore } from '../volumes/volume-store.js';
import type { Logger } from './logger.js';
import type { SandboxRepo } from './sandbox-repo.js';

export interface CreateVolumeRequest {
  name: string;
  sizeMb: number;
  /** Allow more than one sandbox to mount it read-write at once (containers only). */
  multiAttach?: boolean;
  /**
   * The node (id or name) that makes it; absent: this one. The API sends such a create on to that node
   * (owner-proxy `nodeOwner`); a create for another node that reaches the service anyway is refused.
   */
  node?: string;
}

/** Where a volume's data lives, for requests that must run on that node. */
export type VolumeLocation = { local: true } | { local: false; node: string; address: string; alive: boolean };

const NAME_RE = new RegExp(NAME_PATTERN);

/**
 * Volumes: a record in the Store (name, size, node, attachments) and the data on one node (the
 * VolumeStore). A volume is created on the node the request names (`node`), else on the node that
 * serves the request; sandboxes that mount it are placed there. Attachments are written by the sandbox repo with the sandbox's own record.
 */
export class VolumeService {
  constructor(
    private readonly repo: SandboxRepo,
    /** Absent on a node that holds no volumes: creates there are refused. */
    private readonly store: VolumeStore | undefined,
    private readonly nodeId: string,
    private readonly log: Logger,
  ) {}

  async create(req: CreateVolumeRequest): Promise<Volume> {
    if (!NAME_RE.test(req.name)) {
      throw new PrismError('INVALID_ARGUMENT', `volume name '${req.name}' is invalid: use 1-63 lowercase letters, digits and '-', starting and ending with a letter or digit`);
    }
    if (!Number.isInteger(req.sizeMb) || req.sizeMb < VOLUME_MB_MIN || req.sizeMb > VOLUME_MB_MAX) {
      throw new PrismError('INVALID_ARGUMENT', `sizeMb must be a whole number from ${VOLUME_MB_MIN} to ${VOLUME_MB_MAX}, got ${req.sizeMb}`);
    }
    if (req.node !== undefined) await this.requireThisNode(req.node);
    if (await this.repo.volumes.get(req.name)) throw new PrismError('ALREADY_EXISTS', `a volume named '${req.name}' already exists`);
    const v: Volume = {
      name: req.name, sizeMb: req.sizeMb, node: this.nodeId, multiAttach: req.multiAttach ?? false, createdAt: new Date().toISOString(), attachments: [],
    };
    const store = this.local();
    // Data first, record second: a record always has its data; data without a record (a crash
    // between the two) is removed at the next start (reconcile).
    await store.create(v.name, v.sizeMb);
    try {
      await this.repo.volumes.create(v);
    } catch (e) {
      await store.remove(v.name).catch((re: unknown) => this.log.error({ err: re, volume: v.name }, 'removing the data of a volume whose record failed'));
      throw e;
    }
    this.log.info({ volume: v.name, sizeMb: v.sizeMb }, 'volume created');
    return v;
  }

  /** The node a create names, by id or name; NOT_FOUND when no node is called that. */
  async nodeNamed(ref: string): Promise<NodeInfo> {
    const n = (await this.repo.listNodes()).find((x) => x.id === ref || x.name === ref);
    if (!n) throw new PrismError('NOT_FOUND', `node '${ref}' not found (see 'prismctl node ls')`);
    return n;
  }

  /** A create naming a node runs on that node: this one, else a clear error (it was not sent on). */
  private async requireThisNode(ref: string): Promise<void> {
    if (ref === this.nodeId) return;
    const n = await this.nodeNamed(ref);
    if (n.id === this.nodeId) return;
    if (n.status !== 'alive') throw new PrismError('UNAVAILABLE', `node ${n.name} is ${n.status}: a volume is made on its node, which must be alive; try again when it is, or name another node`, { retryAfterSec: 5 });
    throw new PrismError('FAILED_PRECONDITION', `this request for a volume on node ${n.name} reached node ${this.nodeId} and was not sent on; send it to node ${n.name}'s API (${n.address ?? 'no address known'})`);
  }

  async get(name: string): Promise<Volume> {
    const v = await this.repo.volumes.get(name);
    if (!v) throw new PrismError('NOT_FOUND', `volume '${name}' not found`);
    return v.value;
  }

  async list(): Promise<Volume[]> {
    return (await this.repo.volumes.list()).sort((a, b) => a.name.localeCompare(b.name));
  }

  /** Where the volume's data is: here, or on which node (requests that touch the data go there). */
  async locate(name: string): Promise<VolumeLocation> {
    const v = await this.get(name);
    if (v.node === this.nodeId) return { local: true };
    const node = (await this.repo.listNodes()).find((n) => n.id === v.node);
    return { local: false, node: node?.name ?? v.node, address: node?.address ?? '', alive: node?.status === 'alive' };
  }

  /**
   * Removes the volume and its data. CONFLICT while any sandbox (running or stopped) holds it. A volume
   * of a node that is not reachable loses its record here; that node removes the data when it starts.
   */
  async delete(name: string): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      const cur = await this.repo.volumes.get(name);
      if (!cur) throw new PrismError('NOT_FOUND', `volume '${name}' not found`);
      const holders = cur.value.attachments.map((a) => a.sandboxId);
      if (holders.length > 0) {
        throw new PrismError('CONFLICT', `volume '${name}' is attached to sandbox${holders.length > 1 ? 's' : ''} ${holders.join(', ')}; delete ${holders.length > 1 ? 'them' : 'it'} first`);
      }
      try {
        await this.repo.volumes.delete(name, cur.revision);
      } catch (e) {
        // An attach (or another delete) came first: look again.
        if (isPrismError(e, 'CONFLICT') && attempt < 20) continue;
        throw e;
      }
      if (cur.value.node === this.nodeId) await this.store?.remove(name);
      this.log.info({ volume: name }, 'volume deleted');
      return;
    }
  }

  /** Start-up: drop half-made volumes, and the data of volumes whose records are gone or not ours. */
  async reconcile(): Promise<void> {
    if (!this.store) return;
    await this.store.sweep();
    for (const name of await this.store.list()) {
      const rec = await this.repo.volumes.get(name);
      if (rec?.value.node === this.nodeId) continue;
      this.log.warn({ volume: name }, 'removing the data of a volume this node has no record of');
      await this.store.remove(name).catch((e: unknown) => this.log.error({ err: e, volume: name }, 'removing an orphaned volume failed'));
    }
  }

  private local(): VolumeStore {
    if (!this.store) throw new PrismError('FAILED_PRECONDITION', `node ${this.nodeId} holds no volumes`);
    return this.store;
  }

  /**
   * Host path of a local volume's image, for a task's spec; FAILED_PRECONDITION when its data is
   * missing. `hostKernel`: the task's runtime mounts it with the host's kernel, so a file system a
   * microVM wrote is checked (and repaired) first.
   */
  async image(name: string, hostKernel: boolean): Promise<string> {
    let path: string;
    try {
      path = await this.local().image(name);
    } catch (e) {
      if (isPrismError(e, 'NOT_FOUND')) throw new PrismError('FAILED_PRECONDITION', `the data of volume '${name}' is not on node ${this.nodeId}`, { cause: e });
      throw e;
    }
    for (let attempt = 0; hostKernel; attempt++) {
      const cur = await this.repo.volumes.get(name);
      if (!cur?.value.needsCheck) break;
      // The sandbox asking holds the volume, and a microVM shares it with nobody: no kernel has it mounted.
      await this.local().check(name);
      this.log.info({ volume: name }, 'checked a volume a microVM had written before mounting it on the host');
      try {
        await this.repo.volumes.markChecked(cur);
        break;
      } catch (e) {
        if (!isPrismError(e, 'CONFLICT') || attempt >= 10) throw e;
      }
    }
    return path;
  }
}
