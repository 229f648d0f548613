import { execFile } from 'node:child_process';
import { open, statfs, truncate } from 'node:fs/promises';
import { PrismError } from '../../core/errors.js';

const MiB = 1 << 20;
/** Below this much free space (or this few inodes) the disk counts as full: nothing useful fits. */
const FULL_BELOW_BYTES = MiB;
const FULL_BELOW_INODES = 16;

function run(cmd: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { timeout: 30_000 }, (err, _stdout, stderr) => {
      if (err) reject(new PrismError('INTERNAL', `${cmd} ${args.join(' ')}: ${stderr.trim() || err.message}`, { cause: err }));
      else resolve();
    });
  });
}

/**
 * The writable layer of an oci task lives on its own filesystem so that `diskMb` holds: a sparse ext4
 * image file, loop-mounted, holding overlay's upper and work dirs. A task that fills it gets ENOSPC
 * and the host's disk keeps its space; only the blocks written use host disk.
 *
 * mkfs options keep the create path short (~30-60 ms for any size): no journal (a sandbox's scratch
 * layer does not need crash consistency beyond what an unclean stop already loses), lazy inode table
 * and journal init, no discard pass over the file, and no blocks reserved for root (the task is root).
 */
export async function makeTaskDisk(image: string, sizeMb: number): Promise<void> {
  await (await open(image, 'wx', 0o600)).close();
  await truncate(image, sizeMb * MiB);
  await run('mkfs.ext4', ['-q', '-F', '-m', '0', '-O', '^has_journal', '-E', 'lazy_itable_init=1,nodiscard', '-L', 'prism-rw', image]);
}

/**
 * Loop-mounts the image. mount(8) attaches a loop device with autoclear, so the device goes away with
 * the last unmount (also a lazy one) and nothing else has to track it. nosuid/nodev hold for the
 * upper dir itself; the overlay on top is a mount of its own.
 */
export async function mountTaskDisk(image: string, target: string): Promise<void> {
  await run('mount', ['-t', 'ext4', '-o', 'loop,nosuid,nodev,noatime', image, target]);
}

/** True when the task's disk has (next to) no space or inodes left: a write would get ENOSPC. */
export async function isDiskFull(mountpoint: string): Promise<boolean> {
  const s = await statfs(mountpoint);
  return s.bavail * s.bsize < FULL_BELOW_BYTES || s.ffree < FULL_BELOW_INODES;
}
