import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { PrismError } from '../../core/errors.js';
import type { TaskSpec } from '../driver.js';
import type { AgentConnection } from './agent-connection.js';
import { defaultCmdline, type GuestFiles } from './guest-files.js';
import { buildQemuArgs, type Accelerator } from './qemu-args.js';
import { enterCgroup, spawnQemu } from './qemu-process.js';

/** The files of one task: `<tasksDir>/<id>/`. */
export interface TaskPaths {
  task: string;
  rwDisk: string;
  agentSocket: string;
  qmpSocket: string;
  pidFile: string;
  consoleLog: string;
  qemuLog: string;
}

export function taskPaths(tasksDir: string, id: string): TaskPaths {
  const task = join(tasksDir, id);
  return {
    task, rwDisk: join(task, 'rw.ext4'), agentSocket: join(task, 'agent.sock'), qmpSocket: join(task, 'qmp.sock'),
    pidFile: join(task, 'qemu.pid'), consoleLog: join(task, 'console.log'), qemuLog: join(task, 'qemu.log'),
  };
}

const MiB = 1 << 20;
/** QEMU's own memory beyond guest RAM: device model, I/O buffers and the TCG code cache (bounded in qemu-args). */
const QEMU_OVERHEAD_BYTES = 256 * MiB;
/** QEMU threads (vCPUs, I/O workers, RCU); the guest's own processes are limited inside the guest. */
const QEMU_MAX_THREADS = 512;

export interface BootOptions {
  spec: TaskSpec;
  paths: TaskPaths;
  files: GuestFiles;
  accel: Accelerator;
  imageDisk: string;
  qemuBinary: string;
  /** Not yet connected; connected here. */
  conn: AgentConnection;
  bootTimeoutMs: number;
  /** Create spec.workdir in the guest (first boot only: it then lives on the writable disk). */
  makeWorkdir: boolean;
}

/**
 * Starts QEMU detached, moves it into its cgroup, waits for the agent's hello (failing early if QEMU
 * exits, with the tail of its log), mounts the root file system and creates the workdir. On failure
 * the caller tears down: the pid file names the QEMU to kill.
 */
/**
 * Guest RAM: the sandbox's memory limit plus room for the guest kernel, page cache and the agent. The
 * limit itself is enforced on the commands by a cgroup inside the guest (see the agent's `M`), so a
 * memory hog meets the guest's OOM killer at the sandbox's limit, as in a container.
 */
export const GUEST_OVERHEAD_MB = 128;
export function guestMemoryMb(sandboxMemoryMb: number): number {
  return sandboxMemoryMb + GUEST_OVERHEAD_MB;
}

export async function bootVm(o: BootOptions): Promise<void> {
  const { spec, paths: p } = o;
  const cmdline = await defaultCmdline({ tcg: o.accel === 'tcg', hostname: spec.hostname, pvh: o.files.pvh });
  await Promise.all([p.agentSocket, p.qmpSocket, p.pidFile, p.consoleLog].map((f) => rm(f, { force: true })));
  const args = buildQemuArgs({
    accel: o.accel, memoryMb: guestMemoryMb(spec.memoryMb), cpus: Math.max(1, Math.ceil(spec.cpus)), kernel: o.files.kernel,
    initramfs: o.files.initramfs, cmdline, imageDisk: o.imageDisk, writableDisk: p.rwDisk, agentSocket: p.agentSocket,
    qmpSocket: p.qmpSocket, consoleLog: p.consoleLog, pidFile: p.pidFile,
  });
  const vm = await spawnQemu(o.qemuBinary, args, p.qemuLog);
  const died = vm.exited.then(async (how) => {
    const log = (await readFile(p.qemuLog, 'utf8').catch(() => '')).trim().split('\n').slice(-3).join(' | ');
    throw new PrismError('INTERNAL', `QEMU exited during boot (${how}): ${log || 'no message'}`);
  });
  died.catch(() => undefined); // after boot, an exit is observed by stop and inspect instead
  await enterCgroup(spec.id, vm.pid, { memoryBytes: guestMemoryMb(spec.memoryMb) * MiB + QEMU_OVERHEAD_BYTES, pids: QEMU_MAX_THREADS });
  const state = await Promise.race([o.conn.connect({ timeoutMs: o.bootTimeoutMs }), died]);
  if (state === 'booted') {
    // The agent counts as the task's init, as in a container: commands get the rest of pidsLimit.
    const pids = Math.max(1, spec.pidsLimit - 1);
    await Promise.race([o.conn.mount(spec.hostname, { memoryBytes: spec.memoryMb * MiB, pids }), died]);
  }
  if (o.makeWorkdir && spec.workdir !== '/') await makeWorkdir(o.conn, spec.workdir);
}

async function makeWorkdir(conn: AgentConnection, workdir: string): Promise<void> {
  const proc = conn.exec({ argv: ['mkdir', '-p', '--', workdir], env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin' }, cwd: '/', stdin: false });
  const err: Buffer[] = [];
  proc.stdout.resume();
  proc.stderr.on('data', (c: Buffer) => err.push(c));
  const exit = await proc.exit;
  if (exit.exitCode !== 0) {
    const why = Buffer.concat(err).toString().trim() || `exit ${exit.exitCode}`;
    throw new PrismError('FAILED_PRECONDITION', `cannot create workdir ${workdir}: ${why}`);
  }
}
