import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { PrismError } from '../../core/errors.js';
import type { TaskSpec } from '../driver.js';
import type { AgentConnection } from './agent-connection.js';
import { defaultCmdline, type GuestFiles } from './guest-files.js';
import { volumeSerial, type Accelerator } from './qemu-args.js';
import type { TaskCgroups } from '../cgroups/cgroups.js';
import type { Vmm, VmmStart } from './vmm.js';
import { VM_TAP, type GuestNic } from './vm-network.js';

/** The files of one VM: `<tasksDir>/<id>/` for a task. */
export interface TaskPaths {
  task: string;
  rwDisk: string;
  agentSocket: string;
  qmpSocket: string;
  pidFile: string;
  consoleLog: string;
  qemuLog: string;
  /**
   * Present when the VM was started under another directory (a warm-pool VM, moved in whole): the
   * agent socket path on QEMU's command line, which is what identifies that QEMU (see vmMarker).
   */
  origin: string;
  /** A paused task's saved VM (devices, and memory unless `pausedMem` is there); present only while it is paused. */
  pausedState: string;
  /** A paused task's RAM as a memory image (Vmm.saveImage), when its VMM could write one. */
  pausedMem: string;
}

export function taskPaths(tasksDir: string, id: string): TaskPaths {
  const task = join(tasksDir, id);
  return {
    task, rwDisk: join(task, 'rw.ext4'), agentSocket: join(task, 'agent.sock'), qmpSocket: join(task, 'qmp.sock'),
    pidFile: join(task, 'qemu.pid'), consoleLog: join(task, 'console.log'), qemuLog: join(task, 'qemu.log'), origin: join(task, 'qemu.origin'),
    pausedState: join(task, 'paused.state'), pausedMem: join(task, 'paused.mem'),
  };
}

/** What the VMM's command line names for this VM (isQemuAlive's marker), as it was started. */
export async function vmMarker(p: TaskPaths, vmm: Vmm): Promise<string> {
  return (await readFile(p.origin, 'utf8').catch(() => '')).trim() || vmm.marker(p);
}

const MiB = 1 << 20;
/** QEMU's own memory beyond guest RAM: device model, I/O buffers and the TCG code cache (bounded in qemu-args). */
const QEMU_OVERHEAD_BYTES = 256 * MiB;
/** QEMU threads (vCPUs, I/O workers, RCU); the guest's own processes are limited inside the guest. */
const QEMU_MAX_THREADS = 512;

/**
 * Guest RAM: the sandbox's memory limit plus room for the guest kernel, page cache and the agent. The
 * limit itself is enforced on the commands by a cgroup inside the guest (see the agent's `M`), so a
 * memory hog meets the guest's OOM killer at the sandbox's limit, as in a container.
 */
export const GUEST_OVERHEAD_MB = 128;
export function guestMemoryMb(sandboxMemoryMb: number): number {
  return sandboxMemoryMb + GUEST_OVERHEAD_MB;
}

/**
 * Everything that shapes a VM up to the agent's `booted` hello. VMs of one shape are interchangeable
 * until `M`, which is what lets one template snapshot serve many tasks; so no per-task value
 * (hostname, paths of sockets or the writable disk) belongs here, nor on the kernel command line.
 */
export interface VmShape {
  files: GuestFiles;
  accel: Accelerator;
  imageDisk: string;
  /** Guest RAM (see guestMemoryMb). */
  memoryMb: number;
  cpus: number;
  cmdline: string;
  /** The writable disk's size: the guest reads the capacity at boot, so a restore needs the same. */
  writableDiskMb: number;
}

export async function vmShape(o: { files: GuestFiles; accel: Accelerator; imageDisk: string; spec: TaskSpec; writableDiskMb: number }): Promise<VmShape> {
  return {
    files: o.files, accel: o.accel, imageDisk: o.imageDisk, memoryMb: guestMemoryMb(o.spec.memoryMb),
    cpus: Math.max(1, Math.ceil(o.spec.cpus)), writableDiskMb: o.writableDiskMb,
    cmdline: await defaultCmdline({ tcg: o.accel === 'tcg', pvh: o.files.pvh }),
  };
}

export interface BootOptions {
  shape: VmShape;
  paths: TaskPaths;
  vmm: Vmm;
  /** Not yet connected; connected here. */
  conn: AgentConnection;
  bootTimeoutMs: number;
  /** Restore this template snapshot instead of booting (see vm-snapshot.ts). */
  incoming?: string;
  /** With `incoming`: the memory image saved with it (Vmm.saveImage) and how the VM takes it. */
  memoryImage?: VmmStart['memoryImage'];
  /** With `incoming`: how long loading it may take (VmmStart.restoreTimeoutMs). */
  restoreTimeoutMs?: number;
  /** The task to limit and mount (`M`); absent for a template VM, which must stay at `booted`. */
  spec?: TaskSpec;
  /** The host cgroups of VMs, in which a task's VM is limited (given with `spec`). */
  cgroups?: TaskCgroups;
  /** A NIC in the task's network namespace (vm-network.ts), configured by `N` after `M`. */
  network?: { netnsPath: string; nic: GuestNic; nameservers: string[] };
}

