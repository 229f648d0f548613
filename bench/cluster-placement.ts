/**
 * Cluster control plane on a real 3-member etcd on loopback, beside raw etcd puts measured in the same run.
 *
 *   baseline.rawPuts        puts/s through the npm etcd3 client, CONCURRENCY in flight, N small JSON values;
 *                           with this process's event-loop busy share and etcd's CPU per put meanwhile
 *   baseline.storePuts      the same through EtcdStore.put (Prism's store layer, tuned retry policy)
 *   prism.steady / .burst   3 in-process nodes (FakeDriver: a no-op runtime, allowed for this bench only),
 *                           N SandboxService.create calls spread over the nodes. steady: CONCURRENCY in
 *                           flight, as the baseline. burst: waves of BURST creates issued at once.
 *     .placedPerSec         placements the scheduler committed / time from a wave's start to its last commit
 *     .createdPerSec        N / time until every create returned `running`
 *     .etcdRpcsPerCreate    client RPCs etcd served per create (from its /metrics), deletes likewise; also
 *                           the keys put and deleted and the watch events etcd sent, per create
 *     .createdVsRawPutsPerRun  each run's createdPerSec over the raw puts of the same run: raw puts drift
 *                           run to run on a shared host (700 to 2100/s in one process), so the paired
 *                           ratio's median is the figure compared with the target, not a ratio of medians
 *     .etcdCpuMsPerCreate   etcd's CPU per create, beside baseline.etcdCpuMsPerRawPut
 *     .benchEventLoopBusy   the 3 nodes share this process's JS thread: near 1, the host is the limit
 *     .cpuMsPerCreate       CPU per create of this process (the 3 nodes) and of etcd, beside the same per raw
 *                           put (baseline.cpuMsPerRawPut: the etcd3 client and etcd). Work, not time: it
 *                           changes little with other load on the host, where the rates do.
 *     .rawPutCpuVsCreateCpu CPU per raw put over CPU per create (process + etcd), each run paired: the share
 *                           of raw puts' rate creates would reach on a host whose cores are the limit
 *   failover.schedulerLeaderCrash  the leader node stops without leaving: time until another node leads,
 *                           until a create issued at the crash completes, until the node counts as dead
 *   failover.etcdLeaderKill kill -9 of etcd's leader member: time until a create (and, for comparison,
 *                           a bare EtcdStore.put and an etcd3 put with default settings) succeeds again
 *   failover.nodeCrash      a non-leader node with sandboxes crashes: time until it is dead, until all its
 *                           sandboxes are `lost`, and (after it restarts) until they are `running` again
 *
 * Usage: node dist/bench/cluster-placement.js [runs=5] [n=1000] [failoverRuns=3]   (needs etcd, etcdctl)
 *   PRISM_BENCH_WARMUP=2    unmeasured rounds (N raw puts, N steady creates) before the runs
 *   PRISM_BENCH_DIRECT=0    direct creates off (src/service/direct-create.ts): every create goes to the
 *                           scheduler (`pending` where made, `scheduled` by the leader, then `running`), as
 *                           before direct creates, for a paired comparison. With them on (the default) a node
 *                           makes the creates it would be given itself, one write each: the nodes' capacity
 *                           below is large, so each stays within placement's slack (10% of its memory).
 *   PRISM_BENCH_HTTP=1      each node also serves its API (no auth, no TLS) on loopback, and creates go to the
 *                           nodes' `POST /api/v1/sandboxes` in turn: end to end, with a create made on a
 *                           node that does not lead sent on to the leader's (owner-proxy.ts), as users' are.
 *                           With PRISM_BENCH_NO_FORWARD=1 they are not sent on (written `pending` where made):
 *                           the same build before forwarding, for a paired comparison.
 *   PRISM_BENCH_VIA_LEADER=1 sends every create to the scheduler leader's node instead of spreading them
 *                           (there each is placed at once, with no `pending` record): what forwarding
 *                           creates to the leader would give, without the cost of the forwarding hop.
 *                           An upper bound for that design, not the figure compared with the target.
 *   PRISM_BENCH_PROFILE=PATH writes V8 CPU profiles of the first steady run's creates and deletes (all 3
 *                           nodes: one process) to PATH.create.cpuprofile and PATH.delete.cpuprofile.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { Etcd3 } from 'etcd3';
import type { FastifyInstance } from 'fastify';
import { Agent, request as undiciRequest } from 'undici';
import { buildApi } from '../src/api/server.js';
import { isPrismError } from '../src/core/errors.js';
import type { Sandbox } from '../src/core/types.js';
import { startNode, type NodeServices } from '../src/daemon/node-wiring.js';
import { oneImageStore } from '../src/images/fake/one-image-store.js';
import { FakeDriver } from '../src/runtime/fake/fake-driver.js';
import type { Logger } from '../src/service/logger.js';
import { SandboxRepo } from '../src/service/sandbox-repo.js';
import { EtcdStore } from '../src/store/etcd/etcd-store.js';
import { inFlight, summarize } from './stats.js';
import { EtcdCluster } from '../test/fixtures/etcd-cluster.js';

const RUNS = Number(process.argv[2] ?? 5);
const N = Number(process.argv[3] ?? 1000);
const FAILOVER_RUNS = Number(process.argv[4] ?? 3);
/** Unmeasured rounds of raw puts and steady creates before the measured runs (PRISM_BENCH_WARMUP). */
const WARMUP = Number(process.env.PRISM_BENCH_WARMUP ?? 2);
const CONCURRENCY = Number(process.env.PRISM_BENCH_CONCURRENCY ?? 64);
/**
 * Creates issued at once in burst mode. Kept under etcd's default --max-txn-ops (128): a placement
 * transaction holds 1 leader check + one put per sandbox + one per node, and the scheduler's batchMax
 * of 256 exceeds it: etcd refuses the batch and the scheduler retries that same batch until creates time out.
 */
