import { runChecked } from './command.js';
import { readFile, statfs } from 'node:fs/promises';
import { statfsSync } from 'node:fs';
import { PrismError } from '../core/errors.js';

/** The host's mount table as drivers that mount on the host (oci, docker volumes) need it. */

async function run(cmd: string, args: string[]): Promise<void> {
  await runChecked(cmd, args);
}

/** Mount points at or below `prefix`, deepest first, from this process's mount table. */
export async function mountsUnder(prefix: string): Promise<string[]> {
  const text = await readFile('/proc/self/mountinfo', 'utf8');
  const points = text
    .split('\n')
    .map((line) => line.split(' ')[4])
    .filter((p): p is string => p !== undefined)
    // mountinfo escapes space, tab, newline and backslash as octal.
    .map((p) => p.replace(/\\([0-7]{3})/g, (_m, oct: string) => String.fromCharCode(parseInt(oct, 8))))
    .filter((p) => p === prefix || p.startsWith(prefix.endsWith('/') ? prefix : `${prefix}/`));
  return [...new Set(points)].sort((a, b) => b.length - a.length);
}

export async function isMounted(path: string): Promise<boolean> {
  return (await mountsUnder(path)).includes(path);
}

/**
 * Unmounts everything at or below `prefix`. A busy mount (a process on the host still has a file
 * open in it) is detached lazily, so that removing the directory afterwards cannot reach into it.
 */
export async function unmountAll(prefix: string): Promise<void> {
  for (const point of await mountsUnder(prefix)) {
    try {
      await run('umount', [point]);
    } catch {
      await run('umount', ['-l', point]);
    }
  }
  const left = await mountsUnder(prefix);
  if (left.length > 0) throw new PrismError('INTERNAL', `still mounted after umount: ${left.join(', ')}`);
}

/**
 * Loop-mounts an ext4 image. mount(8) attaches a loop device with autoclear, so the device goes away
 * with the last unmount (also a lazy one); and since util-linux 2.29 it reuses the loop device of an
 * image that is already attached, so two mounts of one image share one file system instance instead
 * of two instances corrupting each other.
 */
export async function mountExt4Image(image: string, target: string, opts: { readOnly?: boolean } = {}): Promise<void> {
  // Read-only adds `noload`: a disk a VM had mounted is read as it is, its journal not replayed.
  await run('mount', ['-t', 'ext4', '-o', `loop,nosuid,nodev,noatime${opts.readOnly ? ',ro,noload' : ''}`, image, target]);
}

/** Below this much free space (or this few inodes) a file system counts as full: nothing useful fits. */
const FULL_BELOW_BYTES = 1 << 20;
const FULL_BELOW_INODES = 16;

/**
 * Bytes used and size of the file system at `mountpoint`, as `df` counts them (used = size - free,
 * so blocks reserved for root count as used).
 */
export async function filesystemUsage(mountpoint: string): Promise<{ usedBytes: number; totalBytes: number }> {
  // Synchronous: a local file system answers from its superblock in microseconds (the usage sampler
  // asks this of every running task every few seconds; the async call costs a thread-pool trip).
  const s = statfsSync(mountpoint);
  return { usedBytes: (s.blocks - s.bfree) * s.bsize, totalBytes: s.blocks * s.bsize };
}

/** True when the file system at `mountpoint` has (next to) no space or inodes left: a write would get ENOSPC. */
export async function isFilesystemFull(mountpoint: string): Promise<boolean> {
  const s = await statfs(mountpoint);
  return s.bavail * s.bsize < FULL_BELOW_BYTES || s.ffree < FULL_BELOW_INODES;
}
