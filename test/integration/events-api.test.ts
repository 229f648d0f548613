/**
 * GET /events of a real prismd (oci), through the SDK and prismctl: the lifecycle of sandboxes as it
 * happens, filtered by sandbox and type, a failure with its reason, and bad input refused.
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Prism, type LifecycleEvent } from '../../src/sdk/index.js';
import { call, integrationSkipReason, REPO_ROOT, startPrismd, type Prismd } from './prismd-harness.js';

const skip = integrationSkipReason();
if (skip) console.warn(`skipping events tests: ${skip}`);

/** Collects a stream's events in the background until `stop` aborts it. */
function collect(prism: Prism, opts: Parameters<Prism['events']>[0] = {}) {
  const stop = new AbortController();
  const got: LifecycleEvent[] = [];
  let open!: () => void;
  const opened = new Promise<void>((r) => (open = r));
  const done = (async () => {
    for await (const e of prism.events({ ...opts, signal: stop.signal, onOpen: open })) got.push(e);
  })();
  return { got, opened, stop: async () => (stop.abort(), await done) };
}

async function until(what: string, fn: () => boolean, ms = 20_000): Promise<void> {
  for (const deadline = Date.now() + ms; !fn(); await new Promise((r) => setTimeout(r, 50))) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
  }
}

describe.skipIf(!!skip)('GET /events (lifecycle events)', () => {
  let d: Prismd;
  let prism: Prism;

  beforeAll(async () => {
    d = await startPrismd({ extraArgs: ['--runtime', 'oci'] });
    prism = new Prism({ url: d.url, token: d.token });
  });
  afterAll(async () => {
    await d?.dispose();
  });

  it('streams created, each new status and deleted, in order; a filtered stream gets only its sandbox and types', async () => {
    const all = collect(prism);
    const mine = collect(prism, { sandbox: 'ev-a', types: ['running', 'deleted'] });
    await Promise.all([all.opened, mine.opened]);
    const a = await prism.sandboxes.create({ name: 'ev-a', memoryMb: 64 });
    const b = await prism.sandboxes.create({ name: 'ev-b', memoryMb: 64 });
    await a.stop();
    await a.delete();
    await b.delete();
    await until('both deletes', () => all.got.filter((e) => e.type === 'deleted').length === 2);
    await until('the filtered stream', () => mine.got.length === 2);
    await Promise.all([all.stop(), mine.stop()]);

    const ofA = all.got.filter((e) => e.sandboxId === a.id);
    const types = ofA.map((e) => e.type);
    for (const t of ['created', 'running', 'stopped', 'deleted'] as const) expect(types).toContain(t);
    expect(types.indexOf('created')).toBe(0);
    expect(types.indexOf('running')).toBeLessThan(types.indexOf('stopped'));
    expect(types.at(-1)).toBe('deleted');
    // Revision order, and a status appears only when it changes.
    expect(ofA.map((e) => e.revision)).toEqual([...ofA.map((e) => e.revision)].sort((x, y) => x - y));
    expect(types.filter((t, i) => t === types[i - 1])).toEqual([]);
    const running = ofA.find((e) => e.type === 'running')!;
    expect(running).toMatchObject({ name: 'ev-a', runtime: 'oci', node: expect.stringMatching(/^node-/) });
    expect(Date.parse(running.time)).toBeGreaterThan(0);
    expect(all.got.some((e) => e.sandboxId === b.id && e.type === 'running')).toBe(true);
    expect(mine.got.map((e) => [e.sandboxId, e.type])).toEqual([[a.id, 'running'], [a.id, 'deleted']]);
  }, 60_000);

  it('tells a pause and a resume: pausing, paused, resuming, running again', async () => {
    const mine = collect(prism, { sandbox: 'ev-pause' });
    await mine.opened;
    const sb = await prism.sandboxes.create({ name: 'ev-pause', memoryMb: 64 });
    await sb.pause();
    await sb.resume();
    await until('running again', () => mine.got.filter((e) => e.type === 'running').length === 2);
    await mine.stop();
    expect(mine.got.map((e) => e.type).filter((t) => t !== 'scheduled' && t !== 'starting')).toEqual(['created', 'running', 'pausing', 'paused', 'resuming', 'running']);
    await sb.delete();
  }, 60_000);

  it('tells a failure with its reason (an init killed on the host)', async () => {
    const failed = collect(prism, { types: ['failed'] });
    await failed.opened;
    const sb = await prism.sandboxes.create({ name: 'ev-fail', memoryMb: 64 });
    const pid = Number(readFileSync(join(d.dataDir, 'runtime', 'oci', 'tasks', sb.id, 'bundle', 'init.pid'), 'utf8'));
    process.kill(pid, 'SIGKILL');
    await until('the failed event', () => failed.got.length === 1);
    await failed.stop();
    expect(failed.got[0]).toMatchObject({ type: 'failed', sandboxId: sb.id, name: 'ev-fail', error: { code: 'TASK_EXITED' } });
    await sb.delete();
  }, 60_000);

  it('prismctl events prints them; unknown types and missing tokens are refused', async () => {
    const ctl = spawn(process.execPath, [join(REPO_ROOT, 'bin', 'prismctl.js'), '--api', d.api, 'events', '--sandbox', 'ev-cli', '--type', 'running', '--count', '1'], {
      env: { ...process.env, PRISM_TOKEN: d.token, PRISM_CONFIG: join(d.dataDir, 'no-such-config.json') },
    });
    let out = '';
    ctl.stdout.on('data', (c: Buffer) => (out += c.toString()));
    let code: number | null | undefined;
    ctl.on('exit', (c) => (code = c));
    // Until the CLI (connecting meanwhile) has seen one: a sandbox of that name running, again and again.
    const ids: string[] = [];
    for (let i = 0; i < 20 && code === undefined; i++) {
      const sb = await prism.sandboxes.create({ name: 'ev-cli', memoryMb: 64 });
      ids.push(sb.id);
      await new Promise((r) => setTimeout(r, 500));
      await sb.delete();
    }
    await until('prismctl to exit', () => code !== undefined);
    expect(code).toBe(0);
    const line = out.trim().split('\n');
    expect(line).toHaveLength(1);
    expect(line[0]).toMatch(/running +ev-cli \((sb-[0-9a-f]+)\) on node-/);
    expect(ids).toContain(/\((sb-[0-9a-f]+)\)/.exec(line[0]!)![1]);

    const bad = await call(d.url, 'GET', '/events?type=exploded');
    expect(bad.status).toBe(400);
    expect(bad.body.error).toMatchObject({ code: 'INVALID_ARGUMENT', message: expect.stringMatching(/unknown event type 'exploded'/) });
    expect((await fetch(`${d.url}/api/v1/events`)).status).toBe(401);
  }, 60_000);
});
