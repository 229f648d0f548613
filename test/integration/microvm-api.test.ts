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

  it('snapshots a running VM with its memory; sandboxes made from it and forks run its processes on, each as itself', async () => {
    await run("setsid sh -c 'i=0; while :; do i=$((i+1)); echo $i > /var/tmp/ticks.new; mv /var/tmp/ticks.new /var/tmp/ticks; sleep 0.1; done' </dev/null >/dev/null 2>&1 & echo started > /var/tmp/mark");
    await new Promise((r) => setTimeout(r, 800));
    const snap = await call(d.url, 'POST', `/sandboxes/${sb.id}/snapshots`, { name: 'with-memory' });
    expect(snap.status, JSON.stringify(snap.body)).toBe(201);
    expect(snap.body).toMatchObject({ memory: true, runtime: 'microvm', shape: { memoryMb: 256 } });
    expect((await run('echo still-running')).stdout).toBe('still-running\n'); // the parent runs on
    const ticks = async (id: string) => Number((await call(d.url, 'POST', `/sandboxes/${id}/exec`, { command: 'cat /var/tmp/ticks' })).body.stdout);
    // The counter ticks every 0.1 s; under emulation on a loaded host a VM may not get a core for a
    // while, so it is given up to 20 s to tick once more (a process that did not come along never does).
    const ticking = async (id: string) => {
      const a = await ticks(id);
      let b = a;
      for (const deadline = Date.now() + 20_000; b <= a && Date.now() < deadline; ) {
        await new Promise((r) => setTimeout(r, 300));
        b = await ticks(id);
      }
      expect(b, `the counter of ${id} runs on`).toBeGreaterThan(a);
    };
    await ticking(sb.id); // and so do its processes
    // The guest RAM was a shared file: the snapshot holds it as an image that restores map.
    expect(existsSync(join(d.dataDir, 'snapshots', snap.body.id, 'mem'))).toBe(true);

    // A create with another shape is refused; with the snapshot's (the default), its counter runs on.
    expect((await call(d.url, 'POST', '/sandboxes', { snapshot: snap.body.id, memoryMb: 512 })).status).toBe(400);
    const child = await call(d.url, 'POST', '/sandboxes', { snapshot: snap.body.id, name: 'vm-child' });
    expect(child.status, JSON.stringify(child.body)).toBe(201);
    expect(child.body).toMatchObject({ runtime: 'microvm', memoryMb: 256, snapshot: snap.body.id });
    await ticking(child.body.id); // the process came with the memory
    const who = (await call(d.url, 'POST', `/sandboxes/${child.body.id}/exec`, { command: 'hostname; cat /var/tmp/mark; date +%s' })).body.stdout.split('\n');
    expect(who[0]).toBe('vm-child');
    expect(who[1]).toBe('started');
    expect(Math.abs(Number(who[2]) - Date.now() / 1000)).toBeLessThan(5);

    const t0 = Date.now();
    const fork = await call(d.url, 'POST', `/sandboxes/${sb.id}/fork`, { count: 2 });
    expect(fork.status, JSON.stringify(fork.body)).toBe(201);
    console.warn(`microvm fork of 2 with memory: ${Date.now() - t0} ms`);
    expect(fork.body.memory).toBe(true);
    for (const f of fork.body.sandboxes) await ticking(f.id);
    await ticking(sb.id);
    // A fork of a VM restored from an image (its RAM mapped copy-on-write, not a shared file) takes the
    // other way, through a pause to disk; its fork runs the counter on too.
    const grand = await call(d.url, 'POST', `/sandboxes/${child.body.id}/fork`, { count: 1 });
    expect(grand.status, JSON.stringify(grand.body)).toBe(201);
    expect(existsSync(join(d.dataDir, 'snapshots', grand.body.snapshot.id, 'mem'))).toBe(false);
    await ticking(grand.body.sandboxes[0].id);
    await ticking(child.body.id);
    expect((await call(d.url, 'DELETE', `/sandboxes/${grand.body.sandboxes[0].id}`)).status).toBe(204);
    expect((await call(d.url, 'DELETE', `/snapshots/${grand.body.snapshot.id}`)).status).toBe(204);
    expect((await call(d.url, 'DELETE', `/snapshots/${snap.body.id}`)).status).toBe(412);
    for (const x of [child.body, ...fork.body.sandboxes]) expect((await call(d.url, 'DELETE', `/sandboxes/${x.id}`)).status).toBe(204);
    expect((await call(d.url, 'DELETE', `/snapshots/${snap.body.id}`)).status).toBe(204);
    expect((await call(d.url, 'DELETE', `/snapshots/${fork.body.snapshot.id}`)).status).toBe(204);
    expect(existsSync(join(d.dataDir, 'snapshots', snap.body.id))).toBe(false);
  }, 240_000);

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
