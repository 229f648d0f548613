import { spawn, type ChildProcess } from 'node:child_process';
import { createReadStream } from 'node:fs';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { PrismError } from '../../core/errors.js';
import { DigestingStream } from '../content/content-store.js';
import { bad, GZIP_LAYER_TYPES, TAR_LAYER_TYPES } from '../oci-types.js';

// Not in oci-types' sets yet, so manifests listing zstd layers are still refused before they get here.
export const ZSTD_LAYER_TYPES = new Set<string>(['application/vnd.oci.image.layer.v1.tar+zstd']);

/** A layer blob's uncompressed bytes, hashed as they pass. */
export interface LayerStream {
  chunks: AsyncIterator<Buffer>;
  /** After `chunks` is exhausted: the sha256 of the uncompressed bytes; throws if decompression failed. */
  finish(): Promise<string>;
  /** Stops reading and any decompressor process; returns the decompressor's own failure, if it had one. */
  abort(): Promise<Error | undefined>;
}

interface Decompressor {
  out: Readable;
  exited: Promise<void>;
  /** Kills the process; true if it was still running (so its exit status means nothing). */
  kill(): boolean;
}

/**
 * Node 20 has no zstd, so zstd layers go through `zstd -dc`. A zstd that exits non-zero (corrupt or
 * truncated input) fails the layer even if its output happened to look like a whole tar.
 */
function zstdProcess(blobPath: string): Decompressor {
  const child: ChildProcess = spawn('zstd', ['-dc', '-q', '--', blobPath], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => {
    if (stderr.length < 4096) stderr += d.toString('utf8');
  });
  const exited = new Promise<void>((resolve, reject) => {
    child.on('error', (e: NodeJS.ErrnoException) => {
      reject(e.code === 'ENOENT'
        ? new PrismError('FAILED_PRECONDITION', 'zstd layers need the zstd command on this node', { cause: e })
        : new PrismError('INTERNAL', `running zstd: ${e.message}`, { cause: e }));
    });
    child.on('close', (code, signal) => {
      if (code === 0) resolve();
      else reject(bad(`zstd could not decompress the layer (${signal ?? `exit ${code}`}): ${stderr.trim()}`));
    });
  });
  exited.catch(() => undefined);
  return {
    out: child.stdout!,
    exited,
    kill: () => {
      if (child.exitCode !== null || child.signalCode !== null) return false;
      child.kill('SIGKILL');
      return true;
    },
  };
}

export function openLayerStream(blobPath: string, mediaType: string): LayerStream {
  const hasher = new DigestingStream();
  let piped: Promise<void>;
  let proc: Decompressor | undefined;
  if (ZSTD_LAYER_TYPES.has(mediaType)) {
    proc = zstdProcess(blobPath);
    piped = pipeline(proc.out, hasher);
  } else if (GZIP_LAYER_TYPES.has(mediaType)) {
    piped = pipeline(createReadStream(blobPath), createGunzip(), hasher);
  } else if (TAR_LAYER_TYPES.has(mediaType)) {
    piped = pipeline(createReadStream(blobPath), hasher);
  } else {
    throw bad(`layer media type ${JSON.stringify(mediaType)} is not supported (tar, tar+gzip or tar+zstd)`);
  }
  piped.catch(() => undefined);
  return {
    chunks: hasher[Symbol.asyncIterator]() as AsyncIterator<Buffer>,
    async finish() {
      // The process's exit status first: its failure explains a short stream better than the stream does.
      if (proc) await proc.exited;
      await piped;
      return hasher.digest();
    },
    async abort() {
      hasher.destroy();
      const killed = proc?.kill() ?? false;
      const [, exit] = await Promise.allSettled([piped, proc?.exited]);
      return !killed && exit.status === 'rejected' ? (exit.reason as Error) : undefined;
    },
  };
}
