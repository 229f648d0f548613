/**
 * A cluster formed by prismd itself: the first node with --cluster-init runs an etcd member, two more
 * join with --join and the join token (at once), all on loopback with real etcd members and oci
 * sandboxes. The init node saves the members that joined after it as its store endpoints. Then: a
 * wrong join token changes nothing; kill -9 of the init node and its member leaves
 * the other two creating and executing; it restarts and rejoins with its data; node rm of a stopped
 * node removes its member. A join that fails after its learner was added (its member cannot bind its
 * port) removes the learner and its data, and the next join goes through.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent, fetch as undiciFetch } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AUTO_COMPACTION_RETENTION } from '../../src/cluster/etcd-member.js';
import { Prism } from '../../src/sdk/index.js';
import { etcdSkipReason } from '../fixtures/etcd-cluster.js';
import { freePort, integrationSkipReason, startPrismd, type Prismd } from './prismd-harness.js';

const skip = integrationSkipReason() ?? (etcdSkipReason || undefined);
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

async function until<T>(what: string, fn: () => Promise<T | undefined | false>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ''}`);
    await sleep(200);
  }
}

const alive = (pid: number) => existsSync(`/proc/${pid}`);

/** Pids of etcd processes whose command line names this directory (a member prismd started there). */
function etcdProcessesOf(dir: string): number[] {
  return readdirSync('/proc').filter((p) => /^\d+$/.test(p)).flatMap((p) => {
    try {
      const argv = readFileSync(`/proc/${p}/cmdline`, 'utf8').split('\0');
      return argv[0]?.endsWith('etcd') && argv.some((a) => a.startsWith(dir)) ? [Number(p)] : [];
    } catch {
      return []; // exited meanwhile
    }
  });
}

/** The store endpoints a node saved in its cluster.json for its next start, sorted. */
const savedEndpoints = (n: Prismd) => (JSON.parse(readFileSync(join(n.dataDir, 'cluster.json'), 'utf8')) as { endpoints: string[] }).endpoints.sort();

/** A listening socket on a free loopback port, to take a port away from whoever comes next. */
async function holdPort(): Promise<{ port: number; server: Server }> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(0, '127.0.0.1', resolve));
  return { port: (server.address() as { port: number }).port, server };
}

