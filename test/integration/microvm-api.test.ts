import { existsSync, readFileSync } from 'node:fs';
import { cgroupLeaks, vmCgroups } from '../fixtures/host-cgroups.js';
import { release } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_GUEST_DIR } from '../../src/daemon/config.js';
import { call, integrationSkipReason, startPrismd, type Prismd } from './prismd-harness.js';

const guestDir = process.env.PRISM_GUEST_DIR ?? DEFAULT_GUEST_DIR;
const skip =
  integrationSkipReason() ??
  (existsSync(join(guestDir, 'initramfs.cpio')) ? undefined : `no guest kernel/initramfs in ${guestDir} (run scripts/prepare-guest.sh)`);
if (skip) console.warn(`skipping microvm API tests: ${skip}`);

describe.skipIf(!!skip)('sandboxes on the microvm runtime through the API', () => {
  let d: Prismd;
  let sb: { id: string; name: string };
  const run = async (command: string) => (await call(d.url, 'POST', `/sandboxes/${sb.id}/exec`, { command })).body;

  beforeAll(async () => {
    d = await startPrismd();
    const r = await call(d.url, 'POST', '/sandboxes', { name: 'vm', runtime: 'microvm', memoryMb: 256, maxOpenFiles: 333 });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    sb = r.body;
  }, 180_000);
  afterAll(async () => {
    await d?.dispose();
  });

  it('gives every command the sandbox limits: open files (soft = hard), the unprivileged default user and its home', async () => {
    expect((await run('ulimit -Sn; ulimit -Hn; id -u; echo $HOME')).stdout).toBe('333\n333\n1000\n/home/sandbox\n');
  });

  it('says which accelerator the node uses', async () => {
    const nodes = (await call(d.url, 'GET', '/nodes')).body.nodes;
    const vm = nodes[0].runtimeInfo.find((r: { name: string }) => r.name === 'microvm');
    expect(vm.usable).toBe(true);
    expect(vm.details.accelerator).toMatch(/^(kvm|tcg)/);
  });

  it('runs Python from the default image under its own kernel', async () => {
    expect((await call(d.url, 'GET', `/sandboxes/${sb.id}`)).body).toMatchObject({ status: 'running', runtime: 'microvm' });
    const kernel = (await run('uname -r')).stdout.trim();
    expect(kernel).toBe(readFileSync(join(guestDir, 'kernel-version'), 'utf8').trim());
    expect(kernel).not.toBe(release());
    expect(await run("python3 -c 'print(6*7)'")).toMatchObject({ exitCode: 0, stdout: '42\n' });
    expect((await run('hostname')).stdout).toBe('vm\n');
  });

  it('keeps files across stop and start', async () => {
    await run('echo kept > /home/sandbox/f');
    expect((await call(d.url, 'POST', `/sandboxes/${sb.id}/stop`)).body.status).toBe('stopped');
    const started = await call(d.url, 'POST', `/sandboxes/${sb.id}/start`);
    expect(started.body.status, JSON.stringify(started.body)).toBe('running');
    expect((await run('cat /home/sandbox/f')).stdout).toBe('kept\n');
  });

  it('shows a killed VM as failed, not hung, and deletes it without leftovers', async () => {
    const task = join(d.dataDir, 'runtime', 'microvm', 'tasks', sb.id);
    const pid = Number(readFileSync(join(task, 'qemu.pid'), 'utf8').trim());
    process.kill(pid, 'SIGKILL');
    await new Promise((r) => setTimeout(r, 300));
    const r = await call(d.url, 'POST', `/sandboxes/${sb.id}/exec`, { command: 'true' });
    expect(r.status).toBe(412);
    const got = (await call(d.url, 'GET', `/sandboxes/${sb.id}`)).body;
    expect(got.status).toBe('failed');
    expect(got.error.code).toBe('TASK_EXITED');
    expect((await call(d.url, 'DELETE', `/sandboxes/${sb.id}`)).status).toBe(204);
    expect(existsSync(task)).toBe(false);
    expect(existsSync(`/proc/${pid}`)).toBe(false);
    expect(cgroupLeaks(vmCgroups, sb.id)).toEqual([]);
  });
});