const BURST = Number(process.env.PRISM_BENCH_BURST ?? 100);
const NODE_TTL_MS = 3000;
/** Direct creates on (the default) or off: PRISM_BENCH_DIRECT=0 has the scheduler place every create (see the usage above). */
const DIRECT = process.env.PRISM_BENCH_DIRECT !== '0';
/** Every create through the leader's node (see the usage above). */
const VIA_LEADER = process.env.PRISM_BENCH_VIA_LEADER === '1';
/** Creates over the nodes' HTTP APIs (see the usage above). */
const OVER_HTTP = process.env.PRISM_BENCH_HTTP === '1';
/** Over HTTP, creates are not sent on to the leader (see the usage above). */
const NO_FORWARD = process.env.PRISM_BENCH_NO_FORWARD === '1';
/** Keep-alive connections to the nodes' APIs, as a client library keeps them. */
const httpClient = new Agent({ connections: 128 });
/** How long one failover measurement may take before it counts as a timeout. */
const FAILOVER_BOUND_MS = 30_000;
const PREFIX = 'prism-bench/';
const IMAGE = 'prism.local/bench:latest';

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
const round = (x: number) => Math.round(x * 100) / 100;
const log: Logger = process.env.PRISM_BENCH_DEBUG
  ? { info() {}, debug() {}, warn: (o, m) => console.error('warn', m, o), error: (o, m) => console.error('error', m, o) }
  : { info() {}, debug() {}, warn() {}, error() {} };

// Every etcd process and the data dir are removed on any exit, a thrown error or Ctrl-C included.
const dataDir = mkdtempSync(join(tmpdir(), 'prism-bench-'));
process.on('exit', () => rmSync(dataDir, { recursive: true, force: true }));
for (const sig of ['SIGINT', 'SIGTERM'] as const) process.on(sig, () => process.exit(130));

/** Polls `cond` every 10 ms; resolves with the elapsed ms, throws after `boundMs`. */
async function waitUntil(cond: () => boolean | Promise<boolean>, boundMs: number, what: string): Promise<number> {
  const t0 = performance.now();
  for (;;) {
    if (await cond()) return performance.now() - t0;
    if (performance.now() - t0 > boundMs) throw new Error(`timed out after ${boundMs} ms waiting for ${what}`);
    await sleep(10);
  }
}

/** Runs `fn(0..n-1)` with at most `width` calls in flight (stats.inFlight); a call that failed fails the run. */
async function pool(n: number, width: number, fn: (i: number) => Promise<unknown>): Promise<void> {
  const { failures } = await inFlight(n, width, async (i) => void (await fn(i)));
  if (failures.length) throw new Error(`${failures.length} of ${n} calls failed, first ${failures[0]}`);
}

/** Client RPCs etcd has served, by gRPC method, summed over the live members (from /metrics). */
async function rpcCounts(cluster: EtcdCluster): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  const add = (k: string, n: number) => out.set(k, (out.get(k) ?? 0) + n);
  const members = cluster.alive();
  for (const m of members) {
    const text = await fetch(`${m.client}/metrics`).then((r) => r.text());
    for (const [, method, n] of text.matchAll(/^grpc_server_handled_total\{[^}]*grpc_method="(\w+)"[^}]*\} (\S+)$/gm)) add(method!, Number(n));
    // What the store did, beside the calls: keys written and deleted (every member applies every one, so
    // one member's count), and watch events sent (each member to the watchers connected to it).
    for (const [, what, n] of text.matchAll(/^etcd_mvcc_(put|delete)_total (\S+)$/gm)) add(`keys ${what}`, Number(n) / members.length);
    for (const [, n] of text.matchAll(/^etcd_debugging_mvcc_events_total (\S+)$/gm)) add('watch events', Number(n));
  }
  return out;
}

