import { readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PrismError, asPrismError } from '../core/errors.js';
import { newSnapshotId } from '../core/ids.js';
import type { Sandbox, Snapshot } from '../core/types.js';
import type { ImageStore } from '../images/image-store.js';
import type { Logger } from './logger.js';
import type { NodeAgent } from './node-agent.js';
import type { SandboxRepo } from './sandbox-repo.js';
import type { SandboxService } from './sandbox-service.js';

/** Where snapshot images are tagged: `prism.local/snapshots/<id>:latest`. */
export const SNAPSHOT_REPOSITORY = 'prism.local/snapshots';

/**
 * Snapshots of sandboxes' filesystems and forks made from them. A snapshot is an image in the image
 * store of the node that made it: the sandbox's image plus one layer holding what the sandbox changed
 * (its writable layer, exported consistently by the runtime: RuntimeDriver.exportLayer). So a sandbox
 * created from it is an ordinary sandbox of that image, pinned to that node; the image store's
 * garbage collection and in-use rules apply. Memory is not part of a snapshot yet on any runtime.
 *
 * `create` and `fork` run on the sandbox's node, `remove` on the snapshot's (the API forwards).
 */
export class SnapshotService {
  constructor(
    private readonly repo: SandboxRepo,
    private readonly sandboxes: SandboxService,
    private readonly agent: NodeAgent,
    private readonly images: ImageStore,
    private readonly log: Logger,
    /** Where memory snapshots are kept on this node (`<dir>/<id>/`, the runtime's files). */
    private readonly dir: string = join(tmpdir(), 'prism-snapshots'),
  ) {}

  async list(): Promise<Snapshot[]> {
    return (await this.repo.listSnapshots()).sort((a, b) => a.createdAt.localeCompare(b.createdAt));
  }

  async get(id: string): Promise<Snapshot> {
    const snap = await this.repo.getSnapshot(id);
    if (!snap) throw new PrismError('NOT_FOUND', `snapshot '${id}' not found`);
    return snap;
  }

  /**
   * Snapshots a running, paused or stopped sandbox of this node. A running one is frozen for the time
   * its writable layer is read. A failed snapshot leaves no record and no tag (its blob goes at the next GC).
   */
  async create(idOrName: string, opts: { name?: string } = {}): Promise<Snapshot> {
    const sb = await this.sandboxes.get(idOrName);
    if (!['running', 'paused', 'stopped'].includes(sb.status)) {
      throw new PrismError('FAILED_PRECONDITION', `sandbox '${sb.name}' is ${sb.status}; only a running, paused or stopped sandbox can be snapshotted`);
    }
    if (sb.node !== this.agent.nodeId) throw new PrismError('FAILED_PRECONDITION', `sandbox '${sb.name}' runs on node ${sb.node}, which is not reachable`);
    if (!sb.imageDigest) throw new PrismError('FAILED_PRECONDITION', `sandbox '${sb.name}' has no image digest to build on`);
    const id = newSnapshotId();
    const name = opts.name ?? `${sb.name}-${id.slice(5)}`;
    // Where the runtime can, a running or paused sandbox keeps its processes: memory, devices and disk.
    // Not with volumes: the copy's VM would need the same volume disks, which have one writer.
    if (this.agent.memorySnapshots(sb.runtime) && (sb.status === 'running' || sb.status === 'paused') && !sb.volumes?.length) {
      return this.createWithMemory(sb, id, name);
    }
    const image = `${SNAPSHOT_REPOSITORY}/${id}:latest`;
    // A runtime with images of its own (a Docker engine) commits the sandbox there.
    if (this.agent.commitsImages(sb.runtime)) return this.createInRuntime(sb, id, name, image);
    const tar = join(tmpdir(), `prism-${id}.tar`);
    let record;
    try {
      await this.agent.exportLayer(sb, tar);
      record = await this.images.commitLayer(sb.imageDigest, tar, image, `prism snapshot ${id} of sandbox ${sb.name} (${sb.id})`);
    } catch (e) {
      throw asPrismError(e, 'INTERNAL', `snapshotting sandbox '${sb.name}'`);
    } finally {
      await rm(tar, { force: true });
    }
    const snap: Snapshot = {
      id, name, sandboxId: sb.id, sandboxName: sb.name, node: sb.node, runtime: sb.runtime,
      image, imageDigest: record.digest, size: record.layers.at(-1)?.size ?? 0, memory: false, createdAt: new Date().toISOString(),
    };
    try {
      await this.repo.putSnapshot(snap);
    } catch (e) {
      await this.images.remove(image).catch(() => undefined);
      throw e;
    }
    this.log.info({ snapshot: id, sandbox: sb.id, bytes: snap.size }, 'snapshot taken');
    return snap;
  }

