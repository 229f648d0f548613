/**
 * The microvm driver against real QEMU, on the busybox rootfs the oci test uses (as one layer).
 * Needs root, qemu-system-x86_64, the guest kernel + initramfs in /var/lib/prism/guest and the built
 * agent; elsewhere it is skipped with the reason printed. Under TCG every create boots a VM (~2 s).
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, copyFile, mkdir, mkdtemp, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'vitest';
import { MicrovmDriver } from '../../src/runtime/microvm/microvm-driver.js';
import { driverConformanceSuite, type DriverFixture } from '../conformance/driver-suite.js';

const repo = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const GUEST_DIR = '/var/lib/prism/guest';
const BUSYBOX = '/bin/busybox';

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

async function buildBusyboxLayer(dir: string): Promise<void> {
  for (const d of ['bin', 'dev', 'proc', 'sys', 'etc', 'root', 'tmp']) await mkdir(join(dir, d), { recursive: true });
  await chmod(join(dir, 'tmp'), 0o1777);
  await copyFile(BUSYBOX, join(dir, 'bin/busybox'));
  await chmod(join(dir, 'bin/busybox'), 0o755);
  const applets = execFileSync(BUSYBOX, ['--list'], { encoding: 'utf8' }).split('\n').filter((a) => a && a !== 'busybox');
  await Promise.all(applets.map((a) => symlink('busybox', join(dir, 'bin', a))));
  await writeFile(join(dir, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n');
  await writeFile(join(dir, 'etc/group'), 'root:x:0:\nnogroup:x:65534:\n');
}

/** Everything of task `id` the host still holds: its directory, cgroups and QEMU process. */
async function microvmLeaks(stateDir: string, id: string): Promise<string[]> {
  const leaks: string[] = [];
  const taskDir = join(stateDir, 'tasks', id);
  if (existsSync(taskDir)) leaks.push(`dir ${taskDir}`);
  for (const ctrl of ['memory', 'pids', 'cpuacct']) {
    const cg = join('/sys/fs/cgroup', ctrl, 'prism-vm', id);
    if (existsSync(cg)) leaks.push(`cgroup ${cg}`);
  }
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
    const open = () => new MicrovmDriver({ stateDir, guestDir: GUEST_DIR, imageDiskCache: join(root, 'disks'), writableDiskMb: 256 });
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
        for (const id of await driver.listTasks().catch(() => [] as string[])) {
          await driver.destroy({ id, runtime: 'microvm', spec: {} as never, data: {} }).catch((e: unknown) => console.error(e));
        }
        await rm(root, { recursive: true, force: true });
      },
    };
  });
}