/** RPCs per unit of work between two `rpcCounts` readings (methods that moved only). */
function rpcsPer(before: Map<string, number>, after: Map<string, number>, units: number): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of after) if (v - (before.get(k) ?? 0) > 0) out[k] = round((v - (before.get(k) ?? 0)) / units);
  return out;
}

// --- Prism nodes --------------------------------------------------------------------------------

const images = oneImageStore(IMAGE, { digest: 'sha256:' + 'cd'.repeat(32) });

interface BenchNode { id: string; store: EtcdStore; driver: FakeDriver; svc: NodeServices; api?: { url: string; app: FastifyInstance } }

/** One node on its own etcd connection; a restart passes the old FakeDriver (its tasks "survived"). */
async function startBenchNode(endpoints: string[], id: string, driver = new FakeDriver()): Promise<BenchNode> {
  const store = await EtcdStore.connect({ endpoints, prefix: PREFIX });
  const svc = await startNode({
    store, id, name: id, version: 'bench', dataDir, address: 'http://127.0.0.1:0',
    images, drivers: new Map([['oci', driver]]), runtimeInfo: [],
    defaults: { image: IMAGE, runtime: 'oci', cpus: 1, memoryMb: 256, pidsLimit: 256, diskMb: 2048, maxOpenFiles: 4096 },
    // Large enough that capacity never refuses a placement: this bench measures the control plane.
    labels: {}, capacity: { cpus: 1_000_000, memoryMb: 1_000_000_000, maxSandboxes: 0 }, placement: 'spread', directCreate: DIRECT,
    nodeTtlMs: NODE_TTL_MS, scheduleTimeoutMs: FAILOVER_BOUND_MS,
    execLimits: { recordBytes: 1 << 20, recordsPerSandbox: 100, maxTimeoutSec: 3600 },
    watchdogMs: 600_000, log,
  });
  if (!OVER_HTTP) return { id, store, driver, svc };
  const app = await buildApi(
    { sandboxes: svc.sandboxes, exec: svc.exec, pty: svc.pty, processes: svc.processes, files: svc.files, nodes: svc.nodes, images: svc.images, volumes: svc.volumes, metrics: svc.metrics, lifecycle: svc.lifecycle, snapshots: svc.snapshots, version: 'bench', nodeId: id, ...(NO_FORWARD ? {} : { leader: () => svc.membership.leader() }) },
    { logger: log, bodyLimit: 1 << 20, maxImportBytes: 1 << 20 },
  );
  await app.listen({ host: '127.0.0.1', port: 0 });
  const url = `http://127.0.0.1:${(app.server.address() as { port: number }).port}`;
  await svc.setAddress(url);
  return { id, store, driver, svc, api: { url, app } };
}

/** A create through the node's API; rejects with the API's error. */
async function createOverHttp(node: BenchNode, body: object): Promise<void> {
  const res = await undiciRequest(`${node.api!.url}/api/v1/sandboxes`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body), dispatcher: httpClient });
  const text = await res.body.text();
  if (res.statusCode !== 201) throw new Error(`create via ${node.id}: ${res.statusCode} ${text}`);
}

/** A node dying without a goodbye: renewals stop, its connection drops, the lease runs out in etcd. */
async function crash(node: BenchNode): Promise<void> {
  await node.api?.app.close();
  await node.svc.stop();
  await node.store.close();
}

const leaderOf = (nodes: BenchNode[]) => nodes.find((n) => n.svc.membership.leaderTerm() !== undefined);
const totals = (nodes: BenchNode[]) => nodes.reduce((t, n) => ({ placed: t.placed + n.svc.scheduler.stats.placed, batches: t.batches + n.svc.scheduler.stats.batches, direct: t.direct + (n.svc.direct?.stats.made ?? 0) }), { placed: 0, batches: 0, direct: 0 });

let deleteConflicts = 0;

/**
 * Deletes every sandbox through its owning node (so the task goes too); returns deletes/s. A delete
 * that gave up on CONFLICT (concurrent deletes race on the node's reservation key) is retried and counted.
 */
async function deleteAll(nodes: BenchNode[], repo: SandboxRepo): Promise<number> {
  const all = await repo.listSandboxes();
  const t0 = performance.now();
  await pool(all.length, CONCURRENCY, async (i) => {
    const sb = all[i]!;
    for (let attempt = 0; ; attempt++) {
      try {
        return await (nodes.find((n) => n.id === sb.node) ?? nodes[0]!).svc.sandboxes.delete(sb.id);
      } catch (e) {
        if (!isPrismError(e, 'CONFLICT') || attempt >= 5) throw e;
        deleteConflicts++;
      }
    }
  });
  return all.length / ((performance.now() - t0) / 1000);
}

