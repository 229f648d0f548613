/**
 * The official e2b SDK against prismd whose sandboxes are microVMs (`--runtime microvm`): the same
 * gateway, with commands, terminals, files and watches carried by the guest agent instead of prism-init.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Sandbox, CommandExitError } from 'e2b';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_GUEST_DIR } from '../../src/daemon/config.js';
import { call, integrationSkipReason, startPrismd, type Prismd } from '../integration/prismd-harness.js';

const guestDir = process.env.PRISM_GUEST_DIR ?? DEFAULT_GUEST_DIR;
const skip =
  integrationSkipReason() ??
  (existsSync(join(guestDir, 'initramfs.cpio')) ? undefined : `no guest kernel/initramfs in ${guestDir} (run scripts/prepare-guest.sh)`);
if (skip) console.warn(`skipping E2B microvm tests: ${skip}`);

describe.skipIf(!!skip)('the e2b SDK against prismd on the microvm runtime', () => {
  let d: Prismd;
  let sbx: Sandbox;

  beforeAll(async () => {
    d = await startPrismd({ extraArgs: ['--runtime', 'microvm'] });
    // No internet for this one: a networked microVM cold-boots (templates have no NIC), slow under TCG.
    sbx = await Sandbox.create({ apiKey: d.token, apiUrl: `${d.url}/e2b`, sandboxUrl: `${d.url}/e2b/envd`, allowInternetAccess: false, requestTimeoutMs: 180_000 });
  }, 240_000);
  afterAll(async () => {
    await sbx?.kill().catch(() => undefined);
    await d?.dispose();
  });

  it('is a microVM sandbox', async () => {
    expect((await call(d.url, 'GET', `/sandboxes/${sbx.sandboxId}`)).body).toMatchObject({ runtime: 'microvm', status: 'running' });
  });

  it('runs commands in the guest: output, exit codes, root, background + kill', async () => {
    expect((await sbx.commands.run('echo $((6*7)); uname -r')).stdout).toMatch(/^42\n.*cloud/);
    await expect(sbx.commands.run('exit 5')).rejects.toBeInstanceOf(CommandExitError);
    expect((await sbx.commands.run('id -u', { user: 'root' })).stdout).toBe('0\n');
    const h = await sbx.commands.run('sleep 300', { background: true, timeoutMs: 0 });
    expect((await sbx.commands.list()).map((p) => p.pid)).toContain(h.pid);
    expect(await sbx.commands.kill(h.pid)).toBe(true);
  }, 120_000);

  it('moves files and watches a directory in the guest', async () => {
    await sbx.files.write('/tmp/vm.txt', 'in the guest');
    expect(await sbx.files.read('/tmp/vm.txt')).toBe('in the guest');
    expect((await sbx.files.list('/tmp')).map((e) => e.name)).toContain('vm.txt');
    const seen: string[] = [];
    const w = await sbx.files.watchDir('/tmp', (e) => void seen.push(`${e.type}:${e.name}`), { timeoutMs: 0 });
    await sbx.files.write('/tmp/new.txt', 'x');
    for (const deadline = Date.now() + 20_000; !seen.includes('create:new.txt') && Date.now() < deadline; ) await new Promise((r) => setTimeout(r, 100));
    expect(seen).toContain('create:new.txt');
    await w.stop();
  }, 120_000);

  it('reports the metrics of the guest: memory, its writable disk', async () => {
    await sbx.commands.run('head -c 8000000 /dev/urandom > /var/tmp/m.bin', { user: 'root' });
    let last = (await sbx.getMetrics()).at(-1);
    // The newest sample may predate the write by one interval (5 s).
    for (const deadline = Date.now() + 30_000; (last?.diskUsed ?? 0) < 8_000_000 && Date.now() < deadline; await new Promise((r) => setTimeout(r, 1000))) {
      last = (await sbx.getMetrics()).at(-1);
    }
    expect(last).toMatchObject({ cpuCount: 1, memTotal: 512 * 2 ** 20 });
    expect(last!.memUsed).toBeGreaterThan(0);
    expect(last!.diskTotal).toBeGreaterThan(1024 * 2 ** 20);
    expect(last!.diskUsed).toBeGreaterThan(8_000_000);
  }, 120_000);

  it('pauses the VM to disk (no QEMU left) and resumes it on connect with its processes', async () => {
    const h = await sbx.commands.run('i=0; while :; do i=$((i+1)); echo $i > /tmp/ticks.new; mv /tmp/ticks.new /tmp/ticks; sleep 0.1; done', { background: true, timeoutMs: 0 });
    await new Promise((r) => setTimeout(r, 1000));
    const qemus = () => readdirSync('/proc').filter((p) => /^\d+$/.test(p)).filter((p) => {
      try {
        return readFileSync(`/proc/${p}/cmdline`, 'utf8').includes(`${sbx.sandboxId}/agent.sock`);
      } catch {
        return false;
      }
    });
    expect(qemus()).toHaveLength(1);
    expect(await sbx.pause()).toBe(true);
    expect(qemus()).toEqual([]);
    expect((await call(d.url, 'GET', `/sandboxes/${sbx.sandboxId}`)).body.status).toBe('paused');
    const again = await Sandbox.connect(sbx.sandboxId, { apiKey: d.token, apiUrl: `${d.url}/e2b`, sandboxUrl: `${d.url}/e2b/envd`, requestTimeoutMs: 180_000 });
    const before = Number((await again.commands.run('cat /tmp/ticks')).stdout);
    await new Promise((r) => setTimeout(r, 1500));
    expect(Number((await again.commands.run('cat /tmp/ticks')).stdout)).toBeGreaterThan(before); // still counting
    expect((await again.commands.list()).map((p) => p.pid)).toContain(h.pid);
    await again.commands.kill(h.pid);
  }, 180_000);

  it('snapshots the VM with its memory (paused to disk meanwhile) and creates a microVM from it', async () => {
    await sbx.files.write('/var/tmp/snap.txt', 'in the snapshot');
    const snap = await call(d.url, 'POST', `/sandboxes/${sbx.sandboxId}/snapshots`, {});
    expect(snap.status, JSON.stringify(snap.body)).toBe(201);
    expect(snap.body).toMatchObject({ runtime: 'microvm', memory: true });
    expect((await call(d.url, 'GET', `/sandboxes/${sbx.sandboxId}`)).body.status).toBe('running');
    const child = await call(d.url, 'POST', '/sandboxes', { snapshot: snap.body.id });
    expect(child.status, JSON.stringify(child.body)).toBe(201);
    expect(child.body.runtime).toBe('microvm');
    const cat = await call(d.url, 'POST', `/sandboxes/${child.body.id}/exec`, { command: 'cat /var/tmp/snap.txt' });
    expect(cat.body.stdout).toBe('in the snapshot');
    await call(d.url, 'DELETE', `/sandboxes/${child.body.id}`);
    expect((await call(d.url, 'DELETE', `/snapshots/${snap.body.id}`)).status).toBe(204);
  }, 240_000);

  it('opens a terminal in the guest', async () => {
    let screen = '';
    const term = await sbx.pty.create({ cols: 80, rows: 24, onData: (b) => void (screen += Buffer.from(b).toString()), timeoutMs: 0 });
    await sbx.pty.sendInput(term.pid, new TextEncoder().encode('echo vm=$((3*3))\n'));
    for (const deadline = Date.now() + 30_000; !screen.includes('vm=9') && Date.now() < deadline; ) await new Promise((r) => setTimeout(r, 100));
    expect(screen).toContain('vm=9');
    expect(await sbx.pty.kill(term.pid)).toBe(true);
  }, 120_000);
});
