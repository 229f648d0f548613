import type { Socket } from 'node:net';
import { existsSync } from 'node:fs';
import { randomUUID } from 'node:crypto';
import { readdir, readlink, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { PrismError } from '../../core/errors.js';
import { buildQemuArgs } from './qemu-args.js';
import { readPidFile, spawnQemu } from './qemu-process.js';
import { QmpClient } from './qmp.js';
import { dialUnix } from './unix-socket.js';
import type { TaskPaths } from './vm-boot.js';
import { resumeIncoming, saveVmState } from './vm-snapshot.js';
import type { Vmm, VmmProcess, VmmStart } from './vmm.js';
import { copySparse, runTool } from './vm-disks.js';
import { netnsExec } from './vm-network.js';
import { ensureRamDir } from './vm-ram.js';

/** `cat` may still be flushing the stream when QEMU reports the migration completed. */
const FLUSH_TIMEOUT_MS = 10_000;
/** Loading a saved state when the caller names no deadline (VmmStart.restoreTimeoutMs). */
const DEFAULT_RESTORE_TIMEOUT_MS = 10_000;
/** RAM files start copies from memory images (see guestMemory); vm-ram.ts sweeps ones a crash left. */
const SCRATCH_PREFIX = 'restore-';
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/**
 * QEMU's `microvm` machine (qemu-args.ts) as the {@link Vmm}: controlled over QMP on `paths.qmpSocket`,
 * the agent on a virtio-serial port whose host side is the unix socket `paths.agentSocket`, template
 * state saved with `migrate exec:cat` and restored with `-incoming` (vm-snapshot.ts).
 */
export class QemuVmm implements Vmm {
  readonly name = 'qemu' as const;

  private ramDir?: Promise<string | undefined>;

  /**
   * @param memoryDir a directory for guest RAM (qemu-args.ts `memory`), made a tmpfs if it is not one
   *   (vm-ram.ts): each VM's RAM is an unlinked shared file there, so a snapshot images it in one copy
   *   and VMs restored from that image share its pages. Absent or unusable: anonymous RAM, and memory
   *   snapshots go through a full `save`.
   */
  constructor(
    readonly binary = 'qemu-system-x86_64',
    private readonly memoryDir?: string,
  ) {}

  private memoryDirReady(): Promise<string | undefined> {
    this.ramDir ??= this.memoryDir ? ensureRamDir(this.memoryDir, SCRATCH_PREFIX) : Promise.resolve(undefined);
    return this.ramDir;
  }

  async describe(): Promise<Record<string, string>> {
    return { vmm: 'qemu', qemu: (await runTool(this.binary, ['--version'])).split('\n')[0]!.trim() };
  }

  /** The agent socket path is on QEMU's command line (`-chardev socket,path=...`). */
  marker(paths: TaskPaths): string {
    return paths.agentSocket;
  }

  async start(o: VmmStart): Promise<VmmProcess> {
    const { shape, paths: p } = o;
    const image = o.incoming ? o.memoryImage : undefined;
    const { memory, scratch } = await this.guestMemory(image);
    try {
      const args = buildQemuArgs({
        accel: shape.accel, memoryMb: shape.memoryMb, cpus: shape.cpus, kernel: shape.files.kernel, initramfs: shape.files.initramfs,
        cmdline: shape.cmdline, imageDisk: shape.imageDisk, writableDisk: p.rwDisk, agentSocket: p.agentSocket, qmpSocket: p.qmpSocket,
        consoleLog: p.consoleLog, pidFile: p.pidFile, ...(o.incoming ? { incoming: true } : {}), ...(memory ? { memory } : {}),
        ...(o.network ? { nic: { tap: o.network.tap, mac: o.network.mac } } : {}),
        ...(o.volumes ? { volumes: o.volumes } : {}),
      });
      // In the sandbox's namespace QEMU opens the tap there; nsenter execs it, so the pid is QEMU's.
      const plain = o.network ? [...netnsExec(o.network.netnsPath), this.binary, ...args] : [this.binary, ...args];
      const [bin, ...argv] = o.launch ? o.launch(plain) : plain;
      const vm = await spawnQemu(bin!, argv, p.qemuLog);
      if (o.incoming) {
        const died = vm.exited.then((how) => {
          throw new PrismError('INTERNAL', `QEMU exited while restoring (${how})`);
        });
        died.catch(() => undefined);
        await Promise.race([resumeIncoming(p.qmpSocket, o.incoming, o.restoreTimeoutMs ?? DEFAULT_RESTORE_TIMEOUT_MS, { ignoreShared: !!image }), died]);
      }
      return vm;
    } finally {
      // QEMU mapped it before it took the stream: its RAM lives on without the name, freed when it exits.
      if (scratch) await rm(scratch, { force: true });
    }
  }

  /**
   * The memory backend of a VM: a booted one gets a shared RAM file in the RAM directory (QEMU names
   * and unlinks it); one restored from a memory image either maps it copy-on-write or gets its own
   * shared copy of it there (`scratch`, which start unlinks once QEMU has it). A restore from a stream
   * with RAM in it gets anonymous RAM: loading a stream reads every page of the destination, which on
   * a shared file would allocate all of them.
   */
  private async guestMemory(image: VmmStart['memoryImage']): Promise<{ memory?: { path: string; shared: boolean }; scratch?: string }> {
    if (image?.mode === 'cow') return { memory: { path: image.path, shared: false } };
    const dir = await this.memoryDirReady();
    if (!image) return dir ? { memory: { path: dir, shared: true } } : {};
    if (!dir) return { memory: { path: image.path, shared: false } };
    const scratch = join(dir, `${SCRATCH_PREFIX}${randomUUID()}`);
    try {
      await copySparse(image.path, scratch);
    } catch (e) {
      await rm(scratch, { force: true });
      throw e;
    }
    return { memory: { path: scratch, shared: true }, scratch };
  }

  dialAgent(agentSocket: string, timeoutMs: number): Promise<Socket> {
    return dialUnix(agentSocket, timeoutMs);
  }

  async resume(paths: TaskPaths): Promise<void> {
    const qmp = await QmpClient.connect(paths.qmpSocket);
    try {
      // `postmigrate`: stopped by a completed save (saveImage), which `cont` runs on from.
      const { status } = await qmp.queryStatus();
      if (status === 'paused' || status === 'postmigrate') await qmp.execute('cont');
    } finally {
      qmp.close();
    }
  }

  async save(paths: TaskPaths, stateFile: string, timeoutMs: number, ignoreShared = false): Promise<void> {
    await saveVmState(paths.qmpSocket, stateFile, timeoutMs, { ignoreShared });
    // The migration URI renames the stream into place after `cat` finished: its presence means complete.
    const deadline = Date.now() + FLUSH_TIMEOUT_MS;
    while (!existsSync(stateFile)) {
      if (Date.now() > deadline) throw new PrismError('INTERNAL', `the snapshot stream was not written to ${stateFile}`);
      await sleep(5);
    }
  }

  async saveImage(paths: TaskPaths, stateFile: string, memoryImage: string, timeoutMs: number): Promise<boolean> {
    const pid = await readPidFile(paths.pidFile);
    const dir = await this.memoryDirReady();
    const ram = pid && dir ? await sharedRamFile(pid, dir) : undefined;
    if (!ram) return false;
    // The state appears under its name last: a state without its image would restore garbage.
    const saving = `${stateFile}.saving`;
    try {
      await this.save(paths, saving, timeoutMs, true);
      // The VM is stopped: its RAM file holds exactly what the state's devices expect.
      await copySparse(ram, `${memoryImage}.part`);
      await rename(`${memoryImage}.part`, memoryImage);
      await rename(saving, stateFile);
    } finally {
      await Promise.all([saving, `${memoryImage}.part`].map((f) => rm(f, { force: true })));
    }
    return true;
  }

  async quit(paths: TaskPaths): Promise<void> {
    const qmp = await QmpClient.connect(paths.qmpSocket, 2_000).catch(() => null);
    await qmp?.quit().catch(() => undefined);
    qmp?.close();
  }
}

/**
 * The guest RAM file of QEMU `pid`, as a path that opens it: QEMU created it in `dir` and unlinked it
 * (`qemu_back_mem.<region>.XXXXXX`), or start copied it there and unlinked it once QEMU had it, so only
 * its descriptor in /proc/<pid>/fd reaches it.
 */
export async function sharedRamFile(pid: number, dir: string): Promise<string | undefined> {
  const fds = await readdir(`/proc/${pid}/fd`).catch(() => [] as string[]);
  for (const fd of fds) {
    const target = await readlink(`/proc/${pid}/fd/${fd}`).catch(() => '');
    if (target.startsWith(`${dir}/qemu_back_mem.`) || target.startsWith(`${dir}/${SCRATCH_PREFIX}`)) return `/proc/${pid}/fd/${fd}`;
  }
  return undefined;
}
