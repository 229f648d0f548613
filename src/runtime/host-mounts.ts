import { runChecked, runCommand } from './command.js';
import { readFile, statfs } from 'node:fs/promises';
import { statfsSync } from 'node:fs';
import { PrismError } from '../core/errors.js';

/** The host's mount table as drivers that mount on the host (oci, docker volumes) need it. */

async function run(cmd: string, args: string[]): Promise<void> {
  await runChecked(cmd, args);
}

/** Mount points of this process's mount table (mountinfo escapes space, tab, newline and backslash as octal). */
async function mountTable(): Promise<string[]> {
  const text = await readFile('/proc/self/mountinfo', 'utf8');
  return text
    .split('\n')
    .map((line) => line.split(' ')[4])
    .filter((p): p is string => p !== undefined)
    .map((p) => p.replace(/\\([0-7]{3})/g, (_m, oct: string) => String.fromCharCode(parseInt(oct, 8))));
}

/** The points of `table` at or below `prefix`, deepest first. */
function under(table: string[], prefix: string): string[] {
  const points = table.filter((p) => p === prefix || p.startsWith(prefix.endsWith('/') ? prefix : `${prefix}/`));
  return [...new Set(points)].sort((a, b) => b.length - a.length);
}

/** Mount points at or below `prefix`, deepest first, from this process's mount table. */
export async function mountsUnder(prefix: string): Promise<string[]> {
  return under(await mountTable(), prefix);
}

export async function isMounted(path: string): Promise<boolean> {
  return (await mountsUnder(path)).includes(path);
}

/**
 * Unmounts everything at or below each prefix: the prefixes' mounts in the order given (each deepest
 * first), so a caller puts what holds another busy first (an overlay before the disk under its upper
 * dir). A busy mount (a process on the host still has a file open in it) is detached lazily, so that
 * removing the directory afterwards cannot reach into it. Throws when anything is left mounted.
 * With `initBinary`, one `prism-init umount` (guest/init/host-mount.c) does it all with system calls,
 * reading the mount table itself: the table grows with every task on the host, and parsing it there
 * costs a fraction of what it costs here; else umount(8) per mount.
 */
export async function unmountAll(prefix: string | string[], opts: { initBinary?: string } = {}): Promise<void> {
  const prefixes = typeof prefix === 'string' ? [prefix] : prefix;
  if (opts.initBinary) {
    const r = await runCommand(opts.initBinary, ['umount', ...prefixes]);
    if (r.code !== 0) throw new PrismError('INTERNAL', r.stderr.toString().trim() || `unmounting under ${prefixes.join(', ')}: exited with ${r.code ?? r.signal}`);
    return;
  }
  const table = await mountTable();
  const points = [...new Set(prefixes.flatMap((p) => under(table, p)))];
  for (const point of points) {
    try {
      await run('umount', [point]);
    } catch {
      await run('umount', ['-l', point]);
    }
  }
  if (points.length === 0) return;
  const after = await mountTable();
  const left = [...new Set(prefixes.flatMap((p) => under(after, p)))];
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

/**
 * Mounts an ext4 image file made just now, which no loop device can back yet, with `prism-init
 * mount-loop` (guest/init/host-mount.c): mount(8) would first scan every loop device of the host for
 * one already backing the file, 20 ms with 1600 devices and more with each. Where the host cannot do
 * it that way (no LOOP_CONFIGURE before Linux 5.8, no device nodes), mount(8) does it.
 */
export async function mountNewExt4Image(image: string, target: string, initBinary: string): Promise<void> {
  const r = await runCommand(initBinary, ['mount-loop', image, target]);
  if (r.code === 0) return;
  if (r.code === NO_FAST_PATH) return mountExt4Image(image, target);
  throw new PrismError('INTERNAL', `mounting ${image}: ${r.stderr.toString().trim() || `exited with ${r.code ?? r.signal}`}`);
}

/** `prism-init mount-loop`'s exit code when this host needs mount(8) instead. */
const NO_FAST_PATH = 3;

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
