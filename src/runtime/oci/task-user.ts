import { constants } from 'node:fs';
import { lstat, open } from 'node:fs/promises';
import { join } from 'node:path';
import { PrismError } from '../../core/errors.js';

/** The user commands run as, resolved against the image's own /etc/passwd and /etc/group. */
export interface TaskUser {
  uid: number;
  gid: number;
  groups: number[];
  home: string;
}

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

const NUMERIC = /^\d+$/;

/** `user[:group]` as in an image config's User (names or numeric ids), Docker's rules. */
export async function resolveTaskUser(rootfs: string, spec: string): Promise<TaskUser> {
  const [userPart = '', groupPart] = spec.split(':', 2);
  if (userPart === '') throw new PrismError('INVALID_ARGUMENT', `user '${spec}' is empty`);
  const passwd = (await readImageFile(rootfs, 'etc/passwd')).split('\n').map((l) => l.split(':'));
  const groupLines = (await readImageFile(rootfs, 'etc/group')).split('\n').map((l) => l.split(':'));
  const entry = passwd.find((f) => f.length >= 7 && (NUMERIC.test(userPart) ? f[2] === userPart : f[0] === userPart));
  if (!entry && !NUMERIC.test(userPart)) {
    throw new PrismError('INVALID_ARGUMENT', `user '${userPart}' is not in the image's /etc/passwd`);
  }
  const uid = entry ? Number(entry[2]) : Number(userPart);
  let gid = entry ? Number(entry[3]) : 0;
  if (groupPart !== undefined && groupPart !== '') {
    if (NUMERIC.test(groupPart)) gid = Number(groupPart);
    else {
      const g = groupLines.find((f) => f.length >= 3 && f[0] === groupPart);
      if (!g) throw new PrismError('INVALID_ARGUMENT', `group '${groupPart}' is not in the image's /etc/group`);
      gid = Number(g[2]);
    }
  }
  const name = entry?.[0];
  const groups = name
    ? groupLines.filter((f) => f.length >= 4 && (f[3] ?? '').split(',').includes(name)).map((f) => Number(f[2]))
    : [];
  if (![uid, gid, ...groups].every((n) => Number.isSafeInteger(n) && n >= 0 && n < 2 ** 32)) {
    throw new PrismError('INVALID_ARGUMENT', `user '${spec}' resolves to invalid ids`);
  }
  return { uid, gid, groups: [...new Set([gid, ...groups])], home: entry?.[5] || '/' };
}

/** The agent's wire form: "uid gid g1,g2". */
export function userSpec(u: TaskUser): string {
  return `${u.uid} ${u.gid} ${u.groups.join(',')}`;
}
