/**
 * Density on the oci runtime: N idle sandboxes on one node (default 1000 of 16 MiB, 0.1 CPU each, with
 * `--cpu-overcommit 64`), an exec in every one, then what they cost while idle: host memory per
 * sandbox (MemTotal - MemAvailable before and after, so reclaimable cache does not count) and prismd's
 * RSS and CPU over an idle window, with the usage sampler at its default interval and with it off.
 *
 * Usage: node dist/bench/density.js [count] [concurrency]   (root; PRISM_BENCH_IMAGES_DIR picks the image store)
 */
import { readFileSync } from 'node:fs';
import { call, startPrismd, type Prismd } from '../test/integration/prismd-harness.js';
import { inFlight, summarize } from './stats.js';

const COUNT = Number(process.argv[2] ?? 1000);
const CONCURRENCY = Number(process.argv[3] ?? 16);
const SANDBOX = { runtime: 'oci', memoryMb: 16, cpus: 0.1, diskMb: 64 };
const IDLE_WINDOW_MS = Number(process.env.PRISM_BENCH_IDLE_MS ?? 30_000);
const MiB = 2 ** 20;

function hostUsedBytes(): number {
  const m = readFileSync('/proc/meminfo', 'utf8');
  const kb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+)`, 'm').exec(m)?.[1] ?? 0) * 1024;
  return kb('MemTotal') - kb('MemAvailable');
}

function rssBytes(pid: number): number {
  return Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0) * 1024;
}

/** utime + stime of a process, in seconds. */
function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / 100; // USER_HZ is 100 on Linux
}

async function idleCost(pid: number): Promise<{ cpuPercentOfOneCore: number; rssMiB: number }> {
  const c0 = cpuSeconds(pid);
  await new Promise((r) => setTimeout(r, IDLE_WINDOW_MS));
  return { cpuPercentOfOneCore: Math.round(((cpuSeconds(pid) - c0) / (IDLE_WINDOW_MS / 1000)) * 1000) / 10, rssMiB: Math.round(rssBytes(pid) / MiB) };
}

async function run(d: Prismd, pid: number) {
  const before = hostUsedBytes();
  const idleEmpty = await idleCost(pid);
  const ids: string[] = [];
  const creates = await inFlight(COUNT, CONCURRENCY, async () => {
    const r = await call(d.url, 'POST', '/sandboxes', SANDBOX);
    if (r.status !== 201) throw new Error(`create ${r.status} ${JSON.stringify(r.body)}`);
    ids.push(r.body.id);
  });
  const execs = await inFlight(ids.length, CONCURRENCY, async (i) => {
    const r = await call(d.url, 'POST', `/sandboxes/${ids[i]}/exec`, { cmd: ['cat', '/proc/self/cgroup'] });
    if (r.status !== 200 || r.body.exitCode !== 0) throw new Error(`exec ${r.status} ${JSON.stringify(r.body)}`);
  });
  await new Promise((r) => setTimeout(r, 5_000));
  const after = hostUsedBytes();
  const idleFull = await idleCost(pid);
  const deletes = await inFlight(ids.length, CONCURRENCY, async (i) => {
    const r = await call(d.url, 'DELETE', `/sandboxes/${ids[i]}`);
    if (r.status !== 204) throw new Error(`delete ${r.status}`);
  });
  const rate = (x: { latencies: number[]; wallMs: number }) => Math.round((x.latencies.length / (x.wallMs / 1000)) * 10) / 10;
  return {
    created: ids.length,
    createFailures: creates.failures.slice(0, 5),
    createsPerSec: rate(creates),
    create: summarize(creates.latencies),
    execsOk: execs.latencies.length,
    execFailures: execs.failures.slice(0, 5),
    deletesPerSec: rate(deletes),
    deleteFailures: deletes.failures.slice(0, 5),
    hostMemoryPerSandboxMiB: ids.length ? Math.round(((after - before) / ids.length / MiB) * 100) / 100 : 0,
    prismdIdle: { empty: idleEmpty, withSandboxes: idleFull },
  };
}

async function main() {
  const out: Record<string, unknown> = { benchmark: 'density', date: new Date().toISOString(), count: COUNT, concurrency: CONCURRENCY, sandbox: SANDBOX };
  for (const [label, args] of [
    ['samplerDefault', []],
    ['samplerOff', ['--metrics-interval', '0']],
  ] as const) {
    const d = await startPrismd({ extraArgs: ['--runtime', 'oci', '--cpu-overcommit', '64', '--log-level', 'warn', ...args] });
    try {
      out[label] = await run(d, d.proc.pid!);
    } finally {
      await d.dispose();
    }
    if (process.argv.includes('--once')) break;
  }
  out.targets = { sandboxes: 1000, hostMemoryPerSandboxMiB: 4, execInEvery: true };
  process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
}

main().catch((e) => {
  process.stderr.write(`bench failed: ${e instanceof Error ? e.stack : e}\n`);
  process.exit(1);
});