/** Keys a run should leave behind (none) and reservations that did not return to zero. */
async function leftovers(observer: EtcdStore): Promise<{ keys: number; reservedSandboxes: number }> {
  const keys = (await observer.list('/prism/')).filter((kv) => /^\/prism\/(sandboxes|names|execs)\//.test(kv.key)).length;
  const reservedSandboxes = (await observer.list('/prism/reservations/')).reduce((s, kv) => s + (JSON.parse(kv.value) as { sandboxes: number }).sandboxes, 0);
  return { keys, reservedSandboxes };
}

// --- Measurements -------------------------------------------------------------------------------

interface RawRun { perSec: number; loopBusy: number; etcdCpuMsPerPut: number; benchCpuMsPerPut: number }

/** CPU ms this process has used (user + system), all threads. */
const processCpuMs = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};

async function rawPutRun(client: Etcd3, cluster: EtcdCluster, run: number): Promise<RawRun> {
  const value = JSON.stringify(sampleRecord(run));
  const prefix = `raw-bench/${run}/`;
  const cpu0 = cluster.cpuSeconds();
  const elu0 = performance.eventLoopUtilization();
  const bench0 = processCpuMs();
  const t0 = performance.now();
  await pool(N, CONCURRENCY, (i) => client.put(`${prefix}${i}`).value(value).exec());
  const benchCpuMsPerPut = (processCpuMs() - bench0) / N;
  const perSec = N / ((performance.now() - t0) / 1000);
  const loopBusy = performance.eventLoopUtilization(elu0).utilization;
  const etcdCpuMsPerPut = ((cluster.cpuSeconds() - cpu0) * 1000) / N;
  await client.delete().prefix(prefix).exec();
  return { perSec, loopBusy, etcdCpuMsPerPut, benchCpuMsPerPut };
}

async function storePutRun(store: EtcdStore, run: number): Promise<number> {
  const value = JSON.stringify(sampleRecord(run));
  const prefix = `/store-bench/${run}/`;
  const t0 = performance.now();
  await pool(N, CONCURRENCY, (i) => store.put(`${prefix}${i}`, value));
  const perSec = N / ((performance.now() - t0) / 1000);
  await Promise.all((await store.list(prefix)).map((kv) => store.delete(kv.key)));
  return perSec;
}

/** A value the size of a pending sandbox record (~400 bytes of JSON), so both sides write alike. */
function sampleRecord(i: number) {
  return {
    id: `sb-${String(i).padStart(12, '0')}`, name: `bench-${i}`, status: 'pending', node: '', image: IMAGE, runtime: 'oci',
    cpus: 1, memoryMb: 256, pidsLimit: 256, env: {}, workdir: '', timeoutSec: 0, createdAt: new Date().toISOString(),
  };
}

interface PrismRun { madeDirectly: number; benchLoopBusy: number; benchCpuMs: number; etcdCpuSec: number; rpcsPerCreate: Record<string, number>; rpcsPerDelete: Record<string, number>; placedPerSec: number; createdPerSec: number; deletedPerSec: number; batches: number; meanBatch: number; createMs: number[]; perNode: Record<string, number>; errors: number; leftover: { keys: number; reservedSandboxes: number } }

/**
 * N creates in waves of `wave`, at most `width` in flight within a wave. Steady (wave N, width 64) is the
 * same load shape as the raw-put baseline; a burst (wave = width) has every create of a wave pending at
 * once, which is what batching is for. Placement time counts from each wave's start to its last commit.
 */
