/**
 * Density on the oci runtime: N idle sandboxes on one node (default 1000 of 16 MiB, 0.1 CPU each, with
 * `--cpu-overcommit 64`), an exec in every one, then what they cost while idle: host memory per
 * sandbox (MemTotal - MemAvailable before and after, so reclaimable cache does not count) and prismd's
 * RSS and CPU over an idle window, with the usage sampler at its default interval and with it off, and
 * how long a restart of prismd takes with all of them running (recovery of every task).
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

/** Completions per second of each block of 100 (in completion order), from `t0`. */
function byHundred(doneAt: number[], t0: number): number[] {
  const out: number[] = [];
  for (let k = 100; k <= doneAt.length; k += 100) {
    const from = k === 100 ? t0 : doneAt[k - 101]!;
    out.push(Math.round((100 / ((doneAt[k - 1]! - from) / 1000)) * 10) / 10);
  }
  return out;
}

/** `box.d` is replaced by the restarted prismd (the caller disposes whichever is current). */
async function run(box: { d: Prismd }) {
  let d = box.d;
  const pid = d.proc.pid!;
  const before = hostUsedBytes();
  const idleEmpty = await idleCost(pid);
  const ids: string[] = [];
  const createsFrom = performance.now();
  const doneAt: number[] = [];
  const creates = await inFlight(COUNT, CONCURRENCY, async () => {
    const r = await call(d.url, 'POST', '/sandboxes', SANDBOX);
    if (r.status !== 201) throw new Error(`create ${r.status} ${JSON.stringify(r.body)}`);
    ids.push(r.body.id);
    doneAt.push(performance.now());
  });
  const execs = await inFlight(ids.length, CONCURRENCY, async (i) => {
    const r = await call(d.url, 'POST', `/sandboxes/${ids[i]}/exec`, { cmd: ['cat', '/proc/self/cgroup'] });
    if (r.status !== 200 || r.body.exitCode !== 0) throw new Error(`exec ${r.status} ${JSON.stringify(r.body)}`);
  });
  await new Promise((r) => setTimeout(r, 5_000));
  const after = hostUsedBytes();
  const idleFull = await idleCost(pid);
  // A restart with every sandbox running: until the API answers again, recovery of each task included.
  const t0 = performance.now();
  d = box.d = await d.restart('SIGTERM');
  const restartMs = Math.round(performance.now() - t0);
  const listed = (await call(d.url, 'GET', '/sandboxes')).body.sandboxes as Array<{ status: string }>;
  const runningAfterRestart = listed.filter((x) => x.status === 'running').length;
  const deletes = await inFlight(ids.length, CONCURRENCY, async (i) => {
    const r = await call(d.url, 'DELETE', `/sandboxes/${ids[i]}`);
    if (r.status !== 204) throw new Error(`delete ${r.status}`);
  });
  const rate = (x: { latencies: number[]; wallMs: number }) => Math.round((x.latencies.length / (x.wallMs / 1000)) * 10) / 10;
  return {
    created: ids.length,
    createFailures: creates.failures.slice(0, 5),
    createsPerSec: rate(creates),
    // Creates/s of each hundred in turn: does a create get slower as the node fills? The first hundred
    // is the same run's baseline.
    createsPerSecByHundred: byHundred(doneAt, createsFrom),
    create: summarize(creates.latencies),
    execsOk: execs.latencies.length,
    execFailures: execs.failures.slice(0, 5),
    deletesPerSec: rate(deletes),
    deleteFailures: deletes.failures.slice(0, 5),
    hostMemoryPerSandboxMiB: ids.length ? Math.round(((after - before) / ids.length / MiB) * 100) / 100 : 0,
    prismdIdle: { empty: idleEmpty, withSandboxes: idleFull },
    restart: { ms: restartMs, runningAfter: runningAfterRestart },
  };
}

async function main() {
  const out: Record<string, unknown> = { benchmark: 'density', date: new Date().toISOString(), count: COUNT, concurrency: CONCURRENCY, sandbox: SANDBOX };
  for (const [label, args] of [
    ['samplerDefault', []],
    ['samplerOff', ['--metrics-interval', '0']],
  ] as const) {
    const box = { d: await startPrismd({ extraArgs: ['--runtime', 'oci', '--cpu-overcommit', '64', '--log-level', 'warn', ...args] }) };
    try {
      out[label] = await run(box);
    } finally {
      await box.d.dispose();
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