  private async createInRuntime(sb: Sandbox, id: string, name: string, image: string): Promise<Snapshot> {
    let committed;
    try {
      committed = await this.agent.commitImage(sb, image);
    } catch (e) {
      throw asPrismError(e, 'INTERNAL', `snapshotting sandbox '${sb.name}'`);
    }
    const snap: Snapshot = {
      id, name, sandboxId: sb.id, sandboxName: sb.name, node: sb.node, runtime: sb.runtime, image, imageDigest: committed.id,
      size: committed.size, memory: false, createdAt: new Date().toISOString(),
    };
    try {
      await this.repo.putSnapshot(snap);
    } catch (e) {
      await this.agent.removeRuntimeImage(sb.runtime, image).catch(() => undefined);
      throw e;
    }
    this.log.info({ snapshot: id, sandbox: sb.id, runtime: sb.runtime }, 'snapshot committed in the runtime');
    return snap;
  }

  private async createWithMemory(sb: Sandbox, id: string, name: string): Promise<Snapshot> {
    const dir = join(this.dir, id);
    try {
      await this.agent.snapshotMemory(sb, dir);
    } catch (e) {
      await rm(dir, { recursive: true, force: true });
      throw asPrismError(e, 'INTERNAL', `snapshotting sandbox '${sb.name}'`);
    }
    const snap: Snapshot = {
      id, name, sandboxId: sb.id, sandboxName: sb.name, node: sb.node, runtime: sb.runtime, image: sb.image, imageDigest: sb.imageDigest!,
      size: await allocatedBytes(dir), memory: true, createdAt: new Date().toISOString(),
      shape: { cpus: sb.cpus, memoryMb: sb.memoryMb, diskMb: sb.diskMb, pidsLimit: sb.pidsLimit, maxOpenFiles: sb.maxOpenFiles, network: sb.network ?? { egress: 'none' }, ports: sb.ports ?? [] },
    };
    try {
      await this.repo.putSnapshot(snap);
    } catch (e) {
      await rm(dir, { recursive: true, force: true });
      throw e;
    }
    this.log.info({ snapshot: id, sandbox: sb.id, bytes: snap.size }, 'memory snapshot taken');
    return snap;
  }

  /**
   * `count` new sandboxes with the files of a running (or paused, or stopped) one: a snapshot, then
   * creates from it with the parent's resources, environment, network and timeout. Volumes are not
   * carried over (a volume has one writer). Memory is not either (yet): the forks start fresh processes.
   */
  async fork(idOrName: string, count: number): Promise<{ sandboxes: Sandbox[]; snapshot: Snapshot; memory: boolean }> {
    const parent = await this.sandboxes.get(idOrName);
    const snapshot = await this.create(parent.id, { name: `fork-of-${parent.name}` });
    const made = await Promise.allSettled(
      Array.from({ length: count }, () =>
        this.sandboxes.create({
          snapshot: snapshot.id, runtime: parent.runtime, cpus: parent.cpus, memoryMb: parent.memoryMb, pidsLimit: parent.pidsLimit,
          diskMb: parent.diskMb, maxOpenFiles: parent.maxOpenFiles, env: parent.env, workdir: parent.workdir,
          timeoutSec: parent.timeoutSec, ...(parent.onTimeout ? { onTimeout: parent.onTimeout } : {}),
          ...(parent.user ? { user: parent.user } : {}), network: parent.network ?? { egress: 'none' }, ports: parent.ports ?? [],
          metadata: { ...(parent.metadata ?? {}), 'prism.fork-of': parent.id },
        }),
      ),
    );
    const ok = made.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
    const failed = made.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) {
      // All or nothing: the forks that were made go again, and so does the snapshot.
      await Promise.all(ok.map((sb) => this.sandboxes.delete(sb.id).catch(() => undefined)));
      await this.remove(snapshot.id).catch(() => undefined);
      throw asPrismError(failed.reason, 'INTERNAL', 'forking the sandbox');
    }
    return { sandboxes: ok, snapshot, memory: snapshot.memory };
  }

  /** Removes a snapshot and its image; FAILED_PRECONDITION while a sandbox was created from it. */
  async remove(id: string): Promise<void> {
    const snap = await this.get(id);
    // A memory snapshot shares its image with its sandbox: only creates from it count.
    const users = (await this.repo.listSandboxes()).filter((sb) => sb.snapshot === snap.id || (!snap.memory && sb.image === snap.image));
    if (users.length) {
      throw new PrismError('FAILED_PRECONDITION', `snapshot '${snap.id}' is in use by ${users.map((u) => `'${u.name}'`).join(', ')}; delete those sandboxes first`);
    }
    if (snap.node !== this.agent.nodeId) throw new PrismError('FAILED_PRECONDITION', `snapshot '${snap.id}' is on node ${snap.node}, which is not reachable`);
    if (snap.memory) await rm(join(this.dir, snap.id), { recursive: true, force: true });
    else if (this.agent.commitsImages(snap.runtime)) await this.agent.removeRuntimeImage(snap.runtime, snap.image);
    else {
      await this.images.remove(snap.image).catch((e: unknown) => {
        if (!(e instanceof PrismError && e.code === 'NOT_FOUND')) throw e;
      });
    }
    await this.repo.deleteSnapshot(snap.id);
  }
}

/** Disk blocks a snapshot directory takes (its disk copy is sparse). */
async function allocatedBytes(dir: string): Promise<number> {
  let total = 0;
  for (const f of await readdir(dir)) total += (await stat(join(dir, f))).blocks * 512;
  return total;
}
