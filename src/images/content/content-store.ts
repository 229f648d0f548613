import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, open, readdir, readFile, rename, rm, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { PrismError } from '../../core/errors.js';

/**
 * Blobs by digest, laid out like an OCI image layout (`<root>/blobs/sha256/<hex>`), after containerd's
 * content store. A blob is only ever visible complete and verified: writers hash into a temp file in
 * `<root>/tmp/`, fsync, then rename into place. Writing the same content twice is a no-op.
 * Callers decide what is garbage; this store never deletes on its own.
 * Errors: INVALID_ARGUMENT (malformed digest, content not matching its digest), NOT_FOUND, INTERNAL.
 */

const DIGEST_PATTERN = /^sha256:[0-9a-f]{64}$/;

export interface BlobInfo {
  digest: string;
  size: number;
}

/** Throws INVALID_ARGUMENT unless `digest` is `sha256:` followed by 64 lower-case hex digits. */
export function assertDigest(digest: string): string {
  if (typeof digest !== 'string' || !DIGEST_PATTERN.test(digest)) {
    throw new PrismError('INVALID_ARGUMENT', `invalid digest ${JSON.stringify(digest)}: expected sha256:<64 hex digits>`);
  }
  return digest;
}

export function isDigest(s: string): boolean {
  return DIGEST_PATTERN.test(s);
}

export function sha256Digest(data: Buffer | string): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

/** A pass-through stream that hashes and counts what flows through it. */
export class DigestingStream extends Transform {
  private readonly hash = createHash('sha256');
  private result?: string;
  bytes = 0;

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null, data?: Buffer) => void): void {
    this.hash.update(chunk);
    this.bytes += chunk.length;
    cb(null, chunk);
  }

  /** Only valid once the stream has finished. */
  digest(): string {
    this.result ??= `sha256:${this.hash.digest('hex')}`;
    return this.result;
  }
}

/** Temp names carry the writer's pid so a later process can tell abandoned temps from live ones. */
export function tempName(kind: string): string {
  return `${process.pid}-${kind}-${randomBytes(6).toString('hex')}`;
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** fsync of a file or directory (a directory, so that a rename into it is durable). */
export async function fsyncPath(path: string): Promise<void> {
  const fh = await open(path, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

export class ContentStore {
  readonly root: string;
  /** Scratch space on the same file system as the blobs, so renames are atomic. */
  readonly tmpDir: string;
  private readonly blobDir: string;

  constructor(root: string) {
    this.root = root;
    this.tmpDir = join(root, 'tmp');
    this.blobDir = join(root, 'blobs', 'sha256');
  }

  path(digest: string): string {
    return join(this.blobDir, assertDigest(digest).slice('sha256:'.length));
  }

  async has(digest: string): Promise<boolean> {
    try {
      return (await stat(this.path(digest))).isFile();
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw e;
    }
  }

  /** Size in bytes; NOT_FOUND when absent. */
  async size(digest: string): Promise<number> {
    try {
      return (await stat(this.path(digest))).size;
    } catch (e) {
      throw this.notFound(e, digest);
    }
  }

  /** Reads, re-verifies and parses a (small) JSON blob. */
  async readJson<T = unknown>(digest: string): Promise<T> {
    let buf: Buffer;
    try {
      buf = await readFile(this.path(digest));
    } catch (e) {
      throw this.notFound(e, digest);
    }
    if (sha256Digest(buf) !== digest) {
      throw new PrismError('INTERNAL', `blob ${digest} is corrupt: its content no longer matches its digest`);
    }
    try {
      return JSON.parse(buf.toString('utf8')) as T;
    } catch (e) {
      throw new PrismError('INVALID_ARGUMENT', `blob ${digest} is not valid JSON`, { cause: e });
    }
  }

  async putBuffer(buf: Buffer, expectedDigest?: string): Promise<BlobInfo> {
    const digest = sha256Digest(buf);
    if (expectedDigest !== undefined) this.checkMatch(assertDigest(expectedDigest), digest);
    if (await this.has(digest)) return { digest, size: buf.length };
    const tmp = await this.newTemp('blob');
    try {
      const fh = await open(tmp, 'wx', 0o644);
      try {
        await fh.writeFile(buf);
        await fh.sync();
      } finally {
        await fh.close();
      }
      await this.commit(tmp, digest);
    } finally {
      await rm(tmp, { force: true });
    }
    return { digest, size: buf.length };
  }

  /**
   * Streams `readable` into the store, hashing while writing. With `expectedDigest`, content that does
   * not match is refused (INVALID_ARGUMENT) and nothing is kept.
   */
  async putStream(readable: Readable, expectedDigest?: string): Promise<BlobInfo> {
    if (expectedDigest !== undefined) assertDigest(expectedDigest);
    const tmp = await this.newTemp('blob');
    try {
      const hasher = new DigestingStream();
      const out = createWriteStream(tmp, { flags: 'wx', mode: 0o644 });
      await pipeline(readable, hasher, out);
      const digest = hasher.digest();
      if (expectedDigest !== undefined) this.checkMatch(expectedDigest, digest);
      if (!(await this.has(digest))) {
        await fsyncPath(tmp);
        await this.commit(tmp, digest);
      }
      return { digest, size: hasher.bytes };
    } finally {
      await rm(tmp, { force: true });
    }
  }

  async putFile(path: string, expectedDigest?: string): Promise<BlobInfo> {
    return this.putStream(createReadStream(path), expectedDigest);
  }

  /** Returns false when the blob was already absent. */
  async delete(digest: string): Promise<boolean> {
    try {
      await unlink(this.path(digest));
      return true;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw e;
    }
  }

  async listDigests(): Promise<string[]> {
    let names: string[];
    try {
      names = await readdir(this.blobDir);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw e;
    }
    return names.map((n) => `sha256:${n}`).filter(isDigest).sort();
  }

  /** A fresh path in {@link tmpDir}; the caller removes it. */
  async newTemp(kind: string): Promise<string> {
    await mkdir(this.tmpDir, { recursive: true });
    return join(this.tmpDir, tempName(kind));
  }

  /** Removes temps left by processes that died mid-write (their pid is in the name). */
  async removeStaleTemps(): Promise<void> {
    let names: string[];
    try {
      names = await readdir(this.tmpDir);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw e;
    }
    for (const name of names) {
      const pid = Number(/^(\d+)-/.exec(name)?.[1]);
      if (Number.isInteger(pid) && pid > 0 && pidAlive(pid)) continue;
      await rm(join(this.tmpDir, name), { recursive: true, force: true });
    }
  }

  private async commit(tmp: string, digest: string): Promise<void> {
    await mkdir(this.blobDir, { recursive: true });
    await rename(tmp, this.path(digest));
    await fsyncPath(this.blobDir);
  }

  private checkMatch(expected: string, actual: string): void {
    if (expected !== actual) {
      throw new PrismError('INVALID_ARGUMENT', `content does not match its digest: expected ${expected}, got ${actual}`);
    }
  }

  private notFound(e: unknown, digest: string): unknown {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') {
      return new PrismError('NOT_FOUND', `blob ${digest} not found in the content store`, { cause: e });
    }
    return e;
  }
}
