import { existsSync } from 'node:fs';
import { readFile, readdir, rmdir } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * cgroup v1 files of a task. runc puts a task with cgroupsPath `/prism/<id>` under
 * `<root>/<controller>/prism/<id>` for every controller; on hosts where controllers are co-mounted
 * (`cpu,cpuacct`) the per-controller names are symlinks, so these paths still resolve.
 */
export const CGROUP_ROOT = '/sys/fs/cgroup';

export function cgroupDir(controller: string, id: string): string {
  return join(CGROUP_ROOT, controller, 'prism', id);
}

/** True when the host exposes the v1 memory controller that stats and OOM detection read. */
export function hasCgroupV1Memory(): boolean {
  return existsSync(join(CGROUP_ROOT, 'memory', 'memory.limit_in_bytes'));
}

/** Swap accounting is on; only then may a spec set memory.swap (runc fails otherwise). */
export function hasSwapAccounting(): boolean {
  return existsSync(join(CGROUP_ROOT, 'memory', 'memory.memsw.limit_in_bytes'));
}

async function readNumber(file: string): Promise<number> {
  const text = await readFile(file, 'utf8');
  const n = Number(text.trim());
  return Number.isFinite(n) ? n : 0;
}

export interface CgroupStats {
  memoryBytes: number;
  memoryLimitBytes: number;
  cpuUsageNs: number;
  pids: number;
}

/** Throws (ENOENT) when the task has no cgroup, i.e. is not running. */
export async function readStats(id: string): Promise<CgroupStats> {
  const [memoryBytes, memoryLimitBytes, cpuUsageNs, pids] = await Promise.all([
    readNumber(join(cgroupDir('memory', id), 'memory.usage_in_bytes')),
    readNumber(join(cgroupDir('memory', id), 'memory.limit_in_bytes')),
    readNumber(join(cgroupDir('cpuacct', id), 'cpuacct.usage')),
    readNumber(join(cgroupDir('pids', id), 'pids.current')),
  ]);
  return { memoryBytes, memoryLimitBytes, cpuUsageNs, pids };
}

/**
 * How many times the OOM killer has fired in the task's memory cgroup (`oom_kill` in
 * memory.oom_control, kernel >= 4.13). Falls back to memory.failcnt, which counts limit hits and so
 * only says that an OOM kill was possible. Returns -1 when neither can be read.
 */
export async function readOomKills(id: string): Promise<number> {
  const dir = cgroupDir('memory', id);
  try {
    const text = await readFile(join(dir, 'memory.oom_control'), 'utf8');
    const m = /^oom_kill (\d+)$/m.exec(text);
    if (m) return Number(m[1]);
    return await readNumber(join(dir, 'memory.failcnt'));
  } catch {
    return -1;
  }
}

/**
 * Removes the task's cgroup directories that runc left behind (e.g. after a crash between create and
 * delete). rmdir fails with EBUSY while a process is still inside, so it retries for a while.
 */
export async function removeCgroups(id: string, timeoutMs = 5_000): Promise<string[]> {
  const controllers = await readdir(CGROUP_ROOT).catch(() => [] as string[]);
  const deadline = Date.now() + timeoutMs;
  const left: string[] = [];
  for (const controller of controllers) {
    const dir = cgroupDir(controller, id);
    for (;;) {
      try {
        await rmdir(dir);
        break;
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code === 'ENOENT' || code === 'ENOTDIR') break;
        if (Date.now() > deadline) {
          left.push(dir);
          break;
        }
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  }
  return left;
}
