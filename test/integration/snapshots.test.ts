/**
 * Snapshots and forks through a real prismd on the oci runtime: a sandbox's writable layer (added
 * files, deleted files, a directory replaced whole) becomes an image layer, and sandboxes created from
 * it see exactly the parent's files.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { call, integrationSkipReason, leftovers, startPrismd, type Prismd } from './prismd-harness.js';

const skip = integrationSkipReason();
if (skip) console.warn(`skipping snapshot integration tests: ${skip}`);

describe.skipIf(!!skip)('snapshots and forks (oci)', () => {
  let d: Prismd;
  beforeAll(async () => {
    d = await startPrismd();
  });
  afterAll(async () => {
    await d?.dispose();
  });

  const sh = async (id: string, command: string, root = false) => {
    const r = await call(d.url, 'POST', `/sandboxes/${id}/exec`, { command, ...(root ? { user: 'root' } : {}) });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    return r.body as { exitCode: number; stdout: string; stderr: string };
  };
  // What the tests change: a new file, a file of the image deleted, a directory of the image replaced.
  const LOOK = 'cat /home/sandbox/note.txt; test -e /etc/debian_version && echo has-version || echo no-version; ls /etc/apt/apt.conf.d';

  it('takes a snapshot of a running sandbox and creates sandboxes from it with the same files', async () => {
    const parent = (await call(d.url, 'POST', '/sandboxes', { name: 'snap-parent', env: { FROM: 'parent' } })).body;
    await sh(parent.id, 'echo written before > /home/sandbox/note.txt');
    await sh(parent.id, 'rm /etc/debian_version && rm -rf /etc/apt/apt.conf.d && mkdir /etc/apt/apt.conf.d && echo mine > /etc/apt/apt.conf.d/only', true);
    const expected = await sh(parent.id, LOOK);
    expect(expected.stdout).toBe('written before\nno-version\nonly\n');

    const snap = await call(d.url, 'POST', `/sandboxes/${parent.id}/snapshots`, { name: 'first' });
    expect(snap.status, JSON.stringify(snap.body)).toBe(201);
    expect(snap.body).toMatchObject({ name: 'first', sandboxId: parent.id, runtime: 'oci', memory: false, image: expect.stringMatching(/^prism\.local\/snapshots\/snap-/) });
    expect(snap.body.size).toBeGreaterThan(0);
    // The parent was frozen only while its layer was read: it runs on.
    expect((await call(d.url, 'GET', `/sandboxes/${parent.id}`)).body.status).toBe('running');
    await sh(parent.id, 'echo after > /home/sandbox/note.txt');

    const child = await call(d.url, 'POST', '/sandboxes', { snapshot: snap.body.id });
    expect(child.status, JSON.stringify(child.body)).toBe(201);
    expect(child.body).toMatchObject({ snapshot: snap.body.id, image: snap.body.image });
    expect((await sh(child.body.id, LOOK)).stdout).toBe(expected.stdout);
    expect((await call(d.url, 'GET', '/snapshots')).body.snapshots.map((s: { id: string }) => s.id)).toContain(snap.body.id);

    // In use: refused; once its sandboxes are gone: removed with its image.
    const refused = await call(d.url, 'DELETE', `/snapshots/${snap.body.id}`);
    expect(refused.status).toBe(412);
    expect(refused.body.error.message).toMatch(/in use/);
    await call(d.url, 'DELETE', `/sandboxes/${child.body.id}`);
    expect((await call(d.url, 'DELETE', `/snapshots/${snap.body.id}`)).status).toBe(204);
    expect((await call(d.url, 'GET', `/snapshots/${snap.body.id}`)).status).toBe(404);
    const images = (await call(d.url, 'GET', '/images')).body.images as { refs: string[] }[];
    expect(images.flatMap((i) => i.refs).some((r) => r.includes(snap.body.id))).toBe(false);
    expect((await call(d.url, 'POST', '/sandboxes', { snapshot: snap.body.id })).status).toBe(404);
    await call(d.url, 'DELETE', `/sandboxes/${parent.id}`);
    expect(leftovers(parent.id, d.dataDir)).toEqual([]);
  });

  it('forks a sandbox: N copies with its files, resources and environment, all or nothing', async () => {
    const parent = (await call(d.url, 'POST', '/sandboxes', { name: 'fork-parent', memoryMb: 256, env: { ROLE: 'p' } })).body;
    await sh(parent.id, 'echo state-1 > /home/sandbox/note.txt');
    const fork = await call(d.url, 'POST', `/sandboxes/${parent.id}/fork`, { count: 2 });
    expect(fork.status, JSON.stringify(fork.body)).toBe(201);
    expect(fork.body.memory).toBe(false);
    expect(fork.body.sandboxes).toHaveLength(2);
    for (const sb of fork.body.sandboxes) {
      expect(sb).toMatchObject({ status: 'running', memoryMb: 256, env: { ROLE: 'p' }, metadata: { 'prism.fork-of': parent.id } });
      expect((await sh(sb.id, 'cat /home/sandbox/note.txt; echo $ROLE')).stdout).toBe('state-1\np\n');
    }
    // Each fork has its own files from there on.
    await sh(fork.body.sandboxes[0].id, 'echo mine > /home/sandbox/note.txt');
    expect((await sh(fork.body.sandboxes[1].id, 'cat /home/sandbox/note.txt')).stdout).toBe('state-1\n');
    expect((await call(d.url, 'POST', `/sandboxes/${parent.id}/fork`, { count: 17 })).status).toBe(400);
    for (const sb of [...fork.body.sandboxes, parent]) await call(d.url, 'DELETE', `/sandboxes/${sb.id}`);
    expect((await call(d.url, 'DELETE', `/snapshots/${fork.body.snapshot.id}`)).status).toBe(204);
  });

  it('snapshots a stopped sandbox too, and refuses bad requests clearly', async () => {
    const sb = (await call(d.url, 'POST', '/sandboxes', {})).body;
    await sh(sb.id, 'echo kept > /home/sandbox/note.txt');
    await call(d.url, 'POST', `/sandboxes/${sb.id}/stop`);
    const snap = await call(d.url, 'POST', `/sandboxes/${sb.id}/snapshots`, {});
    expect(snap.status, JSON.stringify(snap.body)).toBe(201);
    const child = (await call(d.url, 'POST', '/sandboxes', { snapshot: snap.body.id })).body;
    expect((await sh(child.id, 'cat /home/sandbox/note.txt')).stdout).toBe('kept\n');
    expect((await call(d.url, 'POST', '/sandboxes', { snapshot: 'snap-000000000000' })).status).toBe(404);
    expect((await call(d.url, 'POST', '/sandboxes', { snapshot: snap.body.id, image: 'python:3.12' })).status).toBe(400);
    expect((await call(d.url, 'POST', '/sandboxes/ghost/snapshots', {})).status).toBe(404);
    await call(d.url, 'DELETE', `/sandboxes/${child.id}`);
    await call(d.url, 'DELETE', `/sandboxes/${sb.id}`);
    expect((await call(d.url, 'DELETE', `/snapshots/${snap.body.id}`)).status).toBe(204);
    expect(leftovers(sb.id, d.dataDir)).toEqual([]);
  });
});
