import { spawn } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { PrismError } from '../../core/errors.js';

/**
 * The host side of a microVM: the QEMU process, detached so it survives prismd (its cgroup is the
 * driver's, see cgroups/). A pid is only trusted while its command line still names the task's own
 * socket, so a recycled pid is never signalled.
 */

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export interface SpawnedQemu {
  pid: number;
  /** Resolves with QEMU's exit description if it exits while this process still owns it. */
  exited: Promise<string>;
}

/** Starts QEMU detached with stdout/stderr appended to `logFile`. */
export function spawnQemu(binary: string, args: string[], logFile: string): Promise<SpawnedQemu> {
  const log = openSync(logFile, 'a');
  try {
    const child = spawn(binary, args, { detached: true, stdio: ['ignore', log, log] });
    return new Promise((resolve, reject) => {
      child.once('error', (e) => reject(new PrismError('FAILED_PRECONDITION', `cannot run ${binary}: ${e.message}`, { cause: e })));
      child.once('spawn', () => {
        const exited = new Promise<string>((r) => child.once('exit', (code, sig) => r(sig ? `signal ${sig}` : `exit code ${code}`)));
        child.unref();
        resolve({ pid: child.pid!, exited });
      });
    });
  } finally {
    closeSync(log);
  }
}

/** True while `pid` is a live (not zombie) process whose argv contains `marker`. */
export async function isQemuAlive(pid: number | undefined, marker: string): Promise<boolean> {
  if (!pid || !Number.isInteger(pid) || pid <= 1) return false;
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
  if (!state || state === 'Z' || state === 'X') return false;
  const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
  return cmdline.includes(marker);
}

export async function readPidFile(file: string): Promise<number | undefined> {
  const n = Number((await readFile(file, 'utf8').catch(() => '')).trim());
  return Number.isInteger(n) && n > 1 ? n : undefined;
}

export async function waitExit(pid: number, marker: string, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (await isQemuAlive(pid, marker)) {
    if (Date.now() > deadline) return false;
    await sleep(25);
  }
  return true;
}

/** SIGKILLs the QEMU of a task (if it is still that QEMU) and waits until it is gone. */
export async function killQemu(pid: number | undefined, marker: string): Promise<void> {
  if (!pid || !(await isQemuAlive(pid, marker))) return;
  try {
    process.kill(pid, 'SIGKILL');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ESRCH') throw e;
  }
  if (!(await waitExit(pid, marker, 10_000))) throw new PrismError('INTERNAL', `QEMU ${pid} did not die after SIGKILL`);
}