async function prismRun(nodes: BenchNode[], repo: SandboxRepo, observer: EtcdStore, cluster: EtcdCluster, wave: number, width: number, profile = false): Promise<PrismRun> {
  const before = totals(nodes);
  const rpc0 = await rpcCounts(cluster);
  const cpu0 = cluster.cpuSeconds();
  const elu0 = performance.eventLoopUtilization();
  const bench0 = processCpuMs();
  const stopCreateProfile = await startProfile(profile);
  let placed = 0;
  let placedAt = 0;
  let placingMs = 0;
  const createMs: number[] = [];
  let errors = 0;
  const t0 = performance.now();
  // The scheduler counts a placement right after its transaction commits; 1 ms polling is well below a wave's length.
  const poll = setInterval(() => {
    const now = totals(nodes).placed - before.placed;
    if (now > placed) [placed, placedAt] = [now, performance.now()];
  }, 1);
  try {
    for (let first = 0; first < N; first += wave) {
      const w0 = performance.now();
      await pool(Math.min(wave, N - first), width, async (k) => {
        const i = first + k;
        const c0 = performance.now();
        // Named, because generated names collide within a thousand sandboxes (see the report).
        const via = VIA_LEADER ? leaderOf(nodes)! : nodes[i % nodes.length]!;
        await (OVER_HTTP ? createOverHttp(via, { name: `bench-${i}` }) : via.svc.sandboxes.create({ name: `bench-${i}` })).then(() => createMs.push(performance.now() - c0), (e) => {
          errors++;
          log.error({ err: e }, 'create failed');
        });
      });
      if (placedAt > w0) placingMs += placedAt - w0;
    }
  } finally {
    clearInterval(poll);
  }
  const createdAt = performance.now();
  const benchLoopBusy = performance.eventLoopUtilization(elu0).utilization;
  const benchCpuMs = processCpuMs() - bench0;
  await stopCreateProfile('create');
  const etcdCpu = cluster.cpuSeconds() - cpu0;
  const after = totals(nodes);
  const perNode: Record<string, number> = {};
  for (const sb of await repo.listSandboxes()) perNode[sb.node] = (perNode[sb.node] ?? 0) + 1;
  const rpc1 = await rpcCounts(cluster);
  const stopDeleteProfile = await startProfile(profile);
  const deletedPerSec = await deleteAll(nodes, repo);
  await stopDeleteProfile('delete');
  const rpc2 = await rpcCounts(cluster);
  const batches = after.batches - before.batches;
  return {
    placedPerSec: placingMs > 0 ? placed / (placingMs / 1000) : 0,
    madeDirectly: after.direct - before.direct,
    createdPerSec: (N - errors) / ((createdAt - t0) / 1000),
    benchLoopBusy, benchCpuMs, etcdCpuSec: etcdCpu, rpcsPerCreate: rpcsPer(rpc0, rpc1, N), rpcsPerDelete: rpcsPer(rpc1, rpc2, N),
    deletedPerSec, batches, meanBatch: batches ? (after.placed - before.placed) / batches : 0, createMs, perNode, errors,
    leftover: await leftovers(observer),
  };
}

/** (a) The scheduler leader crashes: times to a new leader, to a completed create, to the node being dead. */
/**
 * The scheduler alone: N `pending` records written while the leader's scheduler is paused (as after a
 * leader change with creates queued), then the scheduler resumes and places the backlog in batches.
 * placed/s = N / (time from resume to the last record scheduled). This is the placement throughput the
 * raw-put baseline is compared with; steady and burst above also include each create's own writes.
 */
async function backlogRun(nodes: BenchNode[], repo: SandboxRepo, run: number): Promise<{ placedPerSec: number; batches: number }> {
  const leader = leaderOf(nodes)!;
  const term = leader.svc.membership.leaderTerm()!;
  leader.svc.scheduler.stop();
  await pool(N, CONCURRENCY, async (i) => {
    const r = sampleRecord(i);
    await repo.createSandbox({ ...r, id: `sb-b${run}${String(i).padStart(9, '0')}`, name: `backlog-${run}-${i}`, status: 'pending' } as Sandbox);
  });
  // The nodes' agents live in this process too; in a cluster they run on other machines. Pause their
  // assignment watches while the backlog is placed, so the figure is the scheduler's, then let them run.
  for (const n of nodes) n.svc.agent.close();
  const before = totals(nodes);
  const t0 = performance.now();
  await leader.svc.scheduler.start(term);
  await waitUntil(() => totals(nodes).placed - before.placed >= N, FAILOVER_BOUND_MS * 4, 'the backlog placed');
  const placedPerSec = N / ((performance.now() - t0) / 1000);
  const batches = totals(nodes).batches - before.batches;
  for (const n of nodes) await n.svc.agent.watchAssignments(n.svc.events);
  await waitUntil(async () => (await repo.listSandboxes()).every((s) => s.status === 'running'), FAILOVER_BOUND_MS * 4, 'the backlog running');
  await deleteAll(nodes, repo);
  return { placedPerSec, batches };
}

async function schedulerLeaderCrash(nodes: BenchNode[], repo: SandboxRepo, endpoints: string[]) {
  const leader = leaderOf(nodes);
  if (!leader) throw new Error('no scheduler leader');
  const survivors = nodes.filter((n) => n !== leader);
  const t0 = performance.now();
  await crash(leader);
  const since = () => performance.now() - t0;
  const [electedMs, createMs, deadMs] = await Promise.all([
    waitUntil(() => leaderOf(survivors) !== undefined, FAILOVER_BOUND_MS, 'a new scheduler leader').then(since),
    survivors[0]!.svc.sandboxes.create({}).then(since),
    waitUntil(async () => (await repo.listNodes()).find((n) => n.id === leader.id)?.status === 'dead', FAILOVER_BOUND_MS, 'the crashed leader dead').then(since),
  ]);
  nodes[nodes.indexOf(leader)] = await startBenchNode(endpoints, leader.id, leader.driver);
  await waitUntil(async () => (await repo.listNodes()).every((n) => n.status === 'alive'), FAILOVER_BOUND_MS, 'the restarted node alive');
  await deleteAll(nodes, repo);
  return { electedMs, createMs, deadMs };
}

