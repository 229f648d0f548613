/**
 * The official e2b SDK against a 3-node Prism cluster (3 prismd on one etcd): the SDK calls one node,
 * the sandbox runs on another, and every call (commands, files, code) is forwarded to its owner, as
 * Prism's own exec is. The SDK never learns which node runs the sandbox.
 */
import { Sandbox, CommandExitError } from 'e2b';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EtcdCluster, etcdSkipReason } from '../fixtures/etcd-cluster.js';
import { call, integrationSkipReason, startPrismd, type Prismd } from '../integration/prismd-harness.js';

const skip = integrationSkipReason() ?? (etcdSkipReason || undefined);
if (skip) console.warn(`skipping E2B cluster tests: ${skip}`);

describe.skipIf(skip !== undefined)('the e2b SDK against a 3-node cluster', () => {
  const etcd = new EtcdCluster();
  let nodes: Prismd[] = [];

  beforeAll(async () => {
    await etcd.start(1);
    const store = `etcd://${etcd.endpoints().map((u) => u.replace('http://', '')).join(',')}`;
    const args = (i: number) => ['--store', store, '--name', `e2b-node-${i}`, '--runtime', 'oci', '--label', `n=${i}`];
    const first = await startPrismd({ extraArgs: args(0) });
    nodes = [first, ...(await Promise.all([1, 2].map((i) => startPrismd({ extraArgs: args(i), token: first.token }))))];
    for (const deadline = Date.now() + 20_000; ; ) {
      const info = (await call(first.url, 'GET', '/cluster/info')).body as { nodesAlive: number; leader: string };
      if (info.nodesAlive === 3 && info.leader) break;
      if (Date.now() > deadline) throw new Error('the cluster did not form');
      await new Promise((r) => setTimeout(r, 100));
    }
  }, 120_000);

  afterAll(async () => {
    for (const n of nodes) await n.dispose().catch(() => undefined);
    await etcd.stop();
  });

  it('runs commands, files and PTYs of a sandbox on node 3 through node 1', async () => {
    // Placed on node 3 through Prism's own API (E2B's create has no placement), then reached through node 1.
    const made = await call(nodes[0]!.url, 'POST', '/sandboxes', { nodeSelector: { n: '2' }, metadata: { via: 'prism' } });
    expect(made.status, JSON.stringify(made.body)).toBe(201);
    const owner = (await call(nodes[2]!.url, 'GET', '/health')).body.node;
    expect(made.body.node).toBe(owner);
    const opts = { apiKey: nodes[0]!.token, apiUrl: `${nodes[0]!.url}/e2b`, sandboxUrl: `${nodes[0]!.url}/e2b/envd` };
    const sbx = await Sandbox.connect(made.body.id, opts);
    try {
      expect((await sbx.commands.run('echo from-owner; hostname')).stdout).toMatch(/^from-owner\n/);
      await expect(sbx.commands.run('exit 4')).rejects.toBeInstanceOf(CommandExitError);
      const bg = await sbx.commands.run('sleep 300', { background: true, timeoutMs: 0 });
      expect((await sbx.commands.list()).map((p) => p.pid)).toContain(bg.pid);
      expect(await sbx.commands.kill(bg.pid)).toBe(true);
      await sbx.files.write('/tmp/x.txt', 'across nodes');
      expect(await sbx.files.read('/tmp/x.txt')).toBe('across nodes');
      expect((await sbx.files.list('/tmp')).map((e) => e.name)).toContain('x.txt');
      let screen = '';
      const term = await sbx.pty.create({ cols: 80, rows: 24, onData: (d) => void (screen += Buffer.from(d).toString()), timeoutMs: 0 });
      await sbx.pty.sendInput(term.pid, new TextEncoder().encode('echo pty=$((2+3))\n'));
      for (const deadline = Date.now() + 15_000; !screen.includes('pty=5') && Date.now() < deadline; ) await new Promise((r) => setTimeout(r, 50));
      expect(screen).toContain('pty=5');
      await sbx.pty.kill(term.pid);
      const down = await sbx.downloadUrl('/tmp/x.txt');
      expect(await (await fetch(down)).text()).toBe('across nodes');
      expect((await sbx.getInfo()).metadata).toEqual({ via: 'prism' });
      // Samples live on the owner: node 1 forwards, and Prism's own API answers the same there.
      const metrics = await sbx.getMetrics();
      expect(metrics.at(-1)).toMatchObject({ cpuCount: 1, memTotal: 512 * 2 ** 20 });
      const prism = await call(nodes[0]!.url, 'GET', `/sandboxes/${made.body.id}/metrics`);
      expect(prism.body.metrics.at(-1).memUsed).toBeGreaterThan(0);
      const logs = await fetch(`${nodes[1]!.url}/e2b/v2/sandboxes/${made.body.id}/logs?search=exit%204`, { headers: { 'x-api-key': nodes[0]!.token } });
      expect(((await logs.json()) as { logs: unknown[] }).logs).toHaveLength(1);
    } finally {
      expect(await sbx.kill()).toBe(true);
    }
    expect((await call(nodes[2]!.url, 'GET', `/sandboxes/${made.body.id}`)).status).toBe(404);
  });

  it('creates through any node and reaches the sandbox through every node', async () => {
    const opts = (i: number) => ({ apiKey: nodes[i]!.token, apiUrl: `${nodes[i]!.url}/e2b`, sandboxUrl: `${nodes[i]!.url}/e2b/envd` });
    const sbx = await Sandbox.create({ ...opts(1), timeoutMs: 120_000 });
    try {
      // Direct creates (on by default): made by the node the create came to, no scheduler involved.
      const node1 = (await call(nodes[1]!.url, 'GET', '/health')).body.node;
      expect((await call(nodes[0]!.url, 'GET', `/sandboxes/${sbx.sandboxId}`)).body.node).toBe(node1);
      for (const i of [0, 1, 2]) {
        const via = await Sandbox.connect(sbx.sandboxId, opts(i));
        expect((await via.commands.run(`echo via-${i}`)).stdout).toBe(`via-${i}\n`);
      }
    } finally {
      await sbx.kill();
    }
  });
});
