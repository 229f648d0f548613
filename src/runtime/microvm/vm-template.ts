import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, open, readdir, readFile, realpath, rename, rm, stat, truncate, utimes, writeFile } from 'node:fs/promises';
import { delimiter, dirname, join } from 'node:path';
import { AgentConnection } from './agent-connection.js';
import { killQemu, readPidFile } from './qemu-process.js';
import { bootVm, taskPaths, type VmShape } from './vm-boot.js';
import type { Vmm, VmmStart } from './vmm.js';

/**
 * Template snapshots: the saved state of a VM booted to its agent's `booted` hello, before `M` has
 * touched any disk. Restoring one (with the task's own fresh writable disk at the same device slot)
 * replaces a cold boot. One template serves every task of the same VmShape; its key hashes the shape
 * and the identity (size + mtime) of the kernel, initramfs and image disk, so a rebuilt input is a
 * new key and the old template is left for pruneTemplates.
 *
 * Layout: `<dir>/<key>/state` (the migration stream) + `meta.json`. A build works in
 * `<dir>/.build-<rand>/` and renames it into place, so a template either exists whole or not at all.
 */

/** 2: the agent mounts the image disk before `booted`, so a template holds that mount. */
const FORMAT = 2;
const MiB = 1 << 20;
const SAVE_TIMEOUT_MS = 60_000;
/** After a failed build the key is not tried again for this long (each try costs a boot). */
const RETRY_AFTER_MS = 10 * 60_000;

type Logger = Record<'info' | 'warn', (o: object, msg?: string) => void>;

export interface TemplateStoreOptions {
  dir: string;
  vmm: Vmm;
  bootTimeoutMs: number;
  logger?: Logger | undefined;
}

interface FileId {
  path: string;
  size: number;
  mtimeMs: number;
}

interface TemplateInputs {
  format: number;
  files: FileId[];
  accel: string;
  memoryMb: number;
  cpus: number;
  cmdline: string;
  writableDiskMb: number;
  vmm: string;
}

interface TemplateMeta {
  key: string;
  inputs: TemplateInputs;
  createdAt: string;
  buildMs: number;
  stateBytes: number;
  /** The size of `mem`, the RAM image saved beside `state` (absent: the RAM is in the stream). */
  memBytes?: number;
}

/** How a VM restored from a template's (or pool's) `state` takes the RAM image beside it, if there is one. */
export function memoryImageOf(state: string): VmmStart['memoryImage'] {
  const mem = join(dirname(state), 'mem');
  return existsSync(mem) ? { path: mem, mode: 'copy' } : undefined;
}

async function fileId(path: string): Promise<FileId> {
  const st = await stat(path);
  return { path, size: st.size, mtimeMs: st.mtimeMs };
}

/**
 * Everything a restore depends on: the guest's memory holds the kernel, the initramfs (the agent)
 * and the image disk's mounted file system (the agent mounts it before `booted`); the device model
 * depends on the QEMU build, RAM size, vCPUs and disk sizes. The image disk's path names its content
 * digest (vm-disks.ts), its size and mtime catch a rebuild; QEMU is identified by its resolved file.
 */
async function templateInputs(shape: VmShape, vmm: Vmm): Promise<TemplateInputs> {
  const files = await Promise.all([shape.files.kernel, shape.files.initramfs, shape.imageDisk].map(fileId));
  const vmmFile = await resolveBinary(vmm.binary);
  if (vmmFile) files.push(await fileId(vmmFile));
  return {
    format: FORMAT, files, accel: shape.accel, memoryMb: shape.memoryMb, cpus: shape.cpus, cmdline: shape.cmdline,
    writableDiskMb: shape.writableDiskMb, vmm: `${vmm.name} ${vmm.binary}`,
  };
}

