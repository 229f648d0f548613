import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startInProcessNode } from '../daemon/in-process-api.test-support.js';
import type { NodeServices } from '../daemon/node-wiring.js';
import { readSandboxValue } from '../service/sandbox-repo.js';
import { SqliteStore } from '../store/sqlite/sqlite-store.js';

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/**
 * Two nodes of one cluster on one store, each with its API on loopback (the real routes and proxy); with
 * direct creates off (every create to the scheduler), then on.
 */
describe.each([false, true])('creates sent on to the scheduler leader (owner-proxy LeaderForward), direct creates %s', (DIRECT) => {
  const store = SqliteStore.open(':memory:');
  const nodes: { id: string; svc: NodeServices; app: FastifyInstance; url: string }[] = [];

  async function start(id: string) {
    const n = await startInProcessNode({ store, id, labels: { node: id }, directCreate: DIRECT });
    nodes.push({ id, svc: n.node, app: n.app, url: n.url });
  }

  /** The first status each new sandbox record was written with. */
  const firstStatus = new Map<string, string>();
  beforeAll(async () => {
    await start('n1');
    for (let i = 0; i < 200 && !nodes[0]!.svc.scheduler.placesNew; i++) await sleep(10);
    await start('n2');
    for (let i = 0; i < 200 && nodes[1]!.svc.membership.leader() !== 'n1'; i++) await sleep(10);
    const w = store.watch('/prism/sandboxes/', await store.revision(), (e) => {
      const id = e.key.split('/').pop()!;
      if (e.type === 'put' && !firstStatus.has(id)) firstStatus.set(id, readSandboxValue(e.value!).sandbox.status);
    });
    return () => w.close();
  });
  afterAll(async () => {
    for (const n of nodes.reverse()) {
      await n.app.close().catch(() => undefined);
      await n.svc.stop();
    }
    store.close();
  });

  const create = async (url: string, body: object = {}) => {
    const res = await fetch(`${url}/api/v1/sandboxes`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    return { status: res.status, body: (await res.json()) as { id: string; status: string; error?: { code: string } } };
  };

  /** With direct creates on, a create n2 would make itself is not sent on: these may only run on n1. */
  const forLeader = DIRECT ? { nodeSelector: { node: 'n1' } } : {};

  it.runIf(DIRECT)('a create that placement would put on the node it came to is made there, in one write, and not sent on', async () => {
    const placedBefore = nodes[0]!.svc.scheduler.stats.placed;
    const made = await create(nodes[1]!.url, { name: 'direct-n2' });
    expect(made.status).toBe(201);
    expect(made.body).toMatchObject({ status: 'running', node: 'n2' });
    expect(firstStatus.get(made.body.id)).toBe('running');
    expect(nodes[0]!.svc.scheduler.stats.placed).toBe(placedBefore);
    // A taken name, refused by the direct create's own commit: nothing is left of the loser.
    const dup = await create(nodes[1]!.url, { name: 'direct-n2' });
    expect(dup.status).toBe(409);
    expect(dup.body.error?.code).toBe('ALREADY_EXISTS');
    expect((await nodes[1]!.svc.sandboxes.list()).filter((sb) => sb.name === 'direct-n2')).toHaveLength(1);
    await nodes[1]!.svc.sandboxes.delete(made.body.id);
  });

  it('a create made on the other node is answered by the leader, which writes it already placed', async () => {
    expect(nodes[0]!.svc.membership.leader()).toBe('n1');
    expect(nodes[1]!.svc.membership.leader()).toBe('n1');
    const placedBefore = nodes[0]!.svc.scheduler.stats.placed;
    const made = await create(nodes[1]!.url, { name: 'via-n2', ...forLeader });
    expect(made.status).toBe(201);
    expect(made.body.status).toBe('running');
    // On the leader's node, a create it may run itself is made there directly too.
    expect(firstStatus.get(made.body.id)).toBe(DIRECT ? 'running' : 'scheduled');
    expect(nodes[0]!.svc.scheduler.stats.placed).toBe(placedBefore + (DIRECT ? 0 : 1));
    if (DIRECT) expect(made.body).toMatchObject({ node: 'n1' });
    // The leader's refusal comes back as it gave it.
    const dup = await create(nodes[1]!.url, { name: 'via-n2', ...forLeader });
    expect(dup.status).toBe(409);
    expect(dup.body.error?.code).toBe('ALREADY_EXISTS');
  });

  it("E2B's create goes to the leader too (or is made directly), and answers with the Host the client called, as connect on another node's sandbox does", async () => {
    const e2b = async (url: string, path: string, body: object) => {
      const res = await fetch(`${url}/e2b${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
      return { status: res.status, body: (await res.json()) as { sandboxID: string; domain: string } };
    };
    const n2Host = new URL(nodes[1]!.url).host;
    const placedBefore = nodes[0]!.svc.scheduler.stats.placed;
    const made = await Promise.all(Array.from({ length: 4 }, () => e2b(nodes[1]!.url, '/sandboxes', { templateID: 'base', timeout: 300, allow_internet_access: false })));
    for (const m of made) {
      expect(m.status, JSON.stringify(m.body)).toBe(201);
      expect(m.body.domain).toBe(n2Host);
      expect(firstStatus.get(m.body.sandboxID)).toBe(DIRECT ? 'running' : 'scheduled');
    }
    expect(nodes[0]!.svc.scheduler.stats.placed).toBe(placedBefore + (DIRECT ? 0 : 4));
    // Connect runs on the sandbox's node (owner proxy): the domain is still the one the client called.
    for (const m of made) {
      const sb = await nodes[1]!.svc.sandboxes.get(m.body.sandboxID);
      for (const n of nodes) {
        const c = await e2b(n.url, `/sandboxes/${sb.id}/connect`, { timeout: 300 });
        expect(c.status, `connect on ${n.id} to a sandbox of ${sb.node}`).toBe(200);
        expect(c.body.domain).toBe(new URL(n.url).host);
      }
    }
    expect(new Set(await Promise.all(made.map(async (m) => (await nodes[1]!.svc.sandboxes.get(m.body.sandboxID)).node)))).toEqual(new Set(DIRECT ? ['n2'] : ['n1', 'n2']));
  });

  it('when the leader cannot be connected to, the create is made where it came in, pending for the leader', async () => {
    // n1 still leads (its membership and scheduler run) but no longer answers on its API.
    await nodes[0]!.app.close();
    const made = await create(nodes[1]!.url, { name: 'leader-unreachable', ...forLeader });
    expect(made.status).toBe(201);
    expect(made.body.status).toBe('running');
    expect(firstStatus.get(made.body.id)).toBe('pending');
  });
});