/** (b) etcd's leader member is killed: times until writes at each layer succeed again. */
async function etcdLeaderKill(nodes: BenchNode[], cluster: EtcdCluster, observer: EtcdStore, raw: Etcd3, repo: SandboxRepo) {
  const member = cluster.leader();
  const t0 = performance.now();
  await cluster.kill(member);
  const until = async (fn: () => Promise<unknown>) => {
    for (;;) {
      if (performance.now() - t0 > FAILOVER_BOUND_MS) return null;
      if (await fn().then(() => true, () => false)) return performance.now() - t0;
      await sleep(10);
    }
  };
  const [createMs, storePutMs, rawPutMs] = await Promise.all([
    until(() => nodes[0]!.svc.sandboxes.create({})),
    until(() => observer.put('/bench-probe', 'x')),
    until(() => raw.put('raw-bench/probe').value('x').exec()),
  ]);
  await cluster.restart(member);
  // Creates through every node work again before the next run starts.
  await Promise.all(nodes.map((n) => n.svc.sandboxes.create({})));
  await deleteAll(nodes, repo);
  return { createMs, storePutMs, rawPutMs, member: member.name };
}

/** (c) A non-leader node holding sandboxes crashes: dead, its sandboxes lost; back to running after its restart. */
async function nodeCrash(nodes: BenchNode[], repo: SandboxRepo, endpoints: string[]) {
  await Promise.all(Array.from({ length: 6 }, (_, i) => nodes[i % nodes.length]!.svc.sandboxes.create({})));
  const all = await repo.listSandboxes();
  const victim = nodes.find((n) => n !== leaderOf(nodes) && all.some((s) => s.node === n.id));
  if (!victim) throw new Error('no non-leader node holds a sandbox');
  const mine = all.filter((s) => s.node === victim.id).map((s) => s.id);
  const status = async () => (await repo.listSandboxes()).filter((s) => mine.includes(s.id)).map((s) => s.status);
  const t0 = performance.now();
  await crash(victim);
  const since = () => performance.now() - t0;
  const [deadMs, lostMs] = await Promise.all([
    waitUntil(async () => (await repo.listNodes()).find((n) => n.id === victim.id)?.status === 'dead', FAILOVER_BOUND_MS, 'the crashed node dead').then(since),
    waitUntil(async () => (await status()).every((s) => s === 'lost'), FAILOVER_BOUND_MS, 'its sandboxes lost').then(since),
  ]);
  const r0 = performance.now();
  nodes[nodes.indexOf(victim)] = await startBenchNode(endpoints, victim.id, victim.driver);
  const reconciledMs = await waitUntil(async () => (await status()).every((s) => s === 'running'), FAILOVER_BOUND_MS, 'its sandboxes running again')
    .then(() => performance.now() - r0);
  await deleteAll(nodes, repo);
  return { deadMs, lostMs, reconciledAfterRestartMs: reconciledMs, sandboxes: mine.length };
}

/**
 * A V8 CPU profile of this process when asked (PRISM_BENCH_PROFILE=PATH): `start` begins one, the
 * function it returns ends it and writes PATH.<part>.cpuprofile. Without the variable both do nothing.
 */
async function startProfile(on: boolean): Promise<(part: string) => Promise<void>> {
  const path = process.env.PRISM_BENCH_PROFILE;
  if (!on || !path) return async () => undefined;
  const session = new Session();
  session.connect();
  await session.post('Profiler.enable');
  await session.post('Profiler.setSamplingInterval', { interval: 100 }); // µs: creates take well under a millisecond of CPU each
  await session.post('Profiler.start');
  return async (part) => {
    const { profile } = await session.post('Profiler.stop');
    writeFileSync(`${path}.${part}.cpuprofile`, JSON.stringify(profile));
    session.disconnect();
  };
}

// --- Main -----------------------------------------------------------------------------------------

