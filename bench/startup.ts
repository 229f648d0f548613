/**
 * How long the programs take to start: prismd from spawn to "prismd ready" (a fresh data dir each run,
 * SQLite store, API on a free loopback port) with the CPU it used by then, `prismd --version` and
 * `prismctl --version` (what a subcommand pays before its work), beside a bare `node -e 0` measured in
 * the same run. Each start blocks the event loop for most of its length, which on a slow or emulated
 * host outlasts the member lease TTL (the SQLite store credits such stalls; docs/status.md).
 *
 *   node dist/bench/startup.js [runs=7]
 */
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { packageRoot } from '../src/daemon/package-info.js';
import { summarize } from './stats.js';

const RUNS = Number(process.argv[2] ?? 7);
const ROOT = packageRoot();
const CLOCK_TICK_MS = 10; // USER_HZ is 100 on Linux

/** Wall time (ms) of `node args...` to its exit; rejects unless it exits 0. */
function timeExit(args: string[]): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const p = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    p.stderr.on('data', (b) => (err += b));
    p.once('exit', (code) => (code === 0 ? resolve(performance.now() - t0) : reject(new Error(`node ${args.join(' ')}: exit ${code} ${err}`))));
  });
}

/** CPU time (ms) process `pid` has used so far, from /proc/<pid>/stat (utime + stime). */
async function cpuMs(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) * CLOCK_TICK_MS;
}

/** One prismd start on a data dir of its own: wall time to its "prismd ready" line and CPU by then. */
async function prismdStart(): Promise<{ readyMs: number; cpuMs: number }> {
  const dataDir = await mkdtemp(join(tmpdir(), 'prism-bench-startup-'));
  const t0 = performance.now();
  const p = spawn(process.execPath, [join(ROOT, 'bin', 'prismd.js'), '--data-dir', dataDir, '--api', '127.0.0.1:0'], { stdio: ['ignore', 'pipe', 'pipe'] });
  try {
    return await new Promise((resolve, reject) => {
      let out = '';
      let err = '';
      p.stderr.on('data', (b) => (err += b));
      p.once('exit', (code) => reject(new Error(`prismd exited (${code}) before it was ready: ${err}`)));
      p.stdout.on('data', (b: Buffer) => {
        out += b.toString();
        if (!out.includes('"msg":"prismd ready"')) return;
        const readyMs = performance.now() - t0;
        p.stdout.removeAllListeners('data');
        p.stdout.resume();
        cpuMs(p.pid!).then((cpu) => resolve({ readyMs, cpuMs: cpu }), reject);
      });
    });
  } finally {
    const exited = new Promise((r) => p.once('exit', r));
    if (p.exitCode === null) p.kill('SIGTERM');
    await exited;
    await rm(dataDir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const bare: number[] = [];
  const prismctlVersion: number[] = [];
  const prismdVersion: number[] = [];
  const ready: number[] = [];
  const readyCpu: number[] = [];
  // Interleaved, so that a change in the host's load touches every series alike.
  for (let i = 0; i < RUNS; i++) {
    bare.push(await timeExit(['-e', '0']));
    prismctlVersion.push(await timeExit([join(ROOT, 'bin', 'prismctl.js'), '--version']));
    prismdVersion.push(await timeExit([join(ROOT, 'bin', 'prismd.js'), '--version']));
    const s = await prismdStart();
    ready.push(s.readyMs);
    readyCpu.push(s.cpuMs);
  }
  const nodeBare = summarize(bare);
  const prismdReady = summarize(ready);
  console.log(JSON.stringify({
    bench: 'startup',
    date: new Date().toISOString(),
    machine: { cpus: cpus().length, model: cpus()[0]?.model, node: process.version },
    runs: RUNS,
    nodeBare,
    prismctlVersion: summarize(prismctlVersion),
    prismdVersion: summarize(prismdVersion),
    prismdReady,
    prismdReadyCpu: summarize(readyCpu),
    ratios: { prismdReadyToNodeBare: Math.round((prismdReady.medianMs / nodeBare.medianMs) * 100) / 100 },
  }, null, 2));
}

await main();