describe.skipIf(skip !== undefined)('a cluster formed with --cluster-init and --join', () => {
  const nodes: Record<string, Prismd> = {};
  let admin: Prism;
  let joinToken: string;
  const etcdArgs = async () => ['--etcd-peer', `127.0.0.1:${await freePort()}`, '--etcd-client', `127.0.0.1:${await freePort()}`];
  const common = ['--runtime', 'oci', '--node-ttl', '3', '--capacity-memory-mb', '4096'];
  const as = (n: Prismd) => new Prism({ url: n.url, token: nodes.a!.token });

  beforeAll(async () => {
    nodes.a = await startPrismd({ extraArgs: ['--name', 'node-a', '--cluster-init', ...(await etcdArgs()), ...common] });
    admin = new Prism({ url: nodes.a.url, token: nodes.a.token });
    joinToken = await admin.cluster.joinToken();
    // Two nodes join at the same moment: etcd takes one learner at a time, the other retries.
    const [b, c] = await Promise.allSettled(['b', 'c'].map(async (n) =>
      startPrismd({ token: nodes.a!.token, extraArgs: ['--name', `node-${n}`, '--join', nodes.a!.url, '--join-token', joinToken, ...(await etcdArgs()), ...common] })));
    // Both settled before either is given up on: one that came up is disposed by afterAll, not left behind.
    if (b!.status === 'fulfilled') nodes.b = b!.value;
    if (c!.status === 'fulfilled') nodes.c = c!.value;
    for (const r of [b!, c!]) if (r.status === 'rejected') throw r.reason;
  }, 240_000);

  afterAll(async () => {
    for (const n of Object.values(nodes)) await n.dispose().catch(() => undefined);
  }, 120_000);

  it('has three voting members, three alive nodes, and places sandboxes across them', async () => {
    const members = await admin.cluster.members();
    expect(members.map((m) => m.name).sort()).toEqual(['node-a', 'node-b', 'node-c']);
    expect(members.every((m) => !m.learner && m.healthy)).toBe(true);
    // Alive is a lease held (--node-ttl 3 here): under CI's load one may lapse and be taken again, so wait for it.
    for (const [name, n] of Object.entries(nodes)) await until(`node-${name} to see 3 nodes alive`, async () => (await as(n).clusterInfo()).nodesAlive === 3);
    // Each member compacts its history (else etcd fills its quota and refuses every write).
    for (const n of Object.values(nodes)) {
      const argv = readFileSync(`/proc/${Number(readFileSync(join(n.dataDir, 'etcd.pid'), 'utf8'))}/cmdline`, 'utf8').split('\0');
      expect(argv[argv.indexOf('--auto-compaction-mode') + 1]).toBe('periodic');
      expect(argv[argv.indexOf('--auto-compaction-retention') + 1]).toBe(AUTO_COMPACTION_RETENTION);
    }
    // Two creates through each node: each node makes those it would be given itself (direct creates).
    const made = await Promise.all(Object.values(nodes).flatMap((n) => [0, 1].map(() => as(n).sandboxes.create({ memoryMb: 64, cpus: 0.25 }))));
    expect(new Set(made.map((s) => s.info.node)).size).toBeGreaterThanOrEqual(2);
    for (const sb of made) expect((await sb.exec('echo hi')).text()).toBe('hi\n');
    await Promise.all(made.map((s) => s.delete()));
    // The join token is not an API token, and an API token is not a join token.
    const r = await fetch(`${nodes.a!.url}/api/v1/sandboxes`, { headers: { authorization: `Bearer ${joinToken}` } });
    expect(r.status).toBe(401);
  }, 120_000);

  it('has the init node, started alone, save the client URLs of the members that joined after it', async () => {
    // The next start of node-a finds the cluster through them, even once its own member is gone.
    const clientUrls = (await admin.cluster.members()).flatMap((m) => m.clientUrls).sort();
    expect(clientUrls).toHaveLength(3);
    expect(savedEndpoints(nodes.a!)).toEqual(clientUrls);
  });

  it('refuses a wrong join token with a clear message, and the cluster is unchanged', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'prismd-test-'));
    const attempt = startPrismd({ dataDir, extraArgs: ['--name', 'node-x', '--join', nodes.a!.url, '--join-token', 'prism_join_wrong', ...(await etcdArgs()), ...common] });
    await expect(attempt).rejects.toThrow(/join token is wrong/);
    expect(existsSync(join(dataDir, 'etcd'))).toBe(false);
    rmSync(dataDir, { recursive: true, force: true });
    expect((await admin.cluster.members()).length).toBe(3);
    const direct = await fetch(`${nodes.a!.url}/api/v1/cluster/join`, {
      method: 'POST', headers: { authorization: 'Bearer nope', 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'node-y', peerUrl: 'http://127.0.0.1:1', clientUrl: 'http://127.0.0.1:2' }),
    });
    expect(direct.status).toBe(401);
    expect((await admin.cluster.members()).length).toBe(3);
    // A replaced token is refused from then on; the new one opens the cluster.
    const rotated = await admin.cluster.rotateJoinToken();
    expect(rotated).not.toBe(joinToken);
    const ask = (t: string) => fetch(`${nodes.a!.url}/api/v1/cluster/join`, { headers: { authorization: `Bearer ${t}` } });
    expect((await ask(joinToken)).status).toBe(401);
    expect((await ask(rotated)).status).toBe(200);
    expect(await admin.cluster.joinToken()).toBe(rotated);
    joinToken = rotated;
  }, 60_000);

  it('keeps serving when the init node and its member are killed, and takes it back after a restart', async () => {
    const a = nodes.a!;
    const etcdPid = Number(readFileSync(join(a.dataDir, 'etcd.pid'), 'utf8'));
    expect(alive(etcdPid)).toBe(true);
    process.kill(etcdPid, 'SIGKILL');
    await a.stop('SIGKILL');
    const b = as(nodes.b!);
    const sb = await until('a create through node-b with node-a gone', () => b.sandboxes.create({ memoryMb: 64, cpus: 0.25 }), 60_000);
    expect(sb.info.node).not.toBe('');
    expect((await sb.exec('echo still')).text()).toBe('still\n');
    await until('node-a seen dead', async () => (await b.clusterInfo()).nodesDead === 1);
    const members = await b.cluster.members();
    expect(members.find((m) => m.name === 'node-a')?.healthy).toBe(false);
    await sb.delete();

    nodes.a = await a.restart('SIGKILL');
    await until('node-a alive again', async () => (await b.clusterInfo()).nodesAlive === 3, 60_000);
    await until('node-a member healthy', async () => (await b.cluster.members()).every((m) => m.healthy), 30_000);
    const back = as(nodes.a);
    const onA = await back.sandboxes.create({ memoryMb: 64, cpus: 0.25 });
    expect((await onA.exec('echo back')).text()).toBe('back\n');
    await onA.delete();
  }, 240_000);

  it('node rm of a stopped node removes its etcd member first', async () => {
    const c = nodes.c!;
    const etcdPid = Number(readFileSync(join(c.dataDir, 'etcd.pid'), 'utf8'));
    await c.stop('SIGTERM');
    expect(alive(etcdPid)).toBe(false); // prismd stops its member with it
    const b = as(nodes.b!);
    await until('node-c seen dead', async () => (await b.nodes.list()).find((n) => n.name === 'node-c')?.status === 'dead');
    await b.nodes.remove('node-c');
    const members = await b.cluster.members();
    expect(members.map((m) => m.name).sort()).toEqual(['node-a', 'node-b']);
    expect(savedEndpoints(nodes.b!)).toEqual(members.flatMap((m) => m.clientUrls).sort());
    // Two members left: still a quorum.
    const sb = await b.sandboxes.create({ memoryMb: 64, cpus: 0.25 });
    expect((await sb.exec('echo two')).text()).toBe('two\n');
    await sb.delete();
    delete nodes.c;
    await c.dispose().catch(() => undefined); // its member is gone from the cluster: it cannot come back as it was
  }, 120_000);

  it('names the members that do not answer when the store has lost its quorum', async () => {
    // Two voters left; freeze node-a's member (SIGSTOP: it neither answers nor exits, so it is not restarted).
    const etcdPid = Number(readFileSync(join(nodes.a!.dataDir, 'etcd.pid'), 'utf8'));
    process.kill(etcdPid, 'SIGSTOP');
    try {
      const r = await fetch(`${nodes.b!.url}/api/v1/sandboxes`, {
        method: 'POST', headers: { authorization: `Bearer ${nodes.a!.token}`, 'content-type': 'application/json' }, body: JSON.stringify({ memoryMb: 64 }),
      });
      const body = (await r.json()) as { error: { code: string; message: string } };
      expect([503, 504], JSON.stringify(body)).toContain(r.status);
      expect(['UNAVAILABLE', 'DEADLINE_EXCEEDED']).toContain(body.error.code);
      expect(body.error.message, body.error.message).toMatch(/etcd members not answering: node-a \(/);
      expect(body.error.message).toContain('1 of 2 voting members answer, a quorum needs 2');
    } finally {
      process.kill(etcdPid, 'SIGCONT');
    }
    const b = as(nodes.b!);
    await until('the store answers again', async () => (await b.cluster.members()).every((m) => m.healthy), 30_000);
    const leftover = (await b.sandboxes.list()).filter((s) => s.status !== 'running');
    for (const sb of leftover) await sb.delete().catch(() => undefined);
  }, 120_000);

  it('refuses to start a data dir of this cluster with --join to another cluster', async () => {
    const other = await startPrismd({ extraArgs: ['--name', 'node-z', '--cluster-init', ...(await etcdArgs()), ...common] });
    try {
      const otherToken = await new Prism({ url: other.url, token: other.token }).cluster.joinToken();
      const b = nodes.b!;
      await b.stop('SIGTERM');
      const wrong = startPrismd({ dataDir: b.dataDir, port: Number(new URL(b.url).port), token: b.token, extraArgs: ['--name', 'node-b', '--join', other.url, '--join-token', otherToken, ...(await etcdArgs()), ...common] });
      await expect(wrong).rejects.toThrow(/belongs to another cluster/);
      expect((await new Prism({ url: other.url, token: other.token }).cluster.members()).map((m) => m.name)).toEqual(['node-z']);
    } finally {
      await other.dispose();
    }
  }, 120_000);
});

