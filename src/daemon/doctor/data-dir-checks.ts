import { dirname, join } from 'node:path';
import type { HostSystem } from './host-system.js';
import { DOCS, type Check, type DoctorContext } from './check.js';

const GiB = 1024 ** 3;
export const DISK_WARN_BYTES = 5 * GiB;
export const DISK_FAIL_BYTES = 1 * GiB;

/** `path` itself if it exists, else its nearest existing ancestor (where prismd's mkdir would start). */
export async function nearestExisting(sys: HostSystem, path: string): Promise<string> {
  let p = path;
  while (!(await sys.stat(p)) && dirname(p) !== p) p = dirname(p);
  return p;
}

/** prismd makes the data dir (mode 0700) and writes its store, pid file, tasks and volumes there. */
export async function checkDataDir(ctx: DoctorContext): Promise<Check> {
  const { sys } = ctx;
  const dir = ctx.cfg.dataDir;
  const fix = 'run prismd as root, or choose a writable --data-dir';
  const st = await sys.stat(dir);
  if (st && st.kind !== 'dir') return { name: 'data dir', status: 'fail', detail: `${dir} is not a directory`, fix };
  if (!st) {
    const parent = await nearestExisting(sys, dir);
    if (await sys.writable(parent)) return { name: 'data dir', status: 'ok', detail: `${dir} does not exist yet; prismd will make it (${parent} is writable)` };
    return { name: 'data dir', status: 'fail', detail: `${dir} does not exist and cannot be made: ${parent} is not writable`, fix };
  }
  if (!(await sys.writable(dir))) return { name: 'data dir', status: 'fail', detail: `${dir} is not writable`, fix };
  const pid = Number((await sys.readFile(join(dir, 'prismd.pid')))?.trim());
  const running = Number.isInteger(pid) && pid > 0 && sys.processAlive(pid) ? `; a prismd (pid ${pid}) is using it` : '';
  return { name: 'data dir', status: 'ok', detail: `${dir} is writable${running}` };
}

/** Images, image disks and each sandbox's writable disk live in the data dir. */
export async function checkDiskSpace(ctx: DoctorContext): Promise<Check> {
  const where = await nearestExisting(ctx.sys, ctx.cfg.dataDir);
  let free: number;
  try {
    free = await ctx.sys.freeBytes(where);
  } catch (e) {
    return { name: 'disk space', status: 'warn', detail: `cannot read the free space of ${where}: ${(e as Error).message}`, fix: `${DOCS}#disk-space` };
  }
  const detail = `${(free / GiB).toFixed(1)} GiB free on the filesystem of ${where}`;
  const fix = 'free space there, or choose a --data-dir on a larger filesystem (images and sandbox disks live in it)';
  if (free < DISK_FAIL_BYTES) return { name: 'disk space', status: 'fail', detail: `${detail} (under 1 GiB: sandboxes cannot be made)`, fix };
  if (free < DISK_WARN_BYTES) return { name: 'disk space', status: 'warn', detail: `${detail} (under 5 GiB)`, fix };
  return { name: 'disk space', status: 'ok', detail };
}