/**
 * Starts QEMU detached (booting, or restoring `incoming`), moves a task's VM into its cgroup, waits
 * for the agent's hello (failing early if QEMU exits, with the tail of its log) and, for a task,
 * mounts the root file system and its volumes. On failure the caller tears down: the pid file names the QEMU to kill.
 */
export async function bootVm(o: BootOptions): Promise<void> {
  const { shape, paths: p, spec } = o;
  await Promise.all([p.agentSocket, p.qmpSocket, p.pidFile, p.consoleLog, p.origin].map((f) => rm(f, { force: true })));
  const net = o.network;
  const volumes = (spec?.volumes ?? []).map((v) => ({ image: v.image, readOnly: v.readOnly }));
  const cg = spec && o.cgroups ? { cgroups: o.cgroups, limits: vmLimits(shape) } : undefined;
  const started = o.vmm.start({
    shape, paths: p, ...(o.incoming ? { incoming: o.incoming } : {}), ...(o.incoming && o.memoryImage ? { memoryImage: o.memoryImage } : {}),
    ...(o.incoming && o.restoreTimeoutMs ? { restoreTimeoutMs: o.restoreTimeoutMs } : {}),
    ...(cg && spec ? { launch: (argv: string[]) => cg.cgroups.launchCommand(spec.id, cg.limits, argv) } : {}),
    ...(net ? { network: { netnsPath: net.netnsPath, tap: VM_TAP, mac: net.nic.mac } } : {}),
    ...(volumes.length ? { volumes } : {}),
  });
  const vm = await started.catch(async (e: unknown) => {
    throw new PrismError('INTERNAL', `${o.vmm.name} failed to ${o.incoming ? 'restore' : 'boot'}: ${(e as Error).message}${await logTail(p)}`, { cause: e });
  });
  const died = vm.exited.then(async (how) => {
    throw new PrismError('INTERNAL', `${o.vmm.name} exited during ${o.incoming ? 'restore' : 'boot'} (${how})${await logTail(p)}`);
  });
  died.catch(() => undefined); // after boot, an exit is observed by stop and inspect instead
  if (spec && o.cgroups) await enterTaskCgroup(o.cgroups, spec, shape, vm.pid);
  const state = await Promise.race([o.conn.connect({ timeoutMs: o.bootTimeoutMs }), died]);
  if (!spec) {
    if (state !== 'booted') throw new PrismError('INTERNAL', `a fresh VM's agent reported ${state}, not booted`);
  } else if (state === 'booted') {
    await Promise.race([mountTask(o.conn, spec), died]);
    if (net) await Promise.race([o.conn.network({ address: net.nic.address, gateway: net.nic.gateway, mtu: net.nic.mtu, nameservers: net.nameservers }), died]);
    await Promise.race([mountVolumes(o.conn, spec), died]);
  }
}

/** `V` for each of the task's volumes, in the order their disks are on the VMM's command line. */
export async function mountVolumes(conn: AgentConnection, spec: TaskSpec): Promise<void> {
  for (const [i, v] of (spec.volumes ?? []).entries()) await conn.mountVolume(volumeSerial(i), v.mountPath, v.readOnly);
}

async function logTail(p: TaskPaths): Promise<string> {
  const log = (await readFile(p.qemuLog, 'utf8').catch(() => '')).trim().split('\n').slice(-3).join(' | ');
  return log ? `: ${log}` : '';
}

/** A task's QEMU on the host: guest RAM + QEMU's overhead, and its threads. */
function vmLimits(shape: VmShape): { memoryBytes: number; pids: number } {
  return { memoryBytes: shape.memoryMb * MiB + QEMU_OVERHEAD_BYTES, pids: QEMU_MAX_THREADS };
}

/** Puts a task's QEMU into its host cgroup of kind `prism-vm` (or checks it started there). */
export function enterTaskCgroup(cgroups: TaskCgroups, spec: TaskSpec, shape: VmShape, pid: number): Promise<void> {
  return cgroups.enter(spec.id, pid, vmLimits(shape));
}

/** `M` for a task: its hostname and limits (the agent joins the cgroup as the task's init, as in a container). */
export function mountTask(conn: AgentConnection, spec: TaskSpec): Promise<void> {
  return conn.mount(spec.hostname, { memoryBytes: spec.memoryMb * MiB, pids: spec.pidsLimit, openFiles: spec.maxOpenFiles });
}

/** Creates the workdir in the guest (first boot only: it then lives on the writable disk). */
export async function makeWorkdir(conn: AgentConnection, workdir: string): Promise<void> {
  if (workdir === '/') return;
  const why = await runInGuest(conn, ['mkdir', '-p', '--', workdir]);
  if (why !== null) throw new PrismError('FAILED_PRECONDITION', `cannot create workdir ${workdir}: ${why}`);
}

/** Runs a setup command as root; null when it succeeded, else its stderr (or exit status). */
async function runInGuest(conn: AgentConnection, argv: string[]): Promise<string | null> {
  const proc = conn.exec({ argv, env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin' }, cwd: '/', stdin: false });
  const err: Buffer[] = [];
  proc.stdout.resume();
  proc.stderr.on('data', (c: Buffer) => err.push(c));
  const exit = await proc.exit;
  return exit.exitCode === 0 ? null : Buffer.concat(err).toString().trim() || `exit ${exit.exitCode}`;
}
