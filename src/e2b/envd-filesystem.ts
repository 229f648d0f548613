import { posix } from 'node:path';
import { PrismError } from '../core/errors.js';
import type { FileEntry } from '../core/types.js';
import type { FileService } from '../service/file-service.js';
import { ConnectError, type ServerStream } from './connect-protocol.js';

/**
 * envd's Filesystem service and EntryInfo on Prism's file operations (which run inside the sandbox as
 * its user, or as root). Paths: absolute as given; relative and `~/` ones against the user's home.
 */

export interface Caller {
  sandboxId: string;
  asRoot: boolean;
  /** The user's home: relative paths resolve against it. */
  home: string;
}

export function resolvePath(path: string, home: string): string {
  if (path === '' || path === '~') return home;
  if (path.startsWith('~/')) return posix.join(home, path.slice(2));
  return path.startsWith('/') ? posix.normalize(path) : posix.join(home, path);
}

const EVENT_TYPE = { create: 'EVENT_TYPE_CREATE', write: 'EVENT_TYPE_WRITE', remove: 'EVENT_TYPE_REMOVE', rename: 'EVENT_TYPE_RENAME', chmod: 'EVENT_TYPE_CHMOD' } as const;

const TYPE = { file: 'FILE_TYPE_FILE', dir: 'FILE_TYPE_DIRECTORY', symlink: 'FILE_TYPE_SYMLINK', other: 'FILE_TYPE_UNSPECIFIED' } as const;

/** Go's FileMode.String(): type letter, then rwx triplets. */
export function permissionsText(type: FileEntry['type'], mode: number): string {
  const t = type === 'dir' ? 'd' : type === 'symlink' ? 'L' : '-';
  let s = '';
  for (let i = 8; i >= 0; i--) s += mode & (1 << i) ? 'rwxrwxrwx'[8 - i] : '-';
  return t + s;
}

export class EnvdFilesystem {
  constructor(private readonly files: FileService) {}

  /** EntryInfo as envd sends it; a link reports its target's type (UNSPECIFIED when dangling). */
  async entryInfo(c: Caller, path: string, e: FileEntry): Promise<Record<string, unknown>> {
    let type: string = TYPE[e.type];
    let size = e.size;
    if (e.type === 'symlink' && e.linkTarget !== undefined) {
      const target = posix.resolve(posix.dirname(path), e.linkTarget);
      const t = await this.files.stat(c.sandboxId, target, { asRoot: c.asRoot }).catch(() => undefined);
      type = t ? (t.type === 'dir' ? TYPE.dir : t.type === 'file' ? TYPE.file : TYPE.other) : TYPE.other;
      if (t?.type === 'file') size = t.size;
    }
    const info: Record<string, unknown> = {
      name: e.name,
      type,
      path,
      size: String(size),
      mode: e.mode,
      permissions: permissionsText(e.type, e.mode),
      modifiedTime: e.mtime,
    };
    if (e.linkTarget !== undefined) info.symlinkTarget = e.linkTarget;
    return info;
  }

  async stat(c: Caller, raw: string) {
    const path = resolvePath(raw, c.home);
    const e = await this.files.stat(c.sandboxId, path, { asRoot: c.asRoot }).catch(notFound(path));
    return { entry: await this.entryInfo(c, path, { ...e, name: posix.basename(path) || '/' }) };
  }

  /** Entries below `path` down to `depth` levels (1: its children), the root itself excluded. */
  async listDir(c: Caller, raw: string, depth: number) {
    const root = resolvePath(raw, c.home);
    if (depth < 1) throw new ConnectError('invalid_argument', 'depth must be at least 1');
    const top = await this.files.stat(c.sandboxId, root, { asRoot: c.asRoot }).catch(notFound(root));
    if (top.type !== 'dir' && top.type !== 'symlink') throw new ConnectError('invalid_argument', `path ${root} is not a directory`);
    const entries: Record<string, unknown>[] = [];
    const walk = async (dir: string, level: number): Promise<void> => {
      const list = await this.files.list(c.sandboxId, dir, { asRoot: c.asRoot }).catch(notFound(dir));
      for (const e of list) {
        const path = posix.join(dir, e.name);
        entries.push(await this.entryInfo(c, path, e));
        if (e.type === 'dir' && level < depth) await walk(path, level + 1);
      }
    };
    await walk(root, 1);
    return { entries };
  }

  async makeDir(c: Caller, raw: string) {
    const path = resolvePath(raw, c.home);
    const existing = await this.files.stat(c.sandboxId, path, { asRoot: c.asRoot }).catch(() => undefined);
    if (existing?.type === 'dir') throw new ConnectError('already_exists', `directory ${path} already exists`);
    if (existing) throw new ConnectError('invalid_argument', `path ${path} already exists and is not a directory`);
    await this.files.mkdir(c.sandboxId, path, { asRoot: c.asRoot, parents: true });
    return this.stat(c, path);
  }

  async move(c: Caller, rawFrom: string, rawTo: string) {
    const from = resolvePath(rawFrom, c.home);
    const to = resolvePath(rawTo, c.home);
    await this.files.move(c.sandboxId, from, to, { asRoot: c.asRoot }).catch(notFound(from));
    return this.stat(c, to);
  }

  /**
   * WatchDir: the start message once the watch is in place, then one filesystem event per change
   * (name relative to `path`), keepalives while quiet; ends when the client goes, at its deadline, or
   * when the directory goes away.
   */
  async watch(c: Caller, path: string, recursive: boolean, out: ServerStream, o: { keepaliveMs: number; timeoutMs?: number; signal: AbortSignal }): Promise<void> {
    const w = await this.files.watch(c.sandboxId, path, { asRoot: c.asRoot, recursive }).catch((e: unknown) => {
      if (e instanceof PrismError && e.code === 'INVALID_ARGUMENT') throw new ConnectError('invalid_argument', `path ${path} is not a directory`);
      return notFound(path)(e);
    });
    const stop = () => w.stop();
    o.signal.addEventListener('abort', stop, { once: true });
    const deadline = o.timeoutMs === undefined ? undefined : setTimeout(stop, o.timeoutMs);
    let last = Date.now();
    const keepalive = setInterval(() => {
      if (Date.now() - last < o.keepaliveMs) return;
      last = Date.now();
      void out.send({ keepalive: {} });
    }, Math.min(o.keepaliveMs, 1000));
    try {
      await out.send({ start: {} });
      for await (const ev of w.events) {
        last = Date.now();
        await out.send({ filesystem: { name: ev.name, type: EVENT_TYPE[ev.type] } });
      }
    } finally {
      clearInterval(keepalive);
      clearTimeout(deadline);
      o.signal.removeEventListener('abort', stop);
      w.stop();
    }
  }

  /** Removes recursively; a missing path is no error (as envd). */
  async remove(c: Caller, raw: string) {
    const path = resolvePath(raw, c.home);
    try {
      await this.files.remove(c.sandboxId, path, { asRoot: c.asRoot, recursive: true });
    } catch (e) {
      if (!(e instanceof PrismError && e.code === 'NOT_FOUND')) throw e;
    }
    return {};
  }
}

function notFound(path: string) {
  return (e: unknown): never => {
    if (e instanceof PrismError && e.code === 'NOT_FOUND') throw new ConnectError('not_found', `path ${path} does not exist`);
    throw e;
  };
}
