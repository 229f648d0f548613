import { readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { startupRefusal } from './startup-refusal.js';

/** One daemon per data dir: a pid file, taken over only when its owner is gone. */
export async function acquirePidLock(dataDir: string): Promise<() => Promise<void>> {
  const file = join(dataDir, 'prismd.pid');
  try {
    await writeFile(file, String(process.pid), { flag: 'wx' });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    const other = Number((await readFile(file, 'utf8')).trim());
    if (other && other !== process.pid && isAlive(other)) {
      throw startupRefusal(`another prismd (pid ${other}) is using ${dataDir} (stop it, or choose another --data-dir)`);
    }
    await writeFile(file, String(process.pid));
  }
  return async () => {
    await rm(file, { force: true });
  };
}

/** Whether process `pid` exists (EPERM: it does, owned by someone else). */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}
