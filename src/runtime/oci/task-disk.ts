import { makeSparseExt4 } from '../../images/rootfs/ext4-disk.js';
import { filesystemUsage, isFilesystemFull, mountExt4Image } from '../host-mounts.js';

/**
 * The writable layer of an oci task lives on its own filesystem so that `diskMb` holds: a sparse ext4
 * image file, loop-mounted, holding overlay's upper and work dirs. A task that fills it gets ENOSPC
 * and the host's disk keeps its space; only the blocks written use host disk.
 *
 * No journal: a sandbox's scratch layer does not need crash consistency beyond what an unclean stop
 * already loses.
 */
export async function makeTaskDisk(image: string, sizeMb: number): Promise<void> {
  await makeSparseExt4(image, sizeMb, { label: 'prism-rw', journal: false });
}

/** Loop-mounts the image (see mountExt4Image). nosuid/nodev hold for the upper dir itself; the overlay on top is a mount of its own. */
export async function mountTaskDisk(image: string, target: string): Promise<void> {
  await mountExt4Image(image, target);
}

/** True when the task's disk has (next to) no space or inodes left: a write would get ENOSPC. */
export const isDiskFull = isFilesystemFull;

/** Bytes used and size of the task's disk (its writable layer). */
export const diskUsage = filesystemUsage;