describe.skipIf(skip !== undefined)('a join that fails after its learner was added', () => {
  // One voter of --etcd-voters 3: a newcomer is added as a learner, not as a client.
  const started: Prismd[] = [];
  const held: Server[] = [];
  const dirs: string[] = [];
  const common = ['--runtime', 'oci', '--node-ttl', '3'];
  let a: Prismd;
  let joinToken: string;

  beforeAll(async () => {
    a = await startPrismd({ extraArgs: ['--name', 'solo-a', '--cluster-init', '--etcd-peer', `127.0.0.1:${await freePort()}`, '--etcd-client', `127.0.0.1:${await freePort()}`, ...common] });
    started.push(a);
    joinToken = await new Prism({ url: a.url, token: a.token }).cluster.joinToken();
  }, 120_000);

  afterAll(async () => {
    // The node that joined goes first, from etcd too: stopping one of two voters would leave the
    // other without a quorum, and its shutdown waiting out the store's timeouts.
    const members = await new Prism({ url: a.url, token: a.token }).cluster.members().catch(() => []);
    const x = members.find((m) => m.name === 'node-x');
    const viaA = members.find((m) => m.name === 'solo-a')?.clientUrls[0];
    if (x && viaA) await fetch(`${viaA}/v3/cluster/member/remove`, { method: 'POST', body: JSON.stringify({ ID: x.id }) }).catch(() => undefined);
    for (const n of started.reverse()) await n.dispose().catch(() => undefined);
    for (const s of held) s.close();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  }, 120_000);

  it('fails a join to a node nobody answers at with a clear message, and leaves nothing', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'prismd-test-'));
    dirs.push(dataDir);
    const closed = `http://127.0.0.1:${await freePort()}`;
    const failure = await startPrismd({ dataDir, extraArgs: ['--name', 'node-y', '--join', closed, '--join-token', joinToken, '--etcd-peer', `127.0.0.1:${await freePort()}`, '--etcd-client', `127.0.0.1:${await freePort()}`, ...common] })
      .then(() => '', (e: Error) => e.message);
    expect(failure).toMatch(/^prismd exited with 1: prismd: /);
    expect(failure).toContain(`cannot reach the cluster at ${closed} to join it`);
    expect(failure).toMatch(/ECONNREFUSED/);
    expect(existsSync(join(dataDir, 'etcd'))).toBe(false);
    expect(existsSync(join(dataDir, 'cluster.json'))).toBe(false);
    expect(etcdProcessesOf(dataDir)).toEqual([]);
    expect((await new Prism({ url: a.url, token: a.token }).cluster.members()).map((m) => m.name)).toEqual(['solo-a']);
  }, 60_000);

  it('removes its learner, its member and its data, and the next join goes through', async () => {
    const admin = new Prism({ url: a.url, token: a.token });
    const dataDir = mkdtempSync(join(tmpdir(), 'prismd-test-'));
    dirs.push(dataDir);
    // The newcomer's etcd client port is taken: its member dies at start, after the learner was added.
    const taken = await holdPort();
    held.push(taken.server);
    const peer = `127.0.0.1:${await freePort()}`;
    const attempt = startPrismd({ dataDir, extraArgs: ['--name', 'node-x', '--join', a.url, '--join-token', joinToken, '--etcd-peer', peer, '--etcd-client', `127.0.0.1:${taken.port}`, ...common] });
    const failure = await attempt.then(() => '', (e: Error) => e.message);
    expect(failure).toMatch(/^prismd exited with 1: prismd: /);
    expect(failure).toContain(`the etcd member node-x (http://127.0.0.1:${taken.port}) did not serve its client URL`);
    expect(failure).toMatch(/address already in use/);
    expect(failure).toContain('the join was undone');
    // The learner was there, and went: the cluster is as before.
    expect(a.logs()).toContain('added an etcd learner for a joining node');
    expect(a.logs()).toContain('removed the etcd learner of a join that failed');
    const members = await admin.cluster.members();
    expect(members.map((m) => ({ name: m.name, learner: m.learner }))).toEqual([{ name: 'solo-a', learner: false }]);
    expect(existsSync(join(dataDir, 'etcd'))).toBe(false);
    expect(existsSync(join(dataDir, 'cluster.json'))).toBe(false);
    expect(etcdProcessesOf(dataDir)).toEqual([]);

    // etcd takes one learner at a time: a learner left behind would turn this join away.
    const x = await startPrismd({ dataDir, extraArgs: ['--name', 'node-x', '--join', a.url, '--join-token', joinToken, '--etcd-peer', peer, '--etcd-client', `127.0.0.1:${await freePort()}`, ...common] });
    started.push(x);
    const after = await admin.cluster.members();
    expect(after.map((m) => m.name).sort()).toEqual(['node-x', 'solo-a']);
    expect(after.every((m) => !m.learner && m.healthy)).toBe(true);
  }, 120_000);
});

