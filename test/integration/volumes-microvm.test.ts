import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_GUEST_DIR } from '../../src/daemon/config.js';
import { call, integrationSkipReason, startPrismd, type Prismd } from './prismd-harness.js';

const guestDir = process.env.PRISM_GUEST_DIR ?? DEFAULT_GUEST_DIR;
const skip =
  integrationSkipReason() ??
  (existsSync(join(guestDir, 'initramfs.cpio')) ? undefined : `no guest kernel/initramfs in ${guestDir} (run scripts/prepare-guest.sh)`);
if (skip) console.warn(`skipping microvm volume tests: ${skip}`);

/** Two VM boots: one writes, one reads after the first was deleted; an oci sandbox reads it last. */
describe.skipIf(!!skip)('volumes on the microvm runtime (real prismd, real QEMU)', () => {
  let d: Prismd;
  const sh = async (id: string, command: string) => (await call(d.url, 'POST', `/sandboxes/${id}/exec`, { command, timeoutSec: 120 })).body;

  beforeAll(async () => {
    d = await startPrismd();
  });
  afterAll(async () => {
    await d?.dispose();
  });

  it('data written in a VM survives its delete; another VM and an oci sandbox mount it again', async () => {
    let t0 = Date.now();
    expect((await call(d.url, 'POST', '/volumes', { name: 'vmdata', sizeMb: 32 })).status).toBe(201);
    const volumeMs = Date.now() - t0;
    t0 = Date.now();
    const a = await call(d.url, 'POST', '/sandboxes', { runtime: 'microvm', memoryMb: 256, volumes: [{ name: 'vmdata', mountPath: '/data' }] });
    expect(a.status, JSON.stringify(a.body)).toBe(201);
    const coldBootMs = Date.now() - t0;
    console.log(JSON.stringify({ volumeCreateMs: volumeMs, microvmCreateWithVolumeMs: coldBootMs }));
    expect(await sh(a.body.id, 'echo from-vm > /data/greeting && cat /data/greeting && uname -r')).toMatchObject({ exitCode: 0, stdout: expect.stringMatching(/^from-vm\n/) });
    // The size holds in the guest too.
    const full = await sh(a.body.id, 'head -c 50331648 /dev/zero > /data/big');
    expect(full.stderr).toMatch(/No space left on device/);
    expect(full).toMatchObject({ diskFull: true, limitExceeded: 'DISK_FULL' });
    await sh(a.body.id, 'rm /data/big');
    // A microVM holds its volume alone: not even a read-only container may share it.
    const shared = await call(d.url, 'POST', '/sandboxes', { runtime: 'oci', volumes: [{ name: 'vmdata', mountPath: '/data', readOnly: true }] });
    expect(shared.status).toBe(409);
    expect((await call(d.url, 'DELETE', `/sandboxes/${a.body.id}`)).status).toBe(204);
    expect((await call(d.url, 'GET', '/volumes/vmdata')).body).toMatchObject({ attachments: [], needsCheck: true });

    const b = await call(d.url, 'POST', '/sandboxes', { runtime: 'microvm', memoryMb: 256, volumes: [{ name: 'vmdata', mountPath: '/srv/in', readOnly: true }] });
    expect(b.status, JSON.stringify(b.body)).toBe(201);
    expect(await sh(b.body.id, 'cat /srv/in/greeting')).toMatchObject({ exitCode: 0, stdout: 'from-vm\n' });
    const refused = await sh(b.body.id, 'echo x > /srv/in/other');
    expect(refused.exitCode).not.toBe(0);
    expect(refused.stderr).toMatch(/Read-only file system/);
    expect((await call(d.url, 'DELETE', `/sandboxes/${b.body.id}`)).status).toBe(204);

    const c = (await call(d.url, 'POST', '/sandboxes', { runtime: 'oci', volumes: [{ name: 'vmdata', mountPath: '/data' }] })).body;
    expect(await sh(c.id, 'cat /data/greeting; ls /data')).toMatchObject({ exitCode: 0, stdout: 'from-vm\ngreeting\nlost+found\n' });
    expect((await call(d.url, 'GET', '/volumes/vmdata')).body.needsCheck).toBeUndefined(); // e2fsck ran before the host mounted it
    await call(d.url, 'DELETE', `/sandboxes/${c.id}`);
    expect((await call(d.url, 'DELETE', '/volumes/vmdata')).status).toBe(204);
    expect(execFileSync('losetup', ['-a'], { encoding: 'utf8' })).not.toContain(d.dataDir);
    const vms = execFileSync('ps', ['-eo', 'args'], { encoding: 'utf8' }).split('\n').filter((l) => l.includes('qemu') && l.includes(d.dataDir));
    expect(vms).toEqual([]);
  }, 300_000);
});