async function main() {
  const cluster = new EtcdCluster();
  await cluster.start(3);
  const endpoints = cluster.endpoints();
  const raw = new Etcd3({ hosts: endpoints });
  const observer = await EtcdStore.connect({ endpoints, prefix: PREFIX });
  const repo = new SandboxRepo(observer);
  const nodes: BenchNode[] = [];
  try {
    for (const id of ['node-a', 'node-b', 'node-c']) nodes.push(await startBenchNode(endpoints, id));
    await waitUntil(() => leaderOf(nodes) !== undefined, FAILOVER_BOUND_MS, 'a scheduler leader');

    // Warm-up (connections, JIT, etcd's and V8's heaps) on both sides, then alternate so drift on a shared
    // machine hits both. One round was not enough: the first measured raw-put run still ran at half the
    // rate of the next ones (1100-1600/s against 2600-3400, 0.7-0.9 ms of this process's CPU per put
    // against 0.2), which made the first run's ratio the best of every report.
    for (let w = 0; w < WARMUP; w++) {
      await rawPutRun(raw, cluster, -1 - w);
      await prismRun(nodes, repo, observer, cluster, N, CONCURRENCY);
    }
    const rawRuns: RawRun[] = [];
    const storePuts: number[] = [];
    const steady: PrismRun[] = [];
    const burst: PrismRun[] = [];
    const backlog: { placedPerSec: number; batches: number }[] = [];
    for (let r = 0; r < RUNS; r++) {
      rawRuns.push(await rawPutRun(raw, cluster, r));
      storePuts.push(await storePutRun(observer, r));
      steady.push(await prismRun(nodes, repo, observer, cluster, N, CONCURRENCY, r === 0));
      burst.push(await prismRun(nodes, repo, observer, cluster, BURST, BURST));
      backlog.push(await backlogRun(nodes, repo, r));
    }

    const failover = { schedulerLeaderCrash: [] as Awaited<ReturnType<typeof schedulerLeaderCrash>>[], etcdLeaderKill: [] as Awaited<ReturnType<typeof etcdLeaderKill>>[], nodeCrash: [] as Awaited<ReturnType<typeof nodeCrash>>[] };
    for (let r = 0; r < FAILOVER_RUNS; r++) {
      failover.schedulerLeaderCrash.push(await schedulerLeaderCrash(nodes, repo, endpoints));
      failover.nodeCrash.push(await nodeCrash(nodes, repo, endpoints));
      failover.etcdLeaderKill.push(await etcdLeaderKill(nodes, cluster, observer, raw, repo));
    }

    const rawPuts = rawRuns.map((x) => x.perSec);
    const out = report(rawRuns, storePuts, { steady, burst }, failover) as Record<string, unknown>;
    const backlogPerSec = median(backlog.map((b) => b.placedPerSec));
    out.schedulerBacklog = {
      placedPerSec: { median: round(backlogPerSec), values: backlog.map((b) => round(b.placedPerSec)) },
      batchesPerRun: backlog.map((b) => b.batches),
      placedVsRawPuts: round(backlogPerSec / median(rawPuts)),
    };
    process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
  } finally {
    for (const n of nodes) await n.api?.app.close().catch(() => undefined);
    for (const n of nodes) await n.svc.stop({ leave: true }).catch(() => undefined);
    for (const n of nodes) await n.store.close();
    await httpClient.close();
    await observer.close();
    raw.close();
    await cluster.stop();
  }
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return round(s[Math.floor((s.length - 1) / 2)]!);
};
const ms = (xs: (number | null)[]) => ({ ...summarize(xs.filter((x): x is number => x !== null)), timeouts: xs.filter((x) => x === null).length });

function prismSummary(runs: PrismRun[], rawRuns: RawRun[]) {
  const rawPuts = rawRuns.map((x) => x.perSec);
  const rawPutsPerSec = median(rawPuts);
  const cpuPerCreate = runs.map((r) => ({ bench: r.benchCpuMs / N, etcd: (r.etcdCpuSec * 1000) / N }));
  const cpuPaired = runs.map((_, i) => (rawRuns[i]!.benchCpuMsPerPut + rawRuns[i]!.etcdCpuMsPerPut) / (cpuPerCreate[i]!.bench + cpuPerCreate[i]!.etcd));
  const placed = median(runs.map((r) => r.placedPerSec));
  const created = median(runs.map((r) => r.createdPerSec));
  const paired = runs.map((r, i) => r.createdPerSec / rawPuts[i]!);
  return {
    placedPerSec: { median: placed, all: runs.map((r) => round(r.placedPerSec)) },
    /** Creates made directly by their node (direct-create.ts), the rest placed by the scheduler. */
    madeDirectly: runs.map((r) => r.madeDirectly),
    createdPerSec: { median: created, all: runs.map((r) => round(r.createdPerSec)) },
    placedVsRawPuts: round(placed / rawPutsPerSec),
    createdVsRawPuts: round(created / rawPutsPerSec),
    createdVsRawPutsPerRun: { median: median(paired), all: paired.map(round) },
    etcdCpuMsPerCreate: runs.map((r) => round((r.etcdCpuSec * 1000) / N)),
    cpuMsPerCreate: cpuPerCreate.map((c) => ({ bench: round(c.bench), etcd: round(c.etcd) })),
    rawPutCpuVsCreateCpu: { median: median(cpuPaired), all: cpuPaired.map(round) },
    deletedPerSec: { median: median(runs.map((r) => r.deletedPerSec)), all: runs.map((r) => round(r.deletedPerSec)) },
    createLatency: summarize(runs.flatMap((r) => r.createMs)),
    batches: runs.map((r) => r.batches),
    meanBatchSize: runs.map((r) => round(r.meanBatch)),
    perNode: runs.map((r) => r.perNode),
    errors: runs.reduce((s, r) => s + r.errors, 0),
    leftoverAfterDelete: runs.map((r) => r.leftover),
    benchEventLoopBusy: runs.map((r) => round(r.benchLoopBusy)),
    etcdCpuSecWhileCreating: runs.map((r) => round(r.etcdCpuSec)),
    etcdRpcsPerCreate: runs.at(-1)?.rpcsPerCreate,
    etcdRpcsPerDelete: runs.at(-1)?.rpcsPerDelete,
  };
}