describe.skipIf(skip !== undefined)('a cluster formed with --join over TLS (--tls auto, one cluster CA)', () => {
  const nodes: Prismd[] = [];
  let caDir = '';
  let ports: { client: number; peer: number }[] = [];

  beforeAll(async () => {
    caDir = mkdtempSync(join(tmpdir(), 'prism-join-ca-'));
    const made = spawnSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2',
      '-subj', '/CN=test cluster CA', '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
      '-keyout', join(caDir, 'ca.key'), '-out', join(caDir, 'ca.crt')]);
    expect(made.status, made.stderr?.toString()).toBe(0);
    ports = [{ client: await freePort(), peer: await freePort() }, { client: await freePort(), peer: await freePort() }];
    const tls = ['--tls', 'auto', '--tls-ca', join(caDir, 'ca.crt'), '--tls-ca-key', join(caDir, 'ca.key'), '--runtime', 'oci'];
    const etcd = (i: number) => ['--etcd-client', `127.0.0.1:${ports[i]!.client}`, '--etcd-peer', `127.0.0.1:${ports[i]!.peer}`];
    nodes.push(await startPrismd({ extraArgs: ['--name', 'tls-a', '--cluster-init', ...etcd(0), ...tls] }));
    const token = await new Prism({ url: nodes[0]!.url, token: nodes[0]!.token, ca: readFileSync(join(caDir, 'ca.crt')) }).cluster.joinToken();
    nodes.push(await startPrismd({ token: nodes[0]!.token, extraArgs: ['--name', 'tls-b', '--join', nodes[0]!.url, '--join-token', token, ...etcd(1), ...tls] }));
  }, 180_000);

  afterAll(async () => {
    for (const n of nodes) await n.dispose().catch(() => undefined);
    if (caDir) rmSync(caDir, { recursive: true, force: true });
  });

  it('runs its members on TLS with client certificates, and serves sandboxes', async () => {
    const b = new Prism({ url: nodes[1]!.url, token: nodes[0]!.token, ca: readFileSync(join(caDir, 'ca.crt')) });
    const members = await b.cluster.members();
    expect(members.map((m) => m.name).sort()).toEqual(['tls-a', 'tls-b']);
    for (const m of members) {
      expect(m.healthy).toBe(true);
      expect([...m.clientUrls, ...m.peerUrls].every((u) => u.startsWith('https://'))).toBe(true);
    }
    // Plain HTTP to a member's client port is not served, nor is TLS without a client certificate.
    await expect(fetch(`http://127.0.0.1:${ports[0]!.client}/health`, { signal: AbortSignal.timeout(3000) })).rejects.toThrow();
    const noCert = new Agent({ connect: { ca: readFileSync(join(caDir, 'ca.crt')) } });
    await expect(undiciFetch(`https://127.0.0.1:${ports[0]!.client}/health`, { dispatcher: noCert, signal: AbortSignal.timeout(3000) })).rejects.toThrow();
    await noCert.close();
    const sb = await b.sandboxes.create({ memoryMb: 64, cpus: 0.25 });
    expect((await sb.exec('echo tls')).text()).toBe('tls\n');
    await sb.delete();
  }, 120_000);
});
