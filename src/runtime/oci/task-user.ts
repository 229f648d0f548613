import { constants } from 'node:fs';
import { lstat, open } from 'node:fs/promises';
import { join } from 'node:path';
import { parseTaskUser, type TaskUser } from '../task-user.js';

/**
 * Reads a file of the task's rootfs from the host without following symlinks: an image's
 * `/etc/passwd -> /etc/shadow` must not make the host read its own files. Missing -> ''.
 */
async function readImageFile(rootfs: string, rel: string): Promise<string> {
  const dir = await lstat(join(rootfs, 'etc')).catch(() => null);
  if (!dir?.isDirectory()) return '';
  const fh = await open(join(rootfs, rel), constants.O_RDONLY | constants.O_NOFOLLOW).catch(() => null);
  if (!fh) return '';
  try {
    const st = await fh.stat();
    return st.isFile() && st.size < 4 << 20 ? await fh.readFile('utf8') : '';
  } finally {
    await fh.close();
  }
}

/** `user[:group]` (names or numeric ids) resolved in the task's rootfs, Docker's rules. */
export async function resolveTaskUser(rootfs: string, spec: string): Promise<TaskUser> {
  return parseTaskUser(spec, await readImageFile(rootfs, 'etc/passwd'), await readImageFile(rootfs, 'etc/group'));
}