/** `binary` as a file: itself when it is a path, else the first match on PATH (symlinks resolved). */
async function resolveBinary(binary: string): Promise<string | undefined> {
  const candidates = binary.includes('/') ? [binary] : (process.env.PATH ?? '').split(delimiter).filter(Boolean).map((d) => join(d, binary));
  for (const c of candidates) {
    const real = await realpath(c).catch(() => undefined);
    if (real) return real;
  }
  return undefined;
}

export class TemplateStore {
  private readonly building = new Map<string, Promise<void>>();
  private readonly failedAt = new Map<string, number>();
  /** Work directories of builds in flight (named short: they hold unix sockets). */
  private readonly workDirs = new Set<string>();
  /** Builds run one at a time: each is a full boot competing with the tasks for CPU. */
  private queue: Promise<void> = Promise.resolve();

  constructor(private readonly o: TemplateStoreOptions) {}

  async key(shape: VmShape): Promise<string> {
    const inputs = await templateInputs(shape, this.o.vmm);
    return createHash('sha256').update(JSON.stringify(inputs)).digest('hex').slice(0, 32);
  }

  /**
   * The state file of template `key`, if it exists whole; marks the template used (for prune). A
   * template whose meta.json is unreadable or whose stream is not the size it was written with
   * (truncated, or replaced by hand) is removed with a log line, so the task cold-boots and a fresh
   * template is built.
   */
  async find(key: string): Promise<string | undefined> {
    const dir = join(this.o.dir, key);
    const state = join(dir, 'state');
    if (!existsSync(state)) return undefined;
    const why = await this.corrupt(dir);
    if (why) {
      this.o.logger?.warn({ template: key, reason: why }, 'microvm template snapshot is corrupt; removing it and cold-booting');
      await this.remove(key);
      return undefined;
    }
    const now = new Date();
    await utimes(join(dir, 'meta.json'), now, now).catch(() => undefined);
    return state;
  }

  private async corrupt(dir: string): Promise<string | null> {
    let meta: TemplateMeta;
    try {
      meta = JSON.parse(await readFile(join(dir, 'meta.json'), 'utf8')) as TemplateMeta;
    } catch (e) {
      return `meta.json unreadable: ${(e as Error).message}`;
    }
    const size = (await stat(join(dir, 'state')).catch(() => null))?.size;
    if (size !== meta.stateBytes) return `state is ${String(size)} bytes, meta.json says ${meta.stateBytes}`;
    const mem = (await stat(join(dir, 'mem')).catch(() => null))?.size;
    if (mem !== meta.memBytes) return `mem is ${String(mem)} bytes, meta.json says ${String(meta.memBytes)}`;
    return null;
  }

  /**
   * Builds template `key` in the background unless it exists, is being built, or failed recently.
   * Resolves when the build is over; never rejects (a failed build is logged and leaves nothing).
   */
  buildSoon(key: string, shape: VmShape): Promise<void> {
    const running = this.building.get(key);
    if (running) return running;
    if (Date.now() - (this.failedAt.get(key) ?? -Infinity) < RETRY_AFTER_MS) return Promise.resolve();
    const build = this.queue.then(async () => {
      if (existsSync(join(this.o.dir, key, 'state'))) return;
      const t0 = Date.now();
      try {
        await this.build(key, shape);
        this.o.logger?.info({ template: key, ms: Date.now() - t0 }, 'microvm template snapshot built');
      } catch (e) {
        this.failedAt.set(key, Date.now());
        this.o.logger?.warn({ err: e, template: key }, 'building a microvm template snapshot failed; tasks of this shape cold-boot');
      }
    }).finally(() => this.building.delete(key));
    this.building.set(key, build);
    this.queue = build;
    return build;
  }

  /** Resolves when no build is running (also the driver's close: no template VM outlives it). */
  async settled(): Promise<void> {
    while (this.building.size > 0) await Promise.all(this.building.values());
  }

  async remove(key: string): Promise<void> {
    await rm(join(this.o.dir, key), { recursive: true, force: true });
  }

