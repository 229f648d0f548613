import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { open, stat, truncate } from 'node:fs/promises';
import { basename } from 'node:path';
import { PrismError } from '../../core/errors.js';
import { ensureExt4Disk } from '../../images/rootfs/ext4-disk.js';

/** The two disks of a microVM: the image's shared read-only ext4 and the task's private writable one. */

const MiB = 1 << 20;

/**
 * The image disk's cache key. TaskSpec carries layer directories, not the image digest; their names
 * are the layers' diffIds, so their sequence identifies the image's file system (as a chain id would).
 * Directories not named by a digest are keyed by their full path.
 */
export function layersDigest(layers: string[]): string {
  const parts = layers.map((l) => (/^[0-9a-f]{64}$/.test(basename(l)) ? basename(l) : l));
  return `sha256:${createHash('sha256').update(parts.join('\n')).digest('hex')}`;
}

/** `<cacheDir>/<key>.ext4`, built from the layers on first use. */
export function imageDisk(cacheDir: string, layers: string[]): Promise<string> {
  return ensureExt4Disk(cacheDir, layersDigest(layers), layers);
}

/** FAILED_PRECONDITION naming the first layer directory that does not exist. */
export async function requireLayers(layers: string[]): Promise<void> {
  for (const layer of layers) {
    const st = await stat(layer).catch(() => null);
    if (!st?.isDirectory()) throw new PrismError('FAILED_PRECONDITION', `image layer not found: ${layer}`);
  }
}

/** A sparse ext4 file of `sizeMb`; mkfs.ext4 initialises inode tables lazily, so this is quick. */
export async function makeWritableDisk(path: string, sizeMb: number): Promise<void> {
  await (await open(path, 'w')).close();
  await truncate(path, sizeMb * MiB);
  await runTool('mkfs.ext4', ['-q', '-F', '-L', 'prism-rw', path]);
}

export function runTool(cmd: string, args: string[], timeoutMs = 60_000): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { timeout: timeoutMs }, (err, stdout, stderr) => {
      if (err) reject(new PrismError('INTERNAL', `${cmd} ${args.join(' ')}: ${stderr.trim() || err.message}`, { cause: err }));
      else resolve(stdout);
    });
  });
}

/** `cp --sparse=always`: a writable disk or a memory image is a sparse file mostly of holes. */
export function copySparse(from: string, to: string): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile('cp', ['--sparse=always', '--', from, to], (err, _out, stderr) =>
      err ? reject(new PrismError('INTERNAL', `copying ${from}: ${String(stderr).trim() || err.message}`)) : resolve());
  });
}
