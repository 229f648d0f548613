/**
 * The oci driver against real runc, overlayfs and cgroups, on a busybox rootfs built here. Needs root
 * and runc; elsewhere it is skipped with the reason printed.
 */
import { execFileSync } from 'node:child_process';
import { cgroupLeaks, ociCgroups } from '../fixtures/host-cgroups.js';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { OciDriver } from '../../src/runtime/oci/oci-driver.js';
import { driverConformanceSuite, type DriverFixture } from '../conformance/driver-suite.js';
import { BUSYBOX, buildBusyboxLayer } from '../fixtures/busybox-layer.js';

const repo = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const initBinary = join(repo, 'guest/init/prism-init');

function skipReason(): string | null {
  if (process.getuid?.() !== 0) return 'not running as root';
  try {
    execFileSync('runc', ['--version'], { stdio: 'ignore' });
  } catch {
    return 'runc is not installed';
  }
  if (!existsSync(BUSYBOX)) return `${BUSYBOX} (busybox-static) is not installed`;
  return null;
}


/** Everything of task `id` the host still holds. */
async function ociLeaks(stateDir: string, id: string): Promise<string[]> {
  const leaks: string[] = [];
  const taskDir = join(stateDir, 'tasks', id);
  if (existsSync(taskDir)) leaks.push(`dir ${taskDir}`);
  const mounts = (await readFile('/proc/self/mountinfo', 'utf8')).split('\n').map((l) => l.split(' ')[4] ?? '');
  leaks.push(...mounts.filter((m) => m.startsWith(taskDir)).map((m) => `mount ${m}`));
  leaks.push(...cgroupLeaks(ociCgroups, id));
  leaks.push(...(await ociCgroups.pids(id)).map((pid) => `process ${pid}`));
  try {
    execFileSync('runc', ['--root', join(stateDir, 'runc'), 'state', id], { stdio: 'ignore' });
    leaks.push(`runc container ${id}`);
  } catch {
    // runc does not know it: good.
  }
  return leaks;
}

const reason = skipReason();
if (reason) {
  console.warn(`skipping oci driver integration tests: ${reason}`);
  describe.skip('RuntimeDriver conformance: oci', () => it('needs root and runc', () => {}));
} else {
  driverConformanceSuite('oci', async (): Promise<DriverFixture> => {
    execFileSync('make', ['-C', join(repo, 'guest/init')], { stdio: 'ignore' });
    const root = await mkdtemp(join(tmpdir(), 'prism-oci-test-'));
    const layer = join(root, 'layers/busybox');
    const stateDir = join(root, 'state');
    const open = () => new OciDriver({ stateDir, initBinary });
    const driver = open();
    try {
      await buildBusyboxLayer(layer);
      const probe = await driver.probe();
      if (!probe.usable) throw new Error(`oci driver not usable: ${probe.reason}`);
    } catch (e) {
      await rm(root, { recursive: true, force: true });
      throw e;
    }
    return {
      driver,
      layers: [layer],
      reopen: async () => open(),
      leaks: (id) => ociLeaks(stateDir, id),
      async cleanup() {
        // Also what a failing test left: every task this state dir knows, then the files.
        for (const id of await driver.listTasks().catch(() => [] as string[])) {
          await driver.destroy({ id, runtime: 'oci', spec: {} as never, data: {} }).catch((e: unknown) => console.error(e));
        }
        const mounted = (await readFile('/proc/self/mountinfo', 'utf8')).split('\n').map((l) => l.split(' ')[4] ?? '');
        // Never rm through a mount that destroy failed to remove; leave it for a human instead.
        if (mounted.some((m) => m.startsWith(root))) throw new Error(`mounts left under ${root}`);
        await rm(root, { recursive: true, force: true });
      },
    };
  });
}

describe.skipIf(!!reason)('oci driver: limits that do not land', () => {
  it('refuses to run a task whose limits the host did not apply, and leaves nothing behind', async () => {
    const root = await mkdtemp(join(tmpdir(), 'prism-oci-limits-'));
    const stateDir = join(root, 'state');
    const layer = join(root, 'layer');
    await buildBusyboxLayer(layer);
    // The real cgroups, but reading back an unlimited memory limit, as a host without a delegated
    // memory controller would hold it.
    const cgroups = Object.assign(Object.create(ociCgroups) as typeof ociCgroups, {
      applied: async (id: string) => ({ ...(await ociCgroups.applied(id)), memoryBytes: 0 }),
    });
    const driver = new OciDriver({ stateDir, initBinary, cgroups });
    const id = `limits-${process.pid}`;
    try {
      await expect(driver.create({
        id, hostname: 'limits', layers: [layer], env: {}, workdir: '/', cpus: 1, memoryMb: 64, pidsLimit: 64, diskMb: 64, maxOpenFiles: 1024,
      })).rejects.toMatchObject({ code: 'FAILED_PRECONDITION', message: expect.stringMatching(/memory unlimited instead of 64 MiB/) });
      expect(await ociLeaks(stateDir, id)).toEqual([]);
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });
});
