/**
 * The sandbox lifecycle through a real prismd on the oci runtime (real runc): pause keeping processes
 * and memory across a prismd crash, auto-resume, and racing lifecycle calls on SQLite and on etcd
 * (every status write is a compare-and-swap from the statuses the lifecycle table allows).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EtcdCluster, etcdSkipReason } from '../fixtures/etcd-cluster.js';
import { call, integrationSkipReason, leftovers, startPrismd, type Prismd } from './prismd-harness.js';

const skip = integrationSkipReason();
if (skip) console.warn(`skipping lifecycle integration tests: ${skip}`);

const COUNTER = 'i=0; while :; do i=$((i+1)); echo $i > /tmp/count.new; mv /tmp/count.new /tmp/count; sleep 0.05; done';
// The loop's shell (the pattern does not match this finder's own command line), not a child it just
// forked for `mv` or `sleep`, which carries the same command line until it execs (seen under load).
const FIND_LOOP = [
  "m=$(for p in /proc/[0-9]*; do grep -q 'do [i]=' $p/cmdline 2>/dev/null && echo ${p#/proc/}; done)",
  'for p in $m; do pp=$(awk \'/^PPid:/ { print $2 }\' /proc/$p/status 2>/dev/null); [ -n "$pp" ] || continue',
  'case " $(echo $m) " in *" $pp "*) ;; *) echo $p ;; esac; done',
].join('; ');

describe.skipIf(!!skip)('lifecycle over HTTP (oci)', () => {
  let d: Prismd;
  beforeAll(async () => {
    d = await startPrismd();
  });
  afterAll(async () => {
    await d?.dispose();
  });

  const sh = async (id: string, command: string) => {
    const r = await call(d.url, 'POST', `/sandboxes/${id}/exec`, { command });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    return (r.body.stdout as string).trim();
  };

  it('pauses keeping a running process and its memory, stays paused through kill -9 of prismd, resumes where it was', async () => {
    const sb = (await call(d.url, 'POST', '/sandboxes', { autoResume: false })).body;
    // Detached from the exec (its own session), so it outlives prismd's connection to the sandbox.
    const bg = await call(d.url, 'POST', `/sandboxes/${sb.id}/exec`, { command: `setsid sh -c '${COUNTER}' </dev/null >/dev/null 2>&1 &` });
    expect(bg.status).toBe(200);
    for (const deadline = Date.now() + 5000; Number(await sh(sb.id, 'cat /tmp/count 2>/dev/null || echo 0')) < 3 && Date.now() < deadline; );
    const pid = await sh(sb.id, FIND_LOOP);
    const before = Number(await sh(sb.id, 'cat /tmp/count'));
    const paused = await call(d.url, 'POST', `/sandboxes/${sb.id}/pause`);
    expect(paused.body).toMatchObject({ status: 'paused', pausedAt: expect.any(String) });
    // autoResume: false, so a command is refused rather than resuming it.
    expect((await call(d.url, 'POST', `/sandboxes/${sb.id}/exec`, { command: 'true' })).status).toBe(412);

    d = await d.restart('SIGKILL');
    expect((await call(d.url, 'GET', `/sandboxes/${sb.id}`)).body.status).toBe('paused');
    await new Promise((r) => setTimeout(r, 500));
    const resumed = await call(d.url, 'POST', `/sandboxes/${sb.id}/resume`);
    expect(resumed.body.status, JSON.stringify(resumed.body)).toBe('running');
    const after = Number(await sh(sb.id, 'cat /tmp/count'));
    expect(after).toBeGreaterThanOrEqual(before);
    expect(after - before).toBeLessThan(20); // frozen for seconds: it would be far past otherwise
    expect(await sh(sb.id, FIND_LOOP)).toBe(pid);
    expect((await call(d.url, 'DELETE', `/sandboxes/${sb.id}`)).status).toBe(204);
    expect(leftovers(sb.id, d.dataDir)).toEqual([]);
  });

  it('marks a sandbox whose init was killed on the host failed (TASK_EXITED), and deletes it without leftovers', async () => {
    const sb = (await call(d.url, 'POST', '/sandboxes', {})).body;
    const pid = Number(readFileSync(join(d.dataDir, 'runtime', 'oci', 'tasks', sb.id, 'bundle', 'init.pid'), 'utf8'));
    process.kill(pid, 'SIGKILL');
    let cur = sb;
    for (const deadline = Date.now() + 20_000; cur.status !== 'failed' && Date.now() < deadline; ) {
      await new Promise((r) => setTimeout(r, 100));
      cur = (await call(d.url, 'GET', `/sandboxes/${sb.id}`)).body;
    }
    expect(cur).toMatchObject({ status: 'failed', error: { code: 'TASK_EXITED' } });
    expect((await call(d.url, 'POST', `/sandboxes/${sb.id}/exec`, { command: 'true' })).status).toBe(412);
    expect((await call(d.url, 'DELETE', `/sandboxes/${sb.id}`)).status).toBe(204);
    expect(leftovers(sb.id, d.dataDir)).toEqual([]);
  });

  it('resumes a paused sandbox for a command, and pause/resume answer 412 where they do not apply', async () => {
    const sb = (await call(d.url, 'POST', '/sandboxes', {})).body;
    await call(d.url, 'POST', `/sandboxes/${sb.id}/pause`);
    expect(await sh(sb.id, 'echo awake')).toBe('awake');
    expect((await call(d.url, 'GET', `/sandboxes/${sb.id}`)).body.status).toBe('running');
    expect((await call(d.url, 'POST', `/sandboxes/${sb.id}/resume`)).body.status).toBe('running'); // already running
    await call(d.url, 'POST', `/sandboxes/${sb.id}/stop`);
    const refused = await call(d.url, 'POST', `/sandboxes/${sb.id}/pause`);
    expect(refused.status).toBe(412);
    expect(refused.body.error.message).toMatch(/is stopped/);
    expect((await call(d.url, 'POST', `/sandboxes/${sb.id}/pause`)).status).toBe(412);
    await call(d.url, 'DELETE', `/sandboxes/${sb.id}`);
  });

  it('racing calls on one sandbox: no 5xx, no resurrected record, nothing left', async () => {
    await raceRounds(() => d);
  });
});

const etcdSkip = skip ?? (etcdSkipReason || undefined);
describe.skipIf(!!etcdSkip)('racing lifecycle calls on an etcd store (oci)', () => {
  const etcd = new EtcdCluster();
  let d: Prismd;
  beforeAll(async () => {
    await etcd.start(1);
    d = await startPrismd({ extraArgs: ['--store', `etcd://${etcd.endpoints().map((u) => u.replace('http://', '')).join(',')}`] });
  }, 60_000);
  afterAll(async () => {
    try {
      await d?.dispose();
    } finally {
      await etcd.stop(); // also when dispose found leftovers: no etcd outlives the file
    }
  });

  it('racing calls on one sandbox: no 5xx, no resurrected record, nothing left', async () => {
    await raceRounds(() => d);
  });
});

/** create || delete, stop || delete, start || delete, pause || delete || stop, resume || delete. */
async function raceRounds(daemon: () => Prismd): Promise<void> {
  const d = daemon();
  const post = (path: string, body?: object) => call(d.url, 'POST', path, body);
  for (let round = 0; round < 5; round++) {
    // create || delete: the delete goes as soon as the record is listed.
    const create = post('/sandboxes', { name: `race-${round}` });
    let id: string | undefined;
    for (const deadline = Date.now() + 10_000; !id && Date.now() < deadline; ) {
      id = ((await call(d.url, 'GET', '/sandboxes')).body.sandboxes as { id: string; name: string }[]).find((s) => s.name === `race-${round}`)?.id;
    }
    expect(id).toBeDefined();
    const [made, del] = await Promise.all([create, call(d.url, 'DELETE', `/sandboxes/${id}`)]);
    expect(made.status, JSON.stringify(made.body)).toBeLessThan(500);
    if (made.status !== 201) expect(made.body.error.code).toBe('CONFLICT');
    expect(del.status).toBeLessThan(500);
    expect((await call(d.url, 'GET', `/sandboxes/${id}`)).status).toBe(404);
    expect(leftovers(id!, d.dataDir)).toEqual([]);

    const sb = (await post('/sandboxes', {})).body as { id: string };
    const steps: Promise<{ status: number; body: any }>[] = [call(d.url, 'DELETE', `/sandboxes/${sb.id}`)];
    if (round % 4 === 0) steps.push(post(`/sandboxes/${sb.id}/stop`));
    if (round % 4 === 1) steps.push(post(`/sandboxes/${sb.id}/stop`).then(() => post(`/sandboxes/${sb.id}/start`)));
    if (round % 4 === 2) steps.push(post(`/sandboxes/${sb.id}/pause`), post(`/sandboxes/${sb.id}/stop`));
    if (round % 4 === 3) steps.push(post(`/sandboxes/${sb.id}/pause`).then(() => post(`/sandboxes/${sb.id}/resume`)));
    for (const r of await Promise.all(steps)) expect(r.status, JSON.stringify(r.body)).toBeLessThan(500);
    expect((await call(d.url, 'GET', `/sandboxes/${sb.id}`)).status).toBe(404);
    // A losing call's own cleanup may still be finishing.
    for (const deadline = Date.now() + 5000; leftovers(sb.id, d.dataDir).length && Date.now() < deadline; ) await new Promise((r) => setTimeout(r, 100));
    expect(leftovers(sb.id, d.dataDir)).toEqual([]);
  }
}
