/**
 * What etcd's CPU goes on, for the cluster control plane's design: a 3-member etcd on loopback, N keys
 * of a sandbox-record-sized value written 64 in flight, as single puts and as transactions of BATCH
 * puts, with 0 and with 3 watchers on the prefix (the 3 nodes' sandbox feeds, one client each).
 *
 *   cases[].etcdCpuMsPerKey   etcd's CPU (all members, /proc utime + stime) per key written
 *   cases[].keysPerSec        keys written per second
 *   cases[].eventsPerKey      watch events delivered per key (0 or 3)
 *   derived.perWatchEventMs   (CPU per key with 3 watchers - without) / 3, single puts and batched
 *   derived.perKeyInTxnMs     CPU per key batched, no watchers: what a key costs inside a group commit
 *
 * Usage: node dist/bench/etcd-cost.js [runs=3] [n=4000]   (needs etcd)
 */
import { Etcd3, type IKeyValue } from 'etcd3';
import { EtcdCluster } from '../test/fixtures/etcd-cluster.js';
import { inFlight } from './stats.js';

const RUNS = Number(process.argv[2] ?? 3);
const N = Number(process.argv[3] ?? 4000);
const CONCURRENCY = 64;
const BATCH = 10;
/** A sandbox record is ~700 bytes of JSON; PRISM_BENCH_VALUE_BYTES changes it (per-key cost against size). */
const VALUE = JSON.stringify({ id: 'x'.repeat(26), record: 'y'.repeat(Math.max(0, Number(process.env.PRISM_BENCH_VALUE_BYTES ?? 700) - 44)) });

const round = (x: number) => Math.round(x * 1000) / 1000;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

interface Case { name: string; batch: number; watchers: number }
const CASES: Case[] = [
  { name: 'put', batch: 1, watchers: 0 },
  { name: 'put, 3 watchers', batch: 1, watchers: 3 },
  { name: `txn of ${BATCH}`, batch: BATCH, watchers: 0 },
  { name: `txn of ${BATCH}, 3 watchers`, batch: BATCH, watchers: 3 },
];

async function runCase(c: Case, cluster: EtcdCluster, writer: Etcd3, watchClients: Etcd3[], run: number) {
  const prefix = `cost/${run}/${c.batch}/${c.watchers}/`;
  let events = 0;
  const watchers = await Promise.all(watchClients.slice(0, c.watchers).map(async (w) => {
    const watcher = await w.watch().prefix(prefix).create();
    watcher.on('put', (_kv: IKeyValue) => void events++);
    return watcher;
  }));
  const cpu0 = cluster.cpuSeconds() * 1000;
  const { failures, wallMs: ms } = await inFlight(N / c.batch, Math.max(1, CONCURRENCY / c.batch), async (i) => {
    if (c.batch === 1) {
      await writer.put(`${prefix}${i}`).value(VALUE).exec();
      return;
    }
    const ops = Array.from({ length: c.batch }, (_, j) => writer.put(`${prefix}${i}-${j}`).value(VALUE));
    await writer.if(`${prefix}none`, 'Version', '==', 0).then(...ops).commit();
  });
  if (failures.length) throw new Error(`${c.name}: ${failures.length} writes failed, first: ${failures[0]}`);
  const cpu = cluster.cpuSeconds() * 1000 - cpu0;
  // Let the watchers catch up before counting.
  for (let k = 0; k < 100 && events < N * c.watchers; k++) await new Promise((r) => setTimeout(r, 20));
  await Promise.all(watchers.map((w) => w.cancel()));
  await writer.delete().prefix(prefix).exec();
  return { cpuMsPerKey: cpu / N, keysPerSec: N / (ms / 1000), eventsPerKey: events / N };
}

async function main(): Promise<void> {
  const cluster = new EtcdCluster();
  try {
    await cluster.start(3);
    const hosts = cluster.members.map((m) => m.client);
    const writer = new Etcd3({ hosts });
    const watchClients = hosts.map((h) => new Etcd3({ hosts: [h] }));
    const per: Record<string, { cpu: number[]; rate: number[]; events: number[] }> = {};
    for (let run = 0; run < RUNS; run++) {
      for (const c of CASES) {
        const r = await runCase(c, cluster, writer, watchClients, run);
        const p = (per[c.name] ??= { cpu: [], rate: [], events: [] });
        p.cpu.push(r.cpuMsPerKey);
        p.rate.push(r.keysPerSec);
        p.events.push(r.eventsPerKey);
      }
    }
    const cpu = (name: string) => median(per[name]!.cpu);
    const out = {
      bench: 'etcd-cost', runs: RUNS, n: N, concurrency: CONCURRENCY, valueBytes: VALUE.length,
      cases: CASES.map((c) => ({
        name: c.name,
        etcdCpuMsPerKey: { median: round(cpu(c.name)), all: per[c.name]!.cpu.map(round) },
        keysPerSec: { median: Math.round(median(per[c.name]!.rate)), all: per[c.name]!.rate.map(Math.round) },
        eventsPerKey: round(median(per[c.name]!.events)),
      })),
      derived: {
        perWatchEventMs: {
          singlePuts: round((cpu('put, 3 watchers') - cpu('put')) / 3),
          batched: round((cpu(`txn of ${BATCH}, 3 watchers`) - cpu(`txn of ${BATCH}`)) / 3),
        },
        perKeyInTxnMs: round(cpu(`txn of ${BATCH}`)),
        perSinglePutMs: round(cpu('put')),
      },
    };
    console.log(JSON.stringify(out, null, 2));
    writer.close();
    for (const w of watchClients) w.close();
  } finally {
    await cluster.stop();
  }
}

await main();
