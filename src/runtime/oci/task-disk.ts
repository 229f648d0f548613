import { runChecked } from '../command.js';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { makeSparseExt4 } from '../../images/rootfs/ext4-disk.js';
import { filesystemUsage, isFilesystemFull, mountExt4Image, mountNewExt4Image } from '../host-mounts.js';

/**
 * The writable layer of an oci task lives on its own filesystem so that `diskMb` holds: a sparse ext4
 * image file, loop-mounted, holding overlay's upper and work dirs. A task that fills it gets ENOSPC
 * and the host's disk keeps its space; only the blocks written use host disk.
 *
 * No journal: a sandbox's scratch layer does not need crash consistency beyond what an unclean stop
 * already loses.
 */
export async function makeTaskDisk(image: string, sizeMb: number, templatesDir?: string): Promise<void> {
  if (!templatesDir) {
    await makeSparseExt4(image, sizeMb, { label: 'prism-rw', journal: false });
    return;
  }
  // mkfs.ext4 takes 15-30 ms; a sparse copy of an empty file system of the same size made once, 1-3.
  const template = join(templatesDir, `rw-${TEMPLATE_VERSION}-${sizeMb}.ext4`);
  if (!existsSync(template)) {
    await mkdir(templatesDir, { recursive: true });
    const tmp = `${template}.${process.pid}.${randomBytes(4).toString('hex')}`;
    try {
      await makeSparseExt4(tmp, sizeMb, { label: 'prism-rw', journal: false });
      await rename(tmp, template); // whole or absent: concurrent makers each rename a complete one
    } finally {
      await rm(tmp, { force: true });
    }
  }
  await runChecked('cp', ['--sparse=always', '--reflink=auto', '--', template, image], 'copying the empty writable disk');
}

/** Names the empty-disk templates: a change to how task disks are made must not reuse old ones. */
const TEMPLATE_VERSION = 'v1';

/** Loop-mounts the disk made by makeTaskDisk just now (see mountNewExt4Image). */
export async function mountNewTaskDisk(image: string, target: string, initBinary: string): Promise<void> {
  await mountNewExt4Image(image, target, initBinary);
}

/** Loop-mounts the image (see mountExt4Image). nosuid/nodev hold for the upper dir itself; the overlay on top is a mount of its own. */
export async function mountTaskDisk(image: string, target: string): Promise<void> {
  await mountExt4Image(image, target);
}

/** True when the task's disk has (next to) no space or inodes left: a write would get ENOSPC. */
export const isDiskFull = isFilesystemFull;

/** Bytes used and size of the task's disk (its writable layer). */
export const diskUsage = filesystemUsage;
