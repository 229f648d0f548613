import { execFile } from 'node:child_process';
import { constants } from 'node:fs';
import { access, open, readFile, stat, statfs } from 'node:fs/promises';
import { get as httpGet } from 'node:http';
import { get as httpsGet } from 'node:https';
import { tryListen } from '../listen-probe.js';

export interface FileInfo {
  kind: 'file' | 'dir' | 'socket' | 'char' | 'other';
  mtimeMs: number;
}

export interface CommandResult {
  /** Exit code; null when the command did not run or was killed. */
  code: number | null;
  stdout: string;
  stderr: string;
  /** Why it did not run (ENOENT: not installed) or was killed (ETIMEDOUT). */
  error?: string;
}

/** What `prismd doctor` asks of the host; tests pass a fake. Nothing here changes the host. */
export interface HostSystem {
  uid(): number;
  nodeVersion: string;
  /** undefined when it cannot be read. */
  readFile(path: string): Promise<string | undefined>;
  stat(path: string): Promise<FileInfo | undefined>;
  writable(path: string): Promise<boolean>;
  /** Opens read-write and closes: undefined if that worked, else the error code. */
  openError(path: string): Promise<string | undefined>;
  run(cmd: string, args: string[]): Promise<CommandResult>;
  /** Bytes available to unprivileged users on the filesystem of `path`. */
  freeBytes(path: string): Promise<number>;
  tryListen(host: string, port: number): Promise<'free' | string>;
  /** GET a prismd's /api/v1/health (any certificate accepted: this only identifies who answers). */
  health(url: string): Promise<{ node?: string; version?: string } | undefined>;
  processAlive(pid: number): boolean;
}

const COMMAND_TIMEOUT_MS = 15_000;

export const realHostSystem: HostSystem = {
  uid: () => process.getuid?.() ?? -1,
  nodeVersion: process.versions.node,
  readFile: (p) => readFile(p, 'utf8').catch(() => undefined),
  async stat(p) {
    const s = await stat(p).catch(() => undefined);
    if (!s) return undefined;
    const kind = s.isFile() ? 'file' : s.isDirectory() ? 'dir' : s.isSocket() ? 'socket' : s.isCharacterDevice() ? 'char' : 'other';
    return { kind, mtimeMs: s.mtimeMs };
  },
  writable: (p) => access(p, constants.W_OK).then(() => true, () => false),
  async openError(p) {
    try {
      await (await open(p, constants.O_RDWR)).close();
      return undefined;
    } catch (e) {
      return (e as NodeJS.ErrnoException).code ?? String(e);
    }
  },
  run: (cmd, args) =>
    new Promise((resolve) => {
      execFile(cmd, args, { timeout: COMMAND_TIMEOUT_MS }, (err, stdout, stderr) => {
        if (!err) return resolve({ code: 0, stdout, stderr });
        const e = err as NodeJS.ErrnoException & { code?: number | string; killed?: boolean };
        if (typeof e.code === 'number') return resolve({ code: e.code, stdout, stderr });
        resolve({ code: null, stdout, stderr, error: e.killed ? 'ETIMEDOUT' : String(e.code ?? e.message) });
      });
    }),
  async freeBytes(p) {
    const s = await statfs(p);
    return s.bavail * s.bsize;
  },
  tryListen,
  health: (url) =>
    new Promise((resolve) => {
      const get = url.startsWith('https:') ? httpsGet : httpGet;
      const req = get(url, { timeout: 3_000, rejectUnauthorized: false }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body = (body + c).slice(0, 4096)));
        res.on('end', () => {
          try {
            const j = JSON.parse(body) as { status?: string; node?: string; version?: string };
            resolve(res.statusCode === 200 && j.status === 'ok' ? { node: j.node, version: j.version } : undefined);
          } catch {
            resolve(undefined);
          }
        });
      });
      req.on('timeout', () => req.destroy());
      req.on('error', () => resolve(undefined));
    }),
  processAlive(pid) {
    try {
      process.kill(pid, 0);
      return true;
    } catch (e) {
      return (e as NodeJS.ErrnoException).code === 'EPERM';
    }
  },
};
