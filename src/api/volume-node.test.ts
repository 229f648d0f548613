import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startInProcessNode } from '../daemon/in-process-api.test-support.js';
import type { NodeServices } from '../daemon/node-wiring.js';
import { Prism, PrismApiError } from '../sdk/index.js';
import { SqliteStore } from '../store/sqlite/sqlite-store.js';
import { LocalVolumeStore } from '../volumes/local/local-volume-store.js';

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/**
 * `POST /volumes {node}`: three nodes of one cluster on one store, each with its API on loopback (the
 * real routes and owner proxy) and a volume store of its own. A create names the node the volume is
 * made on; the node it reached sends it there.
 */
describe('volumes created on the node a request names', () => {
  const store = SqliteStore.open(':memory:', { leaseSweepMs: 50 });
  let dir: string;
  const nodes: { id: string; svc: NodeServices; app: FastifyInstance; url: string; data: LocalVolumeStore; stopped?: boolean }[] = [];
  const node = (id: string) => nodes.find((n) => n.id === id)!;

  async function start(id: string) {
    const data = new LocalVolumeStore(join(dir, id, 'volumes'));
    await mkdir(join(dir, id), { recursive: true });
    const n = await startInProcessNode({ store, id, name: `name-${id}`, dataDir: join(dir, id), volumes: data, nodeTtlMs: 600 });
    nodes.push({ id, svc: n.node, app: n.app, url: n.url, data });
  }

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'prism-volnode-'));
    for (const id of ['n1', 'n2', 'n3']) await start(id);
  });
  afterAll(async () => {
    for (const n of nodes.reverse()) {
      await n.app.close().catch(() => undefined);
      if (!n.stopped) await n.svc.stop();
    }
    store.close();
    await rm(dir, { recursive: true, force: true });
  });

  const post = async (url: string, body: object) => {
    const res = await fetch(`${url}/api/v1/volumes`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    return { status: res.status, body: (await res.json()) as { node?: string; error?: { code: string; message: string } } };
  };

  it('is made on the node named by id or by name, wherever the request came in; data only there', async () => {
    expect(await post(node('n1').url, { name: 'by-id', sizeMb: 16, node: 'n2' })).toMatchObject({ status: 201, body: { node: 'n2' } });
    expect(await post(node('n1').url, { name: 'by-name', sizeMb: 16, node: 'name-n3' })).toMatchObject({ status: 201, body: { node: 'n3' } });
    expect(await post(node('n1').url, { name: 'here', sizeMb: 16, node: 'name-n1' })).toMatchObject({ status: 201, body: { node: 'n1' } });
    // Through the SDK, as `prismctl volume create --node` sends it.
    expect(await new Prism({ url: node('n3').url }).volumes.create({ name: 'by-sdk', sizeMb: 16, node: 'n2' })).toMatchObject({ node: 'n2' });
    expect((await node('n1').data.list()).sort()).toEqual(['here']);
    expect((await node('n2').data.list()).sort()).toEqual(['by-id', 'by-sdk']);
    expect((await node('n3').data.list()).sort()).toEqual(['by-name']);
    // A sandbox mounting one runs on its node.
    const sb = await new Prism({ url: node('n1').url }).sandboxes.create({ volumes: [{ name: 'by-name', mountPath: '/v' }] });
    expect(sb.info.node).toBe('n3');
    await sb.delete();
  });

  it('refuses an unknown node with NOT_FOUND, a taken name with ALREADY_EXISTS, and makes nothing', async () => {
    const before = await node('n1').svc.volumes.list();
    const unknown = await post(node('n1').url, { name: 'nowhere', sizeMb: 16, node: 'n9' });
    expect(unknown).toMatchObject({ status: 404, body: { error: { code: 'NOT_FOUND', message: expect.stringContaining("node 'n9' not found") } } });
    expect(await post(node('n1').url, { name: 'by-id', sizeMb: 16, node: 'n3' })).toMatchObject({ status: 409, body: { error: { code: 'ALREADY_EXISTS' } } });
    expect(await node('n1').svc.volumes.list()).toEqual(before);
    expect(await node('n3').data.list()).toEqual(['by-name']);
  });

  it('answers UNAVAILABLE for a node that is not alive, and makes nothing', async () => {
    const n3 = node('n3');
    n3.stopped = true;
    await n3.app.close();
    await n3.svc.stop(); // its lease runs out, as after a crash
    for (let i = 0; i < 200 && (await node('n1').svc.nodes.list()).find((n) => n.id === 'n3')?.status === 'alive'; i++) await sleep(25);
    const err = await new Prism({ url: node('n1').url }).volumes.create({ name: 'late', sizeMb: 16, node: 'name-n3' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PrismApiError);
    expect(err).toMatchObject({ code: 'UNAVAILABLE', message: expect.stringMatching(/node name-n3 is dead/) });
    expect((await node('n1').svc.volumes.list()).map((v) => v.name)).not.toContain('late');
    expect(await n3.data.list()).toEqual(['by-name']);
  });
});
