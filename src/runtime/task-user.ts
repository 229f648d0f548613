import { PrismError } from '../core/errors.js';

/** The user commands run as, resolved against the image's own /etc/passwd and /etc/group. */
export interface TaskUser {
  uid: number;
  gid: number;
  groups: number[];
  home: string;
}

const NUMERIC = /^\d+$/;

/**
 * `user[:group]` as in an image config's User (names or numeric ids), Docker's rules, against the
 * contents of the image's /etc/passwd and /etc/group ('' when it has none). However a driver reads
 * them, it must not follow symlinks out of the task's root.
 */
export function parseTaskUser(spec: string, passwdText: string, groupText: string): TaskUser {
  const [userPart = '', groupPart] = spec.split(':', 2);
  if (userPart === '') throw new PrismError('INVALID_ARGUMENT', `user '${spec}' is empty`);
  const passwd = passwdText.split('\n').map((l) => l.split(':'));
  const groupLines = groupText.split('\n').map((l) => l.split(':'));
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

/** The exec agent's wire form: "uid gid g1,g2". */
export function userSpec(u: TaskUser): string {
  return `${u.uid} ${u.gid} ${u.groups.join(',')}`;
}

/**
 * The environment of a command run as a user: a non-root user gets its passwd home as HOME unless the
 * command sets one (as Docker does); root and commands with a HOME of their own get `env` as it is.
 */
export function envWithHome(env: Record<string, string>, nonRoot: boolean, home: string): Record<string, string> {
  return nonRoot && env.HOME === undefined ? { ...env, HOME: home } : env;
}
