import type { Socket } from 'node:net';
import { existsSync } from 'node:fs';
import { PrismError } from '../../core/errors.js';
import { buildQemuArgs } from './qemu-args.js';
import { spawnQemu } from './qemu-process.js';
import { QmpClient } from './qmp.js';
import { dialUnix } from './unix-socket.js';
import type { TaskPaths } from './vm-boot.js';
import { resumeIncoming, saveVmState } from './vm-snapshot.js';
import type { Vmm, VmmProcess, VmmStart } from './vmm.js';
import { runTool } from './vm-disks.js';
import { netnsExec } from './vm-network.js';

/** `cat` may still be flushing the stream when QEMU reports the migration completed. */
const FLUSH_TIMEOUT_MS = 10_000;
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/**
 * QEMU's `microvm` machine (qemu-args.ts) as the {@link Vmm}: controlled over QMP on `paths.qmpSocket`,
 * the agent on a virtio-serial port whose host side is the unix socket `paths.agentSocket`, template
 * state saved with `migrate exec:cat` and restored with `-incoming` (vm-snapshot.ts).
 */
export class QemuVmm implements Vmm {
  readonly name = 'qemu' as const;

  constructor(
    readonly binary = 'qemu-system-x86_64',
    private readonly restoreTimeoutMs = 10_000,
  ) {}

  async describe(): Promise<Record<string, string>> {
    return { vmm: 'qemu', qemu: (await runTool(this.binary, ['--version'])).split('\n')[0]!.trim() };
  }

  /** The agent socket path is on QEMU's command line (`-chardev socket,path=...`). */
  marker(paths: TaskPaths): string {
    return paths.agentSocket;
  }

  async start(o: VmmStart): Promise<VmmProcess> {
    const { shape, paths: p } = o;
    const args = buildQemuArgs({
      accel: shape.accel, memoryMb: shape.memoryMb, cpus: shape.cpus, kernel: shape.files.kernel, initramfs: shape.files.initramfs,
      cmdline: shape.cmdline, imageDisk: shape.imageDisk, writableDisk: p.rwDisk, agentSocket: p.agentSocket, qmpSocket: p.qmpSocket,
      consoleLog: p.consoleLog, pidFile: p.pidFile, ...(o.incoming ? { incoming: o.incoming } : {}),
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
      await Promise.race([resumeIncoming(p.qmpSocket, this.restoreTimeoutMs), died]);
    }
    return vm;
  }

  dialAgent(agentSocket: string, timeoutMs: number): Promise<Socket> {
    return dialUnix(agentSocket, timeoutMs);
  }

  async resume(paths: TaskPaths): Promise<void> {
    const qmp = await QmpClient.connect(paths.qmpSocket);
    try {
      if ((await qmp.queryStatus()).status === 'paused') await qmp.execute('cont');
    } finally {
      qmp.close();
    }
  }

  async save(paths: TaskPaths, stateFile: string, timeoutMs: number): Promise<void> {
    await saveVmState(paths.qmpSocket, stateFile, timeoutMs);
    // The migration URI renames the stream into place after `cat` finished: its presence means complete.
    const deadline = Date.now() + FLUSH_TIMEOUT_MS;
    while (!existsSync(stateFile)) {
      if (Date.now() > deadline) throw new PrismError('INTERNAL', `the snapshot stream was not written to ${stateFile}`);
      await sleep(5);
    }
  }

  async quit(paths: TaskPaths): Promise<void> {
    const qmp = await QmpClient.connect(paths.qmpSocket, 2_000).catch(() => null);
    await qmp?.quit().catch(() => undefined);
    qmp?.close();
  }
}