  /**
   * Removes templates that can never be hit again (an input file changed or is gone), those not
   * restored from for `unusedForMs`, and leftovers of builds that died with their process.
   * Returns the keys removed.
   */
  async prune(unusedForMs: number): Promise<string[]> {
    const removed: string[] = [];
    for (const name of await readdir(this.o.dir).catch(() => [] as string[])) {
      const dir = join(this.o.dir, name);
      if (name.startsWith('.build-')) {
        if (!this.workDirs.has(name)) await rm(dir, { recursive: true, force: true });
        continue;
      }
      if (this.building.has(name) || !(await this.stale(dir, unusedForMs))) continue;
      await rm(dir, { recursive: true, force: true });
      removed.push(name);
    }
    return removed;
  }

  private async stale(dir: string, unusedForMs: number): Promise<boolean> {
    let meta: TemplateMeta;
    try {
      meta = JSON.parse(await readFile(join(dir, 'meta.json'), 'utf8')) as TemplateMeta;
    } catch {
      return true;
    }
    const lastUsed = (await stat(join(dir, 'meta.json'))).mtimeMs;
    if (Date.now() - lastUsed >= unusedForMs) return true;
    for (const f of meta.inputs.files) {
      const now = await fileId(f.path).catch(() => null);
      if (!now || now.size !== f.size || now.mtimeMs !== f.mtimeMs) return true;
    }
    return false;
  }

  /** Boots a VM of `shape` to `booted`, saves it, and moves the result into place atomically. */
  private async build(key: string, shape: VmShape): Promise<void> {
    const t0 = Date.now();
    await mkdir(this.o.dir, { recursive: true });
    const name = `.build-${randomBytes(4).toString('hex')}`;
    const p = taskPaths(this.o.dir, name);
    const { vmm } = this.o;
    const conn = new AgentConnection(p.agentSocket, (path, ms) => vmm.dialAgent(path, ms));
    this.workDirs.add(name);
    try {
      await mkdir(p.task);
      // QEMU needs a drive file in the writable slot; the guest only reads its capacity before `M`.
      await (await open(p.rwDisk, 'w')).close();
      await truncate(p.rwDisk, shape.writableDiskMb * MiB);
      const inputs = await templateInputs(shape, vmm);
      await bootVm({ shape, paths: p, vmm, conn, bootTimeoutMs: this.o.bootTimeoutMs });
      conn.close();
      const state = join(p.task, 'state');
      const mem = join(p.task, 'mem');
      // The RAM as an image beside the devices' state when the VMM can (restores copy it: memoryImageOf).
      const imaged = (await vmm.saveImage?.(p, state, mem, SAVE_TIMEOUT_MS)) ?? false;
      if (!imaged) await vmm.save(p, state, SAVE_TIMEOUT_MS);
      const meta: TemplateMeta = {
        key, inputs, createdAt: new Date().toISOString(), buildMs: Date.now() - t0, stateBytes: (await stat(state)).size,
        ...(imaged ? { memBytes: (await stat(mem)).size } : {}),
      };
      await writeFile(join(p.task, 'meta.json'), `${JSON.stringify(meta, null, 2)}\n`);
      await killQemu(await readPidFile(p.pidFile), vmm.marker(p));
      await Promise.all([p.rwDisk, p.agentSocket, p.qmpSocket, p.pidFile, p.consoleLog, p.qemuLog].map((f) => rm(f, { force: true })));
      await rename(p.task, join(this.o.dir, key)).catch((e: NodeJS.ErrnoException) => {
        // Another process built the same key first: theirs is as good as ours.
        if (e.code !== 'EEXIST' && e.code !== 'ENOTEMPTY') throw e;
      });
    } finally {
      conn.close();
      await killQemu(await readPidFile(p.pidFile), vmm.marker(p)).catch(() => undefined);
      await rm(p.task, { recursive: true, force: true });
      this.workDirs.delete(name);
    }
  }
}
