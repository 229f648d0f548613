import { randomBytes } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Etcd3 } from 'etcd3';
import { Prism, type LifecycleEvent } from '../../src/sdk/index.js';
import { EtcdCluster, etcdSkipReason } from '../fixtures/etcd-cluster.js';
import { call, integrationSkipReason, leftovers, startPrismd, type Prismd, authHeaders, fetchFor } from './prismd-harness.js';
import { readSandboxValue } from '../../src/service/sandbox-repo.js';

/**
 * Three prismd processes on a real three-member etcd, all on loopback, running oci sandboxes:
 * placement, any-node API (forwarding, streaming included), no overcommit, node crash -> dead/lost ->
 * rejoin, scheduler-leader crash, and an etcd member crash.
 */

const skip = integrationSkipReason() ?? (etcdSkipReason || undefined);
if (skip) console.log(`skipping cluster tests: ${skip}`);

const TTL_S = 3;
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

async function until<T>(what: string, fn: () => Promise<T | undefined | false>, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn().catch(() => undefined);
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(100);
  }
}

interface Sb { id: string; name: string; node: string; status: string; error?: { code: string } }

describe.skipIf(skip !== undefined)('cluster on etcd (3 prismd, 3 etcd members)', () => {
  const etcd = new EtcdCluster();
  let nodes: Prismd[] = [];
  let ids: string[] = [];
  const store = () => `etcd://${etcd.endpoints().map((u) => u.replace('http://', '')).join(',')}`;
  // Every node serves HTTPS with a certificate of one cluster CA, so forwarding between nodes is TLS
  // verified against that CA.
  const caDir = mkdtempSync(join(tmpdir(), 'prism-cluster-ca-'));
  // Direct creates off: these tests are about the scheduler (placement, forwarding to the leader, failover),
  // which then places every create. test/e2b/e2b-cluster.test.ts runs its cluster with them on.
  const args = (i: number) => [
    '--store', store(), '--name', `node-${i}`, '--runtime', 'oci', '--node-ttl', String(TTL_S), '--capacity-memory-mb', '4096', '--direct-create', 'off',
    '--tls', 'auto', '--tls-ca', join(caDir, 'ca.crt'), '--tls-ca-key', join(caDir, 'ca.key'),
  ];

  const clusterInfo = async (n: Prismd) => (await call(n.url, 'GET', '/cluster/info')).body as { leader: string; nodesAlive: number; nodesDead: number };
  const nodeIndex = (id: string) => ids.indexOf(id);
  const create = async (via: Prismd, body: object = {}) => {
    const r = await call<Sb>(via.url, 'POST', '/sandboxes', { memoryMb: 64, cpus: 0.25, ...body });
    if (r.status !== 201) throw new Error(`create via ${via.url} -> ${r.status} ${JSON.stringify(r.body)}`);
    return r.body;
  };
  const exec = (via: Prismd, id: string, cmd: string) => call(via.url, 'POST', `/sandboxes/${id}/exec`, { command: cmd });

  beforeAll(async () => {
    const made = spawnSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2',
      '-subj', '/CN=test cluster CA', '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
      '-keyout', join(caDir, 'ca.key'), '-out', join(caDir, 'ca.crt')]);
    expect(made.status).toBe(0);
    await etcd.start(3);
    // The first node creates the cluster's admin token; the others join a cluster that has one.
    const first = await startPrismd({ extraArgs: args(0) });
    expect(first.token).toMatch(/^prism_/);
    nodes = [first, ...(await Promise.all([1, 2].map((i) => startPrismd({ extraArgs: args(i), token: first.token }))))];
    ids = await Promise.all(nodes.map(async (n) => ((await call(n.url, 'GET', '/health')).body as { node: string }).node));
    await until('3 alive nodes and a leader', async () => {
      const info = await clusterInfo(nodes[0]!);
      return info.nodesAlive === 3 && info.leader !== '';
    }, 15_000);
  }, 60_000);

  afterAll(async () => {
    // A test that failed after killing a node leaves its tasks running: bring it back so that it can
    // destroy them (only prismd knows how), then tear everything down.
    for (const [i, n] of nodes.entries()) {
      if (n.proc.exitCode !== null || n.proc.signalCode !== null) nodes[i] = await n.restart().catch(() => n);
    }
    for (const n of nodes) await n.dispose().catch(() => undefined);
    await etcd.stop();
    rmSync(caDir, { recursive: true, force: true });
  }, 60_000);

  it('spreads 30 sandboxes created through one node, and each answers exec through every node', async () => {
    const made: Sb[] = [];
    for (let i = 0; i < 30; i += 10) made.push(...(await Promise.all(Array.from({ length: 10 }, () => create(nodes[0]!)))));
    const per = [0, 0, 0];
    for (const sb of made) per[nodeIndex(sb.node)]!++;
    expect(per).toEqual([10, 10, 10]);
    for (const [i, sb] of made.entries()) {
      const via = nodes[i % 3]!;
      const r = await exec(via, sb.id, 'echo "$(hostname) $((6*7))"');
      expect(r.status, JSON.stringify(r.body)).toBe(200);
      expect(r.body).toMatchObject({ exitCode: 0, stdout: `${sb.name} 42\n` });
    }
    // Streaming survives forwarding: events arrive as NDJSON through a node that does not own the sandbox.
    const remote = made.find((s) => s.node !== ids[0])!;
    expect(nodes[0]!.url).toMatch(/^https:/);
    const res = await fetchFor(nodes[0]!.url)(`${nodes[0]!.url}/api/v1/sandboxes/${remote.id}/exec`, {
      method: 'POST',
      headers: { ...authHeaders(nodes[0]!.url), 'content-type': 'application/json', accept: 'application/x-ndjson' },
      body: JSON.stringify({ command: 'echo one; echo two >&2; exit 3' }),
    });
    expect(res.headers.get('content-type')).toContain('application/x-ndjson');
    const events = (await res.text()).trim().split('\n').map((l) => JSON.parse(l) as { type: string; data?: string; exitCode?: number });
    expect(events.filter((e) => e.type === 'stdout').map((e) => e.data).join('')).toBe('one\n');
    expect(events.filter((e) => e.type === 'stderr').map((e) => e.data).join('')).toBe('two\n');
    expect(events.at(-1)).toMatchObject({ type: 'exit', exitCode: 3 });
    // A terminal's WebSocket is forwarded too, over TLS between the nodes: bytes both ways, the exit.
    const prism = new Prism({ url: nodes[0]!.url, token: nodes[0]!.token, ca: readFileSync(join(caDir, 'ca.crt')) });
    let screen = '';
    const shell = await (await prism.sandboxes.get(remote.id)).pty({ cmd: ['/bin/sh'], onData: (b) => (screen += Buffer.from(b).toString()) });
    shell.write('echo "$(hostname)-$((6*7))"; exit 7\n');
    expect(await shell.wait()).toEqual({ exitCode: 7 });
    expect(screen).toContain(`${remote.name}-42`);
    // Raw file bodies survive forwarding both ways: a 3 MiB upload through a node that does not own the
    // sandbox, read back byte-exact through the third node, and a tar streamed out through the first.
    const blob = randomBytes(3 << 20);
    const third = nodes.find((n) => n !== nodes[0] && n.url !== nodes[nodeIndex(remote.node)]!.url)!;
    const put = await fetchFor(nodes[0]!.url)(`${nodes[0]!.url}/api/v1/sandboxes/${remote.id}/files?path=/home/sandbox/fwd/blob.bin`, {
      method: 'PUT', headers: { ...authHeaders(nodes[0]!.url), 'content-type': 'application/octet-stream' }, body: blob,
    });
    expect(put.status, await put.clone().text()).toBe(200);
    const got = await fetchFor(third.url)(`${third.url}/api/v1/sandboxes/${remote.id}/files?path=/home/sandbox/fwd/blob.bin`, { headers: authHeaders(third.url) });
    expect(Buffer.from(await got.arrayBuffer()).equals(blob)).toBe(true);
    const tar = await fetchFor(nodes[0]!.url)(`${nodes[0]!.url}/api/v1/sandboxes/${remote.id}/files/archive?path=/home/sandbox/fwd`, { headers: authHeaders(nodes[0]!.url) });
    expect(tar.headers.get('content-type')).toContain('application/x-tar');
    expect((await tar.arrayBuffer()).byteLength).toBeGreaterThan(3 << 20);
    // Lifecycle calls are forwarded too; deleting through another node leaves nothing on the owner.
    const other = nodes[(nodeIndex(remote.node) + 1) % 3]!;
    expect((await call<Sb>(other.url, 'POST', `/sandboxes/${remote.id}/stop`)).body.status).toBe('stopped');
    // The owner's refusal of a terminal reaches the client through the forwarding node as is.
    await expect((await prism.sandboxes.get(remote.id)).pty({ onData: () => undefined })).rejects.toMatchObject({ code: 'FAILED_PRECONDITION', status: 412 });
    expect((await call<Sb>(other.url, 'POST', `/sandboxes/${remote.id}/start`)).body.status).toBe('running');
    for (const sb of made) expect((await call(nodes[2]!.url, 'DELETE', `/sandboxes/${sb.id}`)).status).toBe(204);
    for (const sb of made) expect(leftovers(sb.id, nodes[nodeIndex(sb.node)]!.dataDir)).toEqual([]);
    expect((await call<{ sandboxes: Sb[] }>(nodes[1]!.url, 'GET', '/sandboxes')).body.sandboxes).toEqual([]);
  }, 180_000);

  it('never overcommits a node when creates race through every node', async () => {
    // 4096 MiB per node: 12 sandboxes of 1024 MiB fit, the other 6 are refused.
    const results = await Promise.all(Array.from({ length: 18 }, (_, i) => call<Sb>(nodes[i % 3]!.url, 'POST', '/sandboxes', { memoryMb: 1024, cpus: 0.25 })));
    expect(results.filter((r) => r.status === 201)).toHaveLength(12);
    for (const r of results.filter((x) => x.status !== 201)) expect(r.body).toMatchObject({ error: { code: 'RESOURCE_EXHAUSTED' } });
    const listed = (await call<{ nodes: { reserved: { memoryMb: number }; capacity: { memoryMb: number } }[] }>(nodes[0]!.url, 'GET', '/nodes')).body.nodes;
    for (const n of listed) expect(n.reserved.memoryMb).toBe(4096);
    for (const r of results.filter((x) => x.status === 201)) await call(nodes[0]!.url, 'DELETE', `/sandboxes/${r.body.id}`);
  }, 120_000);

  it('marks a killed node dead and its sandboxes lost; after a restart they run again and deleted ones are destroyed', async () => {
    const leaderId = (await clusterInfo(nodes[0]!)).leader;
    const victim = ids.findIndex((id) => id !== leaderId);
    const via = nodes[(victim + 1) % 3]!;
    const made = await Promise.all(Array.from({ length: 6 }, () => create(via)));
    const onVictim = made.filter((s) => s.node === ids[victim]);
    expect(onVictim).toHaveLength(2);
    await exec(via, onVictim[0]!.id, 'echo kept > ~/marker');
    // Every node streams the cluster's events: the death and the losses, told by a survivor.
    const prism = new Prism({ url: via.url, token: via.token, ca: readFileSync(join(caDir, 'ca.crt')) });
    const stop = new AbortController();
    const seen: LifecycleEvent[] = [];
    let opened!: () => void;
    const open = new Promise<void>((r) => (opened = r));
    const streaming = (async () => {
      for await (const e of prism.events({ types: ['node-dead', 'lost'], signal: stop.signal, onOpen: opened })) seen.push(e);
    })();
    await open;
    await nodes[victim]!.stop('SIGKILL');
    const t0 = Date.now();
    await until('the victim dead and its sandboxes lost', async () => {
      const all = (await call<{ sandboxes: Sb[] }>(via.url, 'GET', '/sandboxes')).body.sandboxes;
      return onVictim.every((s) => all.find((x) => x.id === s.id)?.status === 'lost');
    }, (TTL_S + 10) * 1000);
    const detectMs = Date.now() - t0;
    expect((await call<Sb>(via.url, 'GET', `/sandboxes/${onVictim[0]!.id}`)).body.error?.code).toBe('NODE_LOST');
    expect((await clusterInfo(via)).nodesDead).toBe(1);
    await until('the events', async () => seen.filter((e) => e.type === 'lost').length === 2, 5000);
    stop.abort();
    await streaming;
    expect(seen.filter((e) => e.type === 'node-dead')).toEqual([expect.objectContaining({ node: ids[victim], nodeName: `node-${victim}` })]);
    expect(seen.filter((e) => e.type === 'lost').map((e) => e.sandboxId).sort()).toEqual(onVictim.map((s) => s.id).sort());
    // A lost sandbox can be deleted; an exec explains instead of hanging.
    expect((await exec(via, onVictim[0]!.id, 'true')).status).toBe(412);
    expect((await call(via.url, 'DELETE', `/sandboxes/${onVictim[1]!.id}`)).status).toBe(204);
    nodes[victim] = await nodes[victim]!.restart();
    await until('the victim alive again', async () => (await clusterInfo(via)).nodesAlive === 3, 15_000);
    // The node reconciles its lost sandboxes as it rejoins; a client sees `running` once it has.
    await until('the victim\'s sandbox running again', async () => (await call<Sb>(via.url, 'GET', `/sandboxes/${onVictim[0]!.id}`)).body.status === 'running', 15_000);
    expect((await exec(via, onVictim[0]!.id, 'cat ~/marker')).body).toMatchObject({ exitCode: 0, stdout: 'kept\n' });
    expect(leftovers(onVictim[1]!.id, nodes[victim]!.dataDir)).toEqual([]);
    console.log(JSON.stringify({ nodeDeadAndLostMs: detectMs, ttlMs: TTL_S * 1000 }));
    for (const sb of made) await call(via.url, 'DELETE', `/sandboxes/${sb.id}`);
  }, 120_000);

  it('sends a create made on another node to the leader, whose scheduler writes it already placed (no pending record)', async () => {
    const leaderId = (await clusterInfo(nodes[0]!)).leader;
    const follower = nodes[(nodeIndex(leaderId) + 1) % 3]!;
    const client = new Etcd3({ hosts: etcd.endpoints() });
    const first = new Map<string, string>();
    const watcher = await client.watch().prefix('/prism/sandboxes/').create();
    watcher.on('put', (kv) => {
      const id = kv.key.toString().split('/').pop()!;
      if (!first.has(id)) first.set(id, readSandboxValue(kv.value.toString()).sandbox.status);
    });
    try {
      const made = await Promise.all([create(follower), create(follower)]);
      for (const sb of made) expect(sb.status).toBe('running');
      expect(made.map((sb) => first.get(sb.id))).toEqual(['scheduled', 'scheduled']);
      // A refusal is the leader's scheduler's, passed back as it gave it.
      const big = await call<{ error: { code: string } }>(follower.url, 'POST', '/sandboxes', { memoryMb: 8192, cpus: 0.25 }); // over every node's 4096 MiB
      expect([412, 429]).toContain(big.status);
      expect(['FAILED_PRECONDITION', 'RESOURCE_EXHAUSTED']).toContain(big.body.error.code);
      for (const sb of made) await call(follower.url, 'DELETE', `/sandboxes/${sb.id}`);
    } finally {
      await watcher.cancel();
      client.close();
    }
  }, 60_000);

  it('elects a new scheduler leader when the leader is killed, and creates resume', async () => {
    const leaderId = (await clusterInfo(nodes[0]!)).leader;
    const li = nodeIndex(leaderId);
    const via = nodes[(li + 1) % 3]!;
    await nodes[li]!.stop('SIGKILL');
    const t0 = Date.now();
    const sb = await create(via); // queues until a new leader places it
    const createdMs = Date.now() - t0;
    expect(sb.status).toBe('running');
    expect(sb.node).not.toBe(leaderId);
    const info = await clusterInfo(via);
    expect(info.leader).not.toBe(leaderId);
    expect(info.leader).not.toBe('');
    console.log(JSON.stringify({ createAfterLeaderKillMs: createdMs }));
    nodes[li] = await nodes[li]!.restart();
    await until('3 alive', async () => (await clusterInfo(via)).nodesAlive === 3, 15_000);
    await call(via.url, 'DELETE', `/sandboxes/${sb.id}`);
  }, 120_000);

  it('keeps creating and executing when one etcd member is killed', async () => {
    const member = etcd.leader();
    await etcd.kill(member);
    const t0 = Date.now();
    const sb = await create(nodes[1]!);
    const firstCreateMs = Date.now() - t0;
    const r = await exec(nodes[2]!, sb.id, 'echo still');
    expect(r.body).toMatchObject({ exitCode: 0, stdout: 'still\n' });
    console.log(JSON.stringify({ createAfterEtcdLeaderKillMs: firstCreateMs }));
    await call(nodes[0]!.url, 'DELETE', `/sandboxes/${sb.id}`);
  }, 60_000);
});
