import { readFileSync } from 'node:fs';
import { readFile, rmdir } from 'node:fs/promises';

/** File helpers shared by the v1 and v2 cgroup implementations. */

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export async function readNumber(file: string): Promise<number> {
  const text = (await readFile(file, 'utf8')).trim();
  if (text === 'max') return 0;
  const n = Number(text);
  return Number.isFinite(n) ? n : 0;
}

/**
 * A cgroup file's text, read synchronously: the kernel makes it up on read (never a disk wait, a few
 * microseconds), while an async read costs four thread-pool round trips. For the usage sampler, which
 * reads a few files of every running task every few seconds.
 */
export function readCgroupText(file: string): string {
  return readFileSync(file, 'utf8');
}

export function readCgroupNumber(file: string): number {
  const text = readCgroupText(file).trim();
  if (text === 'max') return 0;
  const n = Number(text);
  return Number.isFinite(n) ? n : 0;
}

/** A `key value` line of a flat-keyed file (memory.events, cpu.stat, memory.oom_control); undefined when absent. */
export function keyedValue(text: string, key: string): number | undefined {
  const m = new RegExp(`^${key} (\\d+)$`, 'm').exec(text);
  return m ? Number(m[1]) : undefined;
}

/** Pids in a cgroup (`cgroup.procs`); empty when it does not exist. */
export async function cgroupPids(dir: string): Promise<number[]> {
  const text = await readFile(`${dir}/cgroup.procs`, 'utf8').catch(() => '');
  return text.split('\n').filter(Boolean).map(Number);
}

/**
 * rmdir of a cgroup, retried while it is busy (EBUSY until its last process has been reaped).
 * True when it is gone (or never existed).
 */
export async function removeDir(dir: string, deadline: number): Promise<boolean> {
  for (;;) {
    try {
      await rmdir(dir);
      return true;
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') return true;
      if (Date.now() > deadline) return false;
      await sleep(50);
    }
  }
}

export function killAll(pids: number[]): void {
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // Gone already.
    }
  }
}
