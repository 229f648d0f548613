import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { TaskVolume } from './driver.js';
import { isFilesystemFull, isMounted, mountExt4Image, unmountAll } from './host-mounts.js';

/**
 * TaskSpec.volumes for drivers whose tasks share the host's kernel (oci, docker): each volume's image
 * is loop-mounted on the host at `<dir>/<index>` and the driver bind-mounts that into the task,
 * read-only when asked. The host mount itself is always read-write: every mount of one image shares
 * one file system instance (mountExt4Image), whose read-only state cannot differ between mounts, so a
 * read-only attachment is enforced by its bind into the task, per mount.
 */

/** `<dir>/<index>` of each volume, loop-mounted; already mounted ones are kept (start after a stop). */
export async function mountHostVolumes(volumes: TaskVolume[], dir: string): Promise<string[]> {
  const sources: string[] = [];
  for (const [i, v] of volumes.entries()) {
    const target = hostVolumeDir(dir, i);
    await mkdir(target, { recursive: true, mode: 0o700 });
    if (!(await isMounted(target))) await mountExt4Image(v.image, target);
    sources.push(target);
  }
  return sources;
}

export function hostVolumeDir(dir: string, index: number): string {
  return join(dir, String(index));
}

/** Unmounts every volume under `dir` (their loop devices go with the last mount) and removes it. */
export async function unmountHostVolumes(dir: string): Promise<void> {
  await unmountAll(dir);
  await rm(dir, { recursive: true, force: true });
}

/** Whether any read-write volume is full: a command that failed may have met ENOSPC there. */
export async function anyVolumeFull(volumes: TaskVolume[], dir: string): Promise<boolean> {
  for (const [i, v] of volumes.entries()) {
    if (!v.readOnly && (await isFilesystemFull(hostVolumeDir(dir, i)).catch(() => false))) return true;
  }
  return false;
}
