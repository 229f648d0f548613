import { spawn } from 'node:child_process';
import { closeSync, existsSync, openSync } from 'node:fs';
import { mkdir, readdir, readFile, rmdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { PrismError } from '../../core/errors.js';

/**
 * The host side of a microVM: the QEMU process (detached, so it survives prismd) and its cgroup v1
 * `prism-vm/<id>` (memory, pids, cpuacct). A pid is only trusted while its command line still names
 * the task's own socket, so a recycled pid is never signalled.
 */

const CGROUP_ROOT = '/sys/fs/cgroup';
const CONTROLLERS = ['memory', 'pids', 'cpuacct'] as const;
/**
 * Hierarchies without controllers that systemd finds a unit's processes in: its own v1 `name=systemd`
 * and, on hybrid hosts, the cgroup2 mount beside the v1 ones. A QEMU left in prismd's there would die
 * with prismd.service (KillMode=mixed kills what is left in the unit's cgroup; docs/install.md), so it
 * moves to `prism-vm/<id>` in them too, as runc's cgroupfs driver does with oci tasks.
 */
const TRACKING = ['systemd', 'unified'] as const;

/** Every hierarchy a VM has a `prism-vm/<id>` cgroup in on this host. */
export function vmHierarchies(): string[] {
  return [...CONTROLLERS, ...TRACKING.filter((h) => existsSync(join(CGROUP_ROOT, h, 'cgroup.procs')))];
}
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export function vmCgroupDir(controller: string, id: string): string {
  return join(CGROUP_ROOT, controller, 'prism-vm', id);
}

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

export interface VmCgroupLimits {
  memoryBytes: number;
  pids: number;
}

/** Creates `prism-vm/<id>` in each hierarchy, sets the limits and moves `pid` (all its threads) in. */
export async function enterCgroup(id: string, pid: number, limits: VmCgroupLimits): Promise<void> {
  for (const c of vmHierarchies()) {
    const dir = vmCgroupDir(c, id);
    await mkdir(dir, { recursive: true });
    if (c === 'memory') await writeFile(join(dir, 'memory.limit_in_bytes'), String(limits.memoryBytes));
    if (c === 'pids') await writeFile(join(dir, 'pids.max'), String(limits.pids));
    await writeFile(join(dir, 'cgroup.procs'), String(pid));
  }
}

export function hasCgroupV1(): boolean {
  return CONTROLLERS.every((c) => existsSync(join(CGROUP_ROOT, c)));
}

/** Removes the task's cgroups; rmdir is EBUSY until the dying QEMU has left, so it retries. */
export async function removeCgroup(id: string, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (const c of vmHierarchies()) {
    for (;;) {
      try {
        await rmdir(vmCgroupDir(c, id));
        break;
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code === 'ENOENT') break;
        if (Date.now() > deadline) throw new PrismError('INTERNAL', `cgroup ${vmCgroupDir(c, id)} still busy`, { cause: e });
        await sleep(50);
      }
    }
  }
}

async function readNumber(file: string): Promise<number> {
  const n = Number((await readFile(file, 'utf8')).trim());
  return Number.isFinite(n) ? n : 0;
}

/** Host-side usage of the VM: QEMU's memory (guest RAM it touched + overhead), CPU time and threads. */
export async function readVmCgroup(id: string): Promise<{ memoryBytes: number; cpuUsageNs: number; threads: number }> {
  const [memoryBytes, cpuUsageNs, threads] = await Promise.all([
    readNumber(join(vmCgroupDir('memory', id), 'memory.usage_in_bytes')),
    readNumber(join(vmCgroupDir('cpuacct', id), 'cpuacct.usage')),
    readNumber(join(vmCgroupDir('pids', id), 'pids.current')),
  ]);
  return { memoryBytes, cpuUsageNs, threads };
}

/**
 * Task ids with a VM cgroup whose QEMU runs on files under `tasksDir` (for orphan listing). The cgroup
 * tree is host-wide, so another prismd's VMs (another data dir on the same host) are left out: their
 * QEMU command lines name that prismd's task directory, not ours. Empty cgroups are left out too, since
 * they may be another prismd's create in progress.
 */
export async function listVmCgroups(tasksDir: string): Promise<string[]> {
  const entries = await readdir(join(CGROUP_ROOT, 'memory', 'prism-vm'), { withFileTypes: true }).catch(() => []);
  const mine: string[] = [];
  for (const e of entries) {
    if (!e.isDirectory()) continue;
    const pids = (await readFile(join(CGROUP_ROOT, 'memory', 'prism-vm', e.name, 'cgroup.procs'), 'utf8').catch(() => '')).split('\n').filter(Boolean);
    for (const pid of pids) {
      const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
      if (cmdline.includes(`${tasksDir}/`)) {
        mine.push(e.name);
        break;
      }
    }
  }
  return mine;
}