function report(rawRuns: RawRun[], storePuts: number[], prism: { steady: PrismRun[]; burst: PrismRun[] }, f: {
  schedulerLeaderCrash: { electedMs: number; createMs: number; deadMs: number }[];
  etcdLeaderKill: { createMs: number | null; storePutMs: number | null; rawPutMs: number | null }[];
  nodeCrash: { deadMs: number; lostMs: number; reconciledAfterRestartMs: number; sandboxes: number }[];
}) {
  const rawPuts = rawRuns.map((x) => x.perSec);
  const rawMedian = median(rawPuts);
  return {
    benchmark: 'cluster-placement',
    date: new Date().toISOString(),
    runs: RUNS, warmupRounds: WARMUP, n: N, concurrency: CONCURRENCY, burst: BURST, directCreates: DIRECT, createsVia: `${VIA_LEADER ? 'the leader node only (upper bound of forwarding)' : 'every node in turn'}${OVER_HTTP ? `, over HTTP${NO_FORWARD ? ', not sent on to the leader' : ''}` : ', in-process service calls'}`, etcd: 'v3.4, 3 members on loopback, data on ' + tmpdir(),
    nodes: 3, driver: 'fake (no-op)', nodeTtlMs: NODE_TTL_MS,
    baseline: {
      rawPutsPerSec: { median: rawMedian, all: rawPuts.map(round) },
      rawPutsEventLoopBusy: rawRuns.map((x) => round(x.loopBusy)),
      etcdCpuMsPerRawPut: rawRuns.map((x) => round(x.etcdCpuMsPerPut)),
      cpuMsPerRawPut: rawRuns.map((x) => ({ bench: round(x.benchCpuMsPerPut), etcd: round(x.etcdCpuMsPerPut) })),
      storePutsPerSec: { median: median(storePuts), all: storePuts.map(round) },
    },
    prism: {
      steady: prismSummary(prism.steady, rawRuns),
      burst: prismSummary(prism.burst, rawRuns),
    },
    // Issue 16: creates end to end, through 3 nodes, at half the raw puts of the same concurrency.
    targets: { createdVsRawPutsPerRun: 0.5 },
    deletesGivenUpOnConflict: deleteConflicts,
    failover: {
      runs: FAILOVER_RUNS,
      schedulerLeaderCrash: {
        newLeader: ms(f.schedulerLeaderCrash.map((x) => x.electedMs)),
        createCompleted: ms(f.schedulerLeaderCrash.map((x) => x.createMs)),
        nodeDead: ms(f.schedulerLeaderCrash.map((x) => x.deadMs)),
      },
      etcdLeaderKill: {
        prismCreateSucceeded: ms(f.etcdLeaderKill.map((x) => x.createMs)),
        storePutSucceeded: ms(f.etcdLeaderKill.map((x) => x.storePutMs)),
        defaultEtcd3PutSucceeded: ms(f.etcdLeaderKill.map((x) => x.rawPutMs)),
      },
      nodeCrash: {
        nodeDead: ms(f.nodeCrash.map((x) => x.deadMs)),
        sandboxesLost: ms(f.nodeCrash.map((x) => x.lostMs)),
        runningAgainAfterRestart: ms(f.nodeCrash.map((x) => x.reconciledAfterRestartMs)),
        sandboxesOnNode: f.nodeCrash.map((x) => x.sandboxes),
      },
    },
  };
}

main().then(
  () => process.exit(0),
  (e) => {
    process.stderr.write(`bench failed: ${e instanceof Error ? e.stack : e}\n`);
    process.exit(1);
  },
);
