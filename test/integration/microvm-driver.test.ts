/**
 * The microvm driver against real QEMU, on the busybox rootfs the oci test uses (as one layer).
 * Needs root, qemu-system-x86_64, the guest kernel + initramfs in /var/lib/prism/guest and the built
 * agent; elsewhere it is skipped with the reason printed. Under TCG every create boots a VM (~2 s).
 */
import { execFileSync } from 'node:child_process';
import { cgroupLeaks, vmCgroups } from '../fixtures/host-cgroups.js';
import { existsSync, statSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import type { TaskHandle, TaskSpec } from '../../src/runtime/driver.js';
import { MicrovmDriver } from '../../src/runtime/microvm/microvm-driver.js';
import { driverConformanceSuite, type DriverFixture } from '../conformance/driver-suite.js';
import { BUSYBOX, buildBusyboxLayer } from '../fixtures/busybox-layer.js';

const repo = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const GUEST_DIR = process.env.PRISM_GUEST_DIR ?? '/var/lib/prism/guest';

function skipReason(): string | null {
  if (process.getuid?.() !== 0) return 'not running as root';
  for (const f of [join(GUEST_DIR, 'vmlinux'), join(GUEST_DIR, 'initramfs.cpio'), join(repo, 'guest/agent/prism-agent')]) {
    if (!existsSync(f)) return `${f} is missing (make -C guest/agent; scripts/prepare-guest.sh)`;
  }
  try {
    execFileSync('qemu-system-x86_64', ['--version'], { stdio: 'ignore' });
  } catch {
    return 'qemu-system-x86_64 is not installed';
  }
  if (!existsSync(BUSYBOX)) return `${BUSYBOX} (busybox-static) is not installed`;
  return null;
}


/** Everything of task `id` the host still holds: its directory, cgroups and QEMU process. */
async function microvmLeaks(stateDir: string, id: string): Promise<string[]> {
  const leaks: string[] = [];
  const taskDir = join(stateDir, 'tasks', id);
  if (existsSync(taskDir)) leaks.push(`dir ${taskDir}`);
  leaks.push(...cgroupLeaks(vmCgroups, id));
  for (const pid of (await readdir('/proc')).filter((p) => /^\d+$/.test(p))) {
    const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
    if (cmdline.includes(join(taskDir, 'agent.sock'))) leaks.push(`process ${pid}`);
  }
  return leaks;
}

const reason = skipReason();
if (reason) {
  console.warn(`skipping microvm driver integration tests: ${reason}`);
  describe.skip('RuntimeDriver conformance: microvm', () => it('needs root, QEMU and the guest files', () => {}));
} else {
  driverConformanceSuite('microvm', async (): Promise<DriverFixture> => {
    // Short: unix socket paths (agent.sock) must stay under 108 bytes.
    const root = await mkdtemp('/tmp/pvm-');
    const layer = join(root, 'layers/busybox');
    const stateDir = join(root, 'state');
    const open = () => new MicrovmDriver({ stateDir, guestDir: GUEST_DIR, initBinary: join(repo, 'guest/init/prism-init'), imageDiskCache: join(root, 'disks'), writableDiskMb: 256 });
    const driver = open();
    try {
      await buildBusyboxLayer(layer);
      const probe = await driver.probe();
      if (!probe.usable) throw new Error(`microvm driver not usable: ${probe.reason}`);
      console.warn(`microvm driver: ${JSON.stringify(probe.details)}`);
    } catch (e) {
      await rm(root, { recursive: true, force: true });
      throw e;
    }
    return {
      driver,
      layers: [layer],
      // A restart: the old daemon's driver lets go of its agent connections first.
      reopen: async () => {
        await driver.close();
        return open();
      },
      leaks: (id) => microvmLeaks(stateDir, id),
      async cleanup() {
        await driver.close(); // waits for template builds the creates started
        for (const id of await driver.listTasks().catch(() => [] as string[])) {
          await driver.destroy({ id, runtime: 'microvm', spec: {} as never, data: {} }).catch((e: unknown) => console.error(e));
        }
        await rm(root, { recursive: true, force: true });
      },
    };
  });

  describe('microvm template snapshots', () => {
    const PATH = '/bin';
    const spec = (id: string, hostname: string): TaskSpec => ({
      id, hostname, layers: [], env: { PATH }, workdir: '/work', cpus: 1, memoryMb: 128, pidsLimit: 128, diskMb: 256, maxOpenFiles: 1024,
    });
    async function sh(driver: MicrovmDriver, h: TaskHandle, script: string): Promise<{ exitCode: number; stdout: string }> {
      const proc = await driver.exec(h, { argv: ['/bin/sh', '-c', script], env: { PATH }, cwd: '/work', stdin: false });
      const chunks: Buffer[] = [];
      proc.stderr.resume();
      for await (const c of proc.stdout) chunks.push(c as Buffer);
      return { exitCode: (await proc.result).exitCode, stdout: Buffer.concat(chunks).toString() };
    }

    it('builds a template on the first create and restores later ones from it, each with its own disk and hostname', async () => {
      const root = await mkdtemp('/tmp/pvm-');
      const stateDir = join(root, 'state');
      const driver = new MicrovmDriver({ stateDir, guestDir: GUEST_DIR, imageDiskCache: join(root, 'disks'), writableDiskMb: 256 });
      const handles: TaskHandle[] = [];
      try {
        const layer = join(root, 'layers/busybox');
        await buildBusyboxLayer(layer);
        const create = async (id: string, hostname: string) => {
          const h = await driver.create({ ...spec(id, hostname), layers: [layer] });
          handles.push(h);
          return h;
        };
        const a = await create('tpl-a', 'host-a');
        expect(a.data.boot).toBe('cold');
        await driver.templatesSettled();
        const templates = await readdir(join(stateDir, 'templates'));
        expect(templates).toHaveLength(1);
        // Devices in `state`, the RAM as a sparse image beside it (restores copy it into the RAM directory).
        expect((await readdir(join(stateDir, 'templates', templates[0]!))).sort()).toEqual(['mem', 'meta.json', 'state']);
        const mem = statSync(join(stateDir, 'templates', templates[0]!, 'mem'));
        expect(mem.blocks * 512).toBeLessThan(mem.size);

        const b = await create('tpl-b', 'host-b');
        expect(b.data).toMatchObject({ boot: 'restore', template: templates[0] });
        console.warn(`microvm create: cold ${String(a.data.createMs)} ms, restore ${String(b.data.createMs)} ms`);
        expect(b.data.createMs as number).toBeLessThan((a.data.createMs as number) / 2);

        // The writable disks are separate: each VM sees only its own file, and its own hostname.
        expect(await sh(driver, a, 'echo from-a > mine && hostname')).toEqual({ exitCode: 0, stdout: 'host-a\n' });
        expect(await sh(driver, b, 'echo from-b > mine && hostname')).toEqual({ exitCode: 0, stdout: 'host-b\n' });
        expect(await sh(driver, a, 'cat mine; ls /work')).toEqual({ exitCode: 0, stdout: 'from-a\nmine\n' });
        expect(await sh(driver, b, 'cat mine; ls /work')).toEqual({ exitCode: 0, stdout: 'from-b\nmine\n' });

        // A restored guest runs on the host's clock, not the template's, and draws its own random numbers.
        const clock = Number((await sh(driver, b, 'date +%s')).stdout.trim());
        expect(Math.abs(clock - Date.now() / 1000)).toBeLessThan(5);
        const c = await create('tpl-c', 'host-c');
        expect(c.data.boot).toBe('restore');
        const rand = async (h: TaskHandle) => (await sh(driver, h, 'head -c 16 /dev/urandom | od -An -tx1')).stdout;
        expect(await rand(b)).not.toBe(await rand(c));

        // A restored task survives stop/start with its files (start restores again).
        await driver.stop(b, { timeoutMs: 5_000 });
        await driver.start(b);
        expect(await sh(driver, b, 'cat mine; hostname')).toEqual({ exitCode: 0, stdout: 'from-b\nhost-b\n' });

        expect(await driver.pruneTemplates({ unusedForMs: 60_000 })).toEqual([]);
        expect(await driver.pruneTemplates({ unusedForMs: 0 })).toEqual(templates);
      } finally {
        for (const h of handles) await driver.destroy(h).catch((e: unknown) => console.error(e));
        await driver.close();
        for (const h of handles) expect(await microvmLeaks(stateDir, h.id)).toEqual([]);
        await rm(root, { recursive: true, force: true });
      }
    }, 120_000);
  });

  describe('microvm pause to disk', () => {
    it('saves the VM and lets QEMU exit; a command streaming across the pause ends normally after resume, on the host clock', async () => {
      const root = await mkdtemp('/tmp/pvm-');
      const stateDir = join(root, 'state');
      const driver = new MicrovmDriver({ stateDir, guestDir: GUEST_DIR, imageDiskCache: join(root, 'disks'), writableDiskMb: 256 });
      let h: TaskHandle | undefined;
      try {
        const layer = join(root, 'layers/busybox');
        await buildBusyboxLayer(layer);
        h = await driver.create({ id: 'pause-a', hostname: 'pause-a', layers: [layer], env: { PATH: '/bin' }, workdir: '/work', cpus: 1, memoryMb: 128, pidsLimit: 128, diskMb: 256, maxOpenFiles: 1024 });
        expect(driver.capabilities().pause).toBe('disk');
        // Prints its own uptime-based ticks; the exec's stream stays open across the pause.
        const proc = await driver.exec(h, { argv: ['/bin/sh', '-c', 'for i in 1 2 3 4 5 6 7 8 9 10; do echo tick $i; sleep 0.2; done; echo done'], env: { PATH: '/bin' }, cwd: '/work', stdin: false });
        let out = '';
        proc.stdout.on('data', (c: Buffer) => (out += c.toString()));
        proc.stderr.resume();
        for (const deadline = Date.now() + 10_000; !out.includes('tick 2') && Date.now() < deadline; ) await new Promise((r) => setTimeout(r, 20));
        const qemuPid = Number(await readFile(join(stateDir, 'tasks/pause-a/qemu.pid'), 'utf8'));
        await driver.pause(h);
        expect(existsSync(`/proc/${qemuPid}`)).toBe(false); // a paused microVM costs disk, not RAM
        expect(existsSync(join(stateDir, 'tasks/pause-a/paused.state'))).toBe(true);
        expect(await driver.inspect(h)).toBe('paused');
        const seen = out;
        await new Promise((r) => setTimeout(r, 1500));
        expect(out).toBe(seen); // nothing ran while paused
        await driver.resume(h);
        expect(existsSync(join(stateDir, 'tasks/pause-a/paused.state'))).toBe(false);
        const r = await proc.result;
        expect(r.exitCode).toBe(0);
        expect(out).toMatch(/tick 10\ndone\n$/);
        const clock = Number((await sh(driver, h, 'date +%s')).stdout.trim());
        expect(Math.abs(clock - Date.now() / 1000)).toBeLessThan(5);
        // Paused again, then stopped: the saved state goes, the disk stays.
        await sh(driver, h, 'echo kept > /work/f');
        await driver.pause(h);
        await driver.stop(h);
        expect(await driver.inspect(h)).toBe('stopped');
        expect(existsSync(join(stateDir, 'tasks/pause-a/paused.state'))).toBe(false);
        await driver.start(h);
        expect((await sh(driver, h, 'cat /work/f')).stdout).toBe('kept\n');
      } finally {
        if (h) await driver.destroy(h).catch((e: unknown) => console.error(e));
        await driver.close();
        expect(await microvmLeaks(stateDir, 'pause-a')).toEqual([]);
        await rm(root, { recursive: true, force: true });
      }
    }, 180_000);

    async function sh(driver: MicrovmDriver, h: TaskHandle, script: string): Promise<{ exitCode: number; stdout: string }> {
      const proc = await driver.exec(h, { argv: ['/bin/sh', '-c', script], env: { PATH: '/bin' }, cwd: '/work', stdin: false });
      const chunks: Buffer[] = [];
      proc.stderr.resume();
      for await (const c of proc.stdout) chunks.push(c as Buffer);
      return { exitCode: (await proc.result).exitCode, stdout: Buffer.concat(chunks).toString() };
    }
  });

  describe('microvm warm pool', () => {
    /** QEMU processes whose command line names a path under `dir`. */
    async function qemusUnder(dir: string): Promise<number[]> {
      const pids: number[] = [];
      for (const pid of (await readdir('/proc')).filter((p) => /^\d+$/.test(p))) {
        const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
        if (cmdline.startsWith('qemu-system') && cmdline.includes(dir)) pids.push(Number(pid));
      }
      return pids;
    }

    it('hands out ready VMs, never a dead one, hides them from listTasks and destroys them on close', async () => {
      const root = await mkdtemp('/tmp/pvm-');
      const stateDir = join(root, 'state');
      const driver = new MicrovmDriver({ stateDir, guestDir: GUEST_DIR, imageDiskCache: join(root, 'disks'), writableDiskMb: 256, warmPool: 1 });
      const handles: TaskHandle[] = [];
      try {
        const layer = join(root, 'layers/busybox');
        await buildBusyboxLayer(layer);
        const create = async (id: string) => {
          const h = await driver.create({ id, hostname: id, layers: [layer], env: { PATH: '/bin' }, workdir: '/work', cpus: 1, memoryMb: 128, pidsLimit: 128, diskMb: 256, maxOpenFiles: 1024 });
          handles.push(h);
          return h;
        };
        expect((await create('pool-a')).data.boot).toBe('cold');
        await driver.templatesSettled(); // template built, then one VM restored into the pool
        const pooled = await readdir(join(stateDir, 'pool'));
        expect(pooled).toHaveLength(1);
        // listTasks also names other daemons' VM cgroups on this host (prism-vm/ is host-wide): check ours.
        const tasks = await driver.listTasks();
        expect(tasks).toContain('pool-a');
        expect(tasks).not.toContain(pooled[0]);

        const b = await create('pool-b');
        expect(b.data.boot).toBe('pool');
        const proc = await driver.exec(b, { argv: ['/bin/sh', '-c', 'hostname; pwd; echo x > f; cat f'], env: { PATH: '/bin' }, cwd: '/work', stdin: false });
        let out = '';
        proc.stdout.on('data', (c: Buffer) => (out += c.toString()));
        proc.stderr.resume();
        expect((await proc.result).exitCode).toBe(0);
        expect(out).toBe('pool-b\n/work\nx\n');
        expect(await readdir(join(stateDir, 'pool'))).not.toContain(pooled[0]);
        expect(await driver.listTasks()).toEqual(expect.arrayContaining(['pool-a', 'pool-b']));
        // Stop/start and destroy find the adopted VM by the socket path it was started with.
        await driver.stop(b, { timeoutMs: 5_000 });
        expect(await driver.inspect(b)).toBe('stopped');
        await driver.destroy(b);
        expect(await microvmLeaks(stateDir, 'pool-b')).toEqual([]);

        // A pooled VM that died is never handed out: the create restores instead.
        await driver.templatesSettled();
        const [refilled] = await readdir(join(stateDir, 'pool'));
        const pid = Number((await readFile(join(stateDir, 'pool', refilled!, 'qemu.pid'), 'utf8')).trim());
        process.kill(pid, 'SIGKILL');
        expect((await create('pool-c')).data.boot).toBe('restore');
        await driver.templatesSettled();
        expect(await qemusUnder(join(stateDir, 'pool'))).toHaveLength(1);
      } finally {
        for (const h of handles) await driver.destroy(h).catch((e: unknown) => console.error(e));
        await driver.close();
      }
      try {
        expect(await qemusUnder(root)).toEqual([]);
        expect(await readdir(join(stateDir, 'pool'))).toEqual([]);
      } finally {
        await rm(root, { recursive: true, force: true });
      }
    }, 180_000);
  });
}
