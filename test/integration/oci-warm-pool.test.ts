/**
 * The oci warm pool through a real prismd (`--warm-pool 2`): creates of a shape take running containers
 * made ahead, each then is its sandbox (hostname, limits, files, stop/start, delete without leftovers),
 * other shapes are made from scratch, and no pool task outlives prismd, whether it stops or is killed.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, lstatSync, readdirSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { call, integrationSkipReason, leftovers, startPrismd, type Prismd } from './prismd-harness.js';

const skip = integrationSkipReason();
if (skip) console.warn(`skipping oci warm pool tests: ${skip}`);

type Sb = { id: string; name: string; status: string };

describe.skipIf(!!skip)('oci warm pool (--warm-pool 2, real runc)', () => {
  let d: Prismd;
  const tasks = () => join(d.dataDir, 'runtime', 'oci', 'tasks');
  /** Pool tasks on disk and in runc, whether ready or claimed. */
  const poolDirs = () => (existsSync(tasks()) ? readdirSync(tasks()).filter((n) => n.startsWith('pool-')) : []);
  const poolContainers = () => execFileSync('runc', ['--root', join(d.dataDir, 'runtime', 'oci', 'runc'), 'list', '-q'], { encoding: 'utf8' }).split('\n').filter((n) => n.startsWith('pool-'));
  const claimedBy = (id: string) => {
    const link = join(tasks(), id);
    return existsSync(link) && lstatSync(link).isSymbolicLink() ? readlinkSync(link) : undefined;
  };
  const claimed = (slot: string) => readdirSync(tasks()).some((n) => claimedBy(n) === slot);
  const ready = () => poolDirs().filter((slot) => !claimed(slot));
  const unclaimedContainers = () => poolContainers().filter((c) => !claimed(c));
  const until = async (what: string, fn: () => boolean, ms = 30_000) => {
    const deadline = Date.now() + ms;
    while (!fn()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}\n${d.logs().slice(-3000)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  const create = async (body: object = {}) => {
    const r = await call<Sb>(d.url, 'POST', '/sandboxes', { runtime: 'oci', memoryMb: 128, cpus: 0.5, ...body });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    return r.body;
  };
  const sh = async (id: string, command: string) => (await call<{ stdout: string; exitCode: number }>(d.url, 'POST', `/sandboxes/${id}/exec`, { command })).body;

  beforeAll(async () => {
    d = await startPrismd({ extraArgs: ['--runtime', 'oci', '--warm-pool', '2'] });
  });
  afterAll(async () => {
    await d?.dispose();
  });

  it('serves creates of a shape from ready containers, each then entirely its own sandbox', async () => {
    const first = await create({ name: 'cold-one' });
    expect(claimedBy(first.id)).toBeUndefined(); // the first of a shape is made from scratch, then the pool fills
    await until('two ready pool tasks', () => ready().length === 2);

    const sb = await create({ name: 'from-pool', env: { GREETING: 'hi' } });
    const slot = claimedBy(sb.id);
    expect(slot).toMatch(/^pool-[0-9a-f]{12}$/);
    // Its identity and limits are the sandbox's, not the pool task's.
    expect(await sh(sb.id, 'hostname; echo $GREETING; cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes'))
      .toMatchObject({ exitCode: 0, stdout: `from-pool\nhi\n${128 * 1024 * 1024}\n` });
    await sh(sb.id, 'echo kept > /home/sandbox/f 2>/dev/null || echo kept > /tmp/f');
    // The pool is topped up again in the background.
    await until('the pool refilled', () => ready().length === 2);

    // Stop and start run the sandbox again, as itself.
    expect((await call<Sb>(d.url, 'POST', `/sandboxes/${sb.id}/stop`)).body.status).toBe('stopped');
    expect((await call<Sb>(d.url, 'POST', `/sandboxes/${sb.id}/start`)).body.status).toBe('running');
    expect((await sh(sb.id, 'hostname; cat /home/sandbox/f 2>/dev/null || cat /tmp/f')).stdout).toBe('from-pool\nkept\n');

    // Another shape is made from scratch.
    const other = await create({ memoryMb: 256 });
    expect(claimedBy(other.id)).toBeUndefined();

    for (const x of [first, sb, other]) expect((await call(d.url, 'DELETE', `/sandboxes/${x.id}`)).status).toBe(204);
    expect(leftovers(sb.id, d.dataDir)).toEqual([]);
    expect(existsSync(join(tasks(), slot!))).toBe(false);
    expect(poolContainers()).not.toContain(slot);
  }, 120_000);

  it('leaves no pool task behind when prismd stops, or after it was killed and started again', async () => {
    const kept = await create();
    expect(claimedBy(kept.id)).toMatch(/^pool-/);
    await until('a full pool', () => ready().length >= 2);
    d = await d.restart('SIGKILL');
    // The killed daemon's ready tasks belong to no sandbox: the new one removes them as orphans.
    expect(ready()).toEqual([]);
    expect(unclaimedContainers()).toEqual([]);
    const sb = await create();
    await until('a full pool', () => ready().length >= 2);
    d = await d.restart();
    expect(ready()).toEqual([]);
    expect(unclaimedContainers()).toEqual([]);
    for (const x of [kept, sb]) expect((await call(d.url, 'DELETE', `/sandboxes/${x.id}`)).status).toBe(204);
    expect(poolContainers()).toEqual([]);
    expect(poolDirs()).toEqual([]);
  }, 120_000);
});
