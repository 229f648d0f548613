/**
 * Pause and resume beside stop and start, per runtime, same prismd, same run, through the API (what a
 * client waits for). Each sandbox runs a counter loop, so a pause has live processes to freeze.
 *
 *   <runtime>.pause / .resume   POST /sandboxes/:id/pause, then /resume (memory kept)
 *   <runtime>.stop / .start     POST /sandboxes/:id/stop, then /start (processes gone, files kept)
 *   microvm memory: the QEMU process's RSS while running, and the paused state on disk while paused
 *   (a paused microVM has no process).
 *   microvm.restore1 / .fork1 / .fork4   a create from a memory snapshot; POST /fork of 1 and of 4
 *   (each: a snapshot of the running parent, then the restores at once)
 *
 * Usage: node dist/bench/lifecycle.js [runs]   (root; runtimes: oci always, microvm when its guest
 * files exist, docker when PRISM_BENCH_DOCKER_HOST or the test dockerd's socket answers)
 */
import { existsSync, readdirSync, readFileSync, readlinkSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { Prism, type SandboxHandle } from '../src/sdk/index.js';
import { startPrismd } from '../test/integration/prismd-harness.js';
import { summarize, timeIt } from './stats.js';
import { DEFAULT_VM_RAM_DIR } from '../src/runtime/microvm/vm-ram.js';

const RUNS = Number(process.argv[2] ?? 8);
const IMAGES = process.env.PRISM_BENCH_IMAGES_DIR ?? '/var/lib/prism-test/images';
const TEST_DOCKER = '/var/lib/prism-test/docker/docker.sock';
const DOCKER = process.env.PRISM_BENCH_DOCKER_HOST ?? (existsSync(TEST_DOCKER) ? `unix://${TEST_DOCKER}` : undefined);
const COUNTER = 'i=0; while :; do i=$((i+1)); echo $i > /tmp/count.new; mv /tmp/count.new /tmp/count; sleep 0.05; done';

function qemuHostMemoryBytes(sandboxId: string): number {
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      if (!readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(`${sandboxId}/agent.sock`)) continue;
      // QEMU's own anonymous memory plus its guest RAM file (shared RAM in the RAM directory counts
      // whole, mapped by the guest or not; VmRSS would count only the pages QEMU has touched since start).
      const status = readFileSync(`/proc/${pid}/status`, 'utf8');
      const anonKb = Number(/RssAnon:\s+(\d+) kB/.exec(status)?.[1] ?? 0);
      let ramFile = 0;
      for (const fd of readdirSync(`/proc/${pid}/fd`)) {
        const target = readlinkSync(`/proc/${pid}/fd/${fd}`);
        if (target.startsWith(`${DEFAULT_VM_RAM_DIR}/`)) ramFile = statSync(`/proc/${pid}/fd/${fd}`).blocks * 512;
      }
      return anonKb * 1024 + ramFile;
    } catch {
      /* gone meanwhile */
    }
  }
  return 0;
}

async function main(): Promise<void> {
  const d = await startPrismd({ imagesDir: IMAGES, extraArgs: [...(DOCKER ? ['--docker-host', DOCKER] : []), '--metrics-interval', '0'] });
  const prism = new Prism({ url: d.url, token: d.token });
  const node = (await prism.nodes.list())[0]!;
  const runtimes = node.runtimeInfo.filter((r) => r.usable).map((r) => r.name);
  const samples: Record<string, number[]> = {};
  const memory: Record<string, number> = {};
  const push = (k: string, v: number) => (samples[k] ??= []).push(v);
  try {
    for (const runtime of runtimes) {
      const runs = runtime === 'microvm' ? Math.min(RUNS, 5) : RUNS;
      for (let i = 0; i <= runs; i++) {
        const keep = i > 0; // the first round warms up (image pull, templates)
        const sb: SandboxHandle = await prism.sandboxes.create({ runtime, memoryMb: 256 });
        await sb.exec(['sh', '-c', `setsid sh -c '${COUNTER}' </dev/null >/dev/null 2>&1 &`]);
        await new Promise((r) => setTimeout(r, 200));
        const rss = runtime === 'microvm' ? qemuHostMemoryBytes(sb.id) : 0;
        let t = await timeIt(() => sb.pause());
        if (keep) push(`${runtime}.pause`, t);
        if (keep && runtime === 'microvm') {
          // Devices in paused.state, the RAM in paused.mem (a sparse image) or, without one, in the state.
          const task = join(d.dataDir, 'runtime', 'microvm', 'tasks', sb.id);
          const onDisk = ['paused.state', 'paused.mem'].map((f) => join(task, f)).filter((f) => existsSync(f)).reduce((n, f) => n + statSync(f).blocks * 512, 0);
          memory.runningHostMemoryMiB = Math.round(rss / 2 ** 20);
          memory.pausedHostMemoryMiB = Math.round(qemuHostMemoryBytes(sb.id) / 2 ** 20);
          memory.pausedStateOnDiskMiB = existsSync(join(task, 'paused.state')) ? Math.round(onDisk / 2 ** 20) : -1;
        }
        t = await timeIt(() => sb.resume());
        if (keep) push(`${runtime}.resume`, t);
        t = await timeIt(() => sb.stop());
        if (keep) push(`${runtime}.stop`, t);
        t = await timeIt(() => sb.start());
        if (keep) push(`${runtime}.start`, t);
        await sb.delete();
      }
    }
    if (runtimes.includes('microvm')) {
      // Memory snapshots: one restore (a create from a snapshot) beside forks of 1 and 4 (each a
      // snapshot of the running parent, then that many restores at once).
      const parent = await prism.sandboxes.create({ runtime: 'microvm', memoryMb: 256 });
      await parent.exec(['sh', '-c', `setsid sh -c '${COUNTER}' </dev/null >/dev/null 2>&1 &`]);
      const snap = await parent.snapshot();
      const runs = Math.min(RUNS, 3);
      for (let i = 0; i <= runs; i++) {
        const keep = i > 0;
        let made!: SandboxHandle;
        let t = await timeIt(async () => (made = await prism.sandboxes.create({ snapshot: snap.id })));
        if (keep) push('microvm.restore1', t);
        await made.delete();
        for (const count of [1, 4]) {
          let fork!: Awaited<ReturnType<SandboxHandle['fork']>>;
          t = await timeIt(async () => (fork = await parent.fork(count)));
          if (keep) push(`microvm.fork${count}`, t);
          for (const f of fork.sandboxes) await f.delete();
          await prism.snapshots.delete(fork.snapshot.id);
        }
      }
      await parent.delete();
      await prism.snapshots.delete(snap.id);
    }
  } finally {
    await d.dispose();
  }
  const s = Object.fromEntries(Object.entries(samples).map(([k, v]) => [k, summarize(v)]));
  const ratio = (a: string, b: string) => (s[a] && s[b] ? Math.round((s[a]!.medianMs / s[b]!.medianMs) * 100) / 100 : undefined);
  console.log(JSON.stringify({
    bench: 'lifecycle',
    runtimes,
    samples: s,
    ratios: Object.fromEntries(runtimes.map((r) => [r, { pauseVsStop: ratio(`${r}.pause`, `${r}.stop`), resumeVsStart: ratio(`${r}.resume`, `${r}.start`) }])),
    microvmMemory: memory,
    microvmFork: { fork4VsRestore1: ratio('microvm.fork4', 'microvm.restore1'), target: 'fork of 4 < 2x one restore' },
    note: 'same prismd, same run, through the API; memoryMb 256; the first round of each runtime is a warm-up and not counted',
  }, null, 2));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
