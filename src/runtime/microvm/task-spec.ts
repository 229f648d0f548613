import { constants } from 'node:fs';
import { lstat, open } from 'node:fs/promises';
import { join } from 'node:path';
import { PrismError } from '../../core/errors.js';
import type { TaskSpec } from '../driver.js';
import { checkHostname } from './guest-files.js';

/** What the microvm driver accepts in a TaskSpec. */

export const ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;
const NUMERIC_USER = /^(\d+)(?::(\d+))?$/;

/** Numeric `uid[:gid]` -> the agent's "uid gid groups"; names would need the image's passwd inside the guest. */
export function agentUser(user: string | undefined): string | undefined {
  if (user === undefined || user === '') return undefined;
  const m = NUMERIC_USER.exec(user);
  if (!m) throw new PrismError('FAILED_PRECONDITION', 'named users are not supported on microvm yet; use a numeric uid[:gid]');
  const gid = m[2] ?? '0';
  return `${m[1]} ${gid} ${gid}`;
}

export function validateSpec(spec: TaskSpec): void {
  if (!ID_PATTERN.test(spec.id)) throw new PrismError('INVALID_ARGUMENT', `invalid task id: ${JSON.stringify(spec.id)}`);
  if (spec.layers.length === 0) throw new PrismError('INVALID_ARGUMENT', 'a task needs at least one layer');
  if (!(spec.memoryMb >= 32 && spec.cpus > 0 && spec.pidsLimit > 0)) {
    throw new PrismError('INVALID_ARGUMENT', 'memoryMb must be >= 32, cpus and pidsLimit positive');
  }
  if (!spec.workdir.startsWith('/')) throw new PrismError('INVALID_ARGUMENT', 'workdir must be an absolute path');
  if (spec.hostname !== '') checkHostname(spec.hostname);
  agentUser(spec.user);
  const volumes = spec.volumes ?? [];
  if (volumes.length > MAX_VM_VOLUMES) throw new PrismError('INVALID_ARGUMENT', `a microVM takes at most ${MAX_VM_VOLUMES} volumes (virtio-mmio slots), got ${volumes.length}`);
  for (const v of volumes) {
    if (!v.mountPath.startsWith('/') || v.mountPath === '/' || v.mountPath.includes('\0')) {
      throw new PrismError('INVALID_ARGUMENT', `volume mountPath must be an absolute path other than /, got ${JSON.stringify(v.mountPath)}`);
    }
  }
}

/** The microvm machine's 8 virtio-mmio slots: image, writable disk, agent port and a NIC take four; volumes the rest. */
export const MAX_VM_VOLUMES = 4;

/**
 * HOME of a numeric user from the image's /etc/passwd (the top-most layer that has one; the guest agent
 * reads no passwd), else `/`. Read from the host's copy of the layers, so nothing is followed: `etc`
 * must be a real directory and `passwd` is opened with O_NOFOLLOW, or a hostile layer could point the
 * read at a host file.
 */
export async function imageHome(layers: string[], user: string | undefined): Promise<string> {
  const uid = user === undefined || user === '' ? '0' : NUMERIC_USER.exec(user)?.[1];
  if (uid === undefined) return '/';
  for (const dir of [...layers].reverse()) {
    const etc = await lstat(join(dir, 'etc')).catch(() => undefined);
    if (!etc) continue;
    if (!etc.isDirectory()) return '/';
    let text: string;
    try {
      const fh = await open(join(dir, 'etc', 'passwd'), constants.O_RDONLY | constants.O_NOFOLLOW);
      try {
        text = (await fh.readFile({ encoding: 'utf8' })).slice(0, 1 << 20);
      } finally {
        await fh.close();
      }
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') continue;
      return '/';
    }
    const line = text.split('\n').find((l) => l.split(':')[2] === uid);
    const home = line?.split(':')[5];
    return home && home.startsWith('/') ? home : '/';
  }
  return '/';
}
