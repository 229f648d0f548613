import { randomBytes } from 'node:crypto';
import { mkdir, open, readdir, readFile, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { PrismError } from '../core/errors.js';
import type { TaskHandle } from '../runtime/driver.js';
import type { Logger } from './logger.js';
import type { SandboxRepo } from './sandbox-repo.js';

/** Ids that are safe file names (sandbox ids are `sb-` + hex). */
const ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$/;

/**
 * Where a node keeps the task handles of its sandboxes (driver data that only it reads, used to find
 * its tasks again after a restart). Saved before the record says `running` and removed after the
 * record is gone, so a crash between leaves a handle recovery settles against the record
 * (NodeAgent.recover): a handle without a finished record is a create cut short, one without a record
 * a delete cut short; both have their task destroyed.
 */
export interface TaskHandleStore {
  put(handle: TaskHandle): Promise<void>;
  get(id: string): Promise<TaskHandle | undefined>;
  /** Idempotent. */
  delete(id: string): Promise<void>;
  list(): Promise<TaskHandle[]>;
}

/**
 * Handles in the Store (`/prism/handles/<node>/`): the choice when the Store is the node's own
 * (SQLite), where they cost a local write and share the record's durability.
 */
export class StoreTaskHandles implements TaskHandleStore {
  constructor(
    private readonly repo: SandboxRepo,
    private readonly node: string,
  ) {}

  put(handle: TaskHandle): Promise<void> {
    return this.repo.putHandle(this.node, handle);
  }

  get(id: string): Promise<TaskHandle | undefined> {
    return this.repo.getHandle(this.node, id);
  }

  delete(id: string): Promise<void> {
    return this.repo.deleteHandle(this.node, id);
  }

  list(): Promise<TaskHandle[]> {
    return this.repo.listHandles(this.node);
  }
}

/**
 * Handles as files, `<dir>/<sandbox id>.json`: the choice when the Store is shared (etcd), where each
 * key costs every member a write and nothing but this node ever reads them. Written to a temporary
 * name, flushed to disk and renamed, so a reader never sees half a handle and one that was acknowledged
 * survives a crash of the host as the record does (etcd syncs its writes too).
 */
export class FileTaskHandles implements TaskHandleStore {
  constructor(
    private readonly dir: string,
    private readonly log?: Logger,
  ) {}

  private path(id: string): string {
    if (!ID_PATTERN.test(id)) throw new PrismError('INVALID_ARGUMENT', `invalid task id: ${JSON.stringify(id)}`);
    return join(this.dir, `${id}.json`);
  }

  async put(handle: TaskHandle): Promise<void> {
    const final = this.path(handle.id);
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    const temp = join(this.dir, `.${handle.id}.${randomBytes(4).toString('hex')}.tmp`);
    const f = await open(temp, 'w', 0o600);
    try {
      await f.writeFile(JSON.stringify(handle));
      await f.datasync();
    } catch (e) {
      await f.close().catch(() => undefined);
      await rm(temp, { force: true });
      throw e;
    }
    await f.close();
    await rename(temp, final).catch(async (e: unknown) => {
      await rm(temp, { force: true });
      throw e;
    });
  }

  async get(id: string): Promise<TaskHandle | undefined> {
    const text = await readFile(this.path(id), 'utf8').catch((e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT') return undefined;
      throw e;
    });
    return text === undefined ? undefined : this.parse(id, text);
  }

  async delete(id: string): Promise<void> {
    await rm(this.path(id), { force: true });
  }

  /** Every handle; temporary files a crash left mid-write are removed (their create never finished). */
  async list(): Promise<TaskHandle[]> {
    const names = await readdir(this.dir).catch((e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT') return [] as string[];
      throw e;
    });
    const out: TaskHandle[] = [];
    for (const name of names.sort()) {
      if (name.endsWith('.tmp')) {
        await rm(join(this.dir, name), { force: true });
        continue;
      }
      const id = name.slice(0, -'.json'.length);
      if (!name.endsWith('.json') || !ID_PATTERN.test(id)) continue;
      const h = this.parse(id, await readFile(join(this.dir, name), 'utf8'));
      if (h) out.push(h);
    }
    return out;
  }

  /** A file that does not hold a handle of its name is reported and skipped, never trusted. */
  private parse(id: string, text: string): TaskHandle | undefined {
    try {
      const h = JSON.parse(text) as TaskHandle;
      if (h && h.id === id && typeof h.runtime === 'string') return h;
    } catch {
      /* reported below */
    }
    this.log?.error({ sandbox: id, file: join(this.dir, `${id}.json`) }, 'task handle file is not a handle: ignored');
    return undefined;
  }
}

/**
 * Moves the handles `from` holds into `to` (each saved there before it is removed here): a node whose
 * handles were kept in the Store by an earlier version keeps its sandboxes when it starts keeping them
 * in files. Returns how many moved.
 */
export async function moveTaskHandles(from: TaskHandleStore, to: TaskHandleStore): Promise<number> {
  let n = 0;
  for (const h of await from.list()) {
    await to.put(h);
    await from.delete(h.id);
    n++;
  }
  return n;
}
