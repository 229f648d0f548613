/**
 * The microvm runtime against bare QEMU: cold boot, template-snapshot restore and warm-pool create to
 * a ready agent, exec round trip, a 10 MiB transfer through stdout, and QEMU's host RSS per idle VM. The baseline,
 * bare QEMU booting the same kernel with a trivial /init that powers off, runs in the same process
 * (bench/qemu-bare-boot.ts's method, copied so that file stays the fixed reference).
 *
 * Usage: node dist/bench/microvm.js [runs]   (root; scripts/prepare-guest.sh done; busybox-static, musl-gcc)
 */
import { execFile, spawn } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { TaskHandle, TaskSpec } from '../src/runtime/driver.js';
import { DEFAULT_GUEST_DIR, defaultCmdline, locateGuestFiles } from '../src/runtime/microvm/guest-files.js';
import { writeInitramfs } from '../src/runtime/microvm/initramfs.js';
import { MicrovmDriver } from '../src/runtime/microvm/microvm-driver.js';
import { summarize, timeIt } from './stats.js';
import { buildBusyboxLayer } from '../test/fixtures/busybox-layer.js';

const RUNS = Math.max(10, Number(process.argv[2] ?? 10));
const EXEC_RUNS = Math.max(RUNS, 50);
const GUEST_DIR = process.env.PRISM_GUEST_DIR ?? DEFAULT_GUEST_DIR;
const MARKER = 'prism-trivial-init: reached /init';
const TEN_MIB = 10 * 1024 * 1024;
const PATH = '/bin';
/** 128 MiB for the sandbox + the driver's 128 MiB guest overhead = the bare boot's 256 MiB guest. */
const MEMORY_MB = 128;
const log = (msg: string) => process.stderr.write(`${msg}\n`);


/** Bare QEMU: spawn until the trivial init powered the guest off (same machine as qemu-bare-boot.ts). */
async function bareBoots(tmp: string, runs: number): Promise<number[]> {
  const init = join(tmp, 'init');
  await promisify(execFile)('musl-gcc', ['-static', '-Os', '-s', '-o', init, join(import.meta.dirname, '..', '..', 'bench', 'trivial-init.c')]);
  const initramfs = join(tmp, 'bare-initramfs.cpio');
  await writeInitramfs(initramfs, [
    { path: 'dev', mode: 0o755, dir: true },
    { path: 'dev/console', mode: 0o600, charDevice: { major: 5, minor: 1 } },
    { path: 'init', mode: 0o755, data: await readFile(init) },
  ]);
  const guest = await locateGuestFiles(GUEST_DIR, { initramfs });
  const args = [
    '-M', 'microvm,accel=tcg', '-cpu', 'max', '-m', '256', '-smp', '1', '-nodefaults', '-no-user-config', '-nographic', '-no-reboot',
    '-kernel', guest.kernel, '-initrd', initramfs, '-append', await defaultCmdline({ tcg: true, pvh: guest.pvh }), '-serial', 'stdio',
  ];
  const times: number[] = [];
  for (let i = 0; i < runs; i++) times.push(await bareBoot(args));
  return times;
}

function bareBoot(args: string[]): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const p = spawn('qemu-system-x86_64', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (b: Buffer) => (out += b.toString()));
    const timer = setTimeout(() => p.kill('SIGKILL'), 30_000);
    p.once('error', reject);
    p.once('exit', (code) => {
      clearTimeout(timer);
      if (code === 0 && out.includes(MARKER)) resolve(performance.now() - t0);
      else reject(new Error(`bare boot failed (exit ${code}): ${out.split('\n').slice(-5).join(' | ')}`));
    });
  });
}

async function vmRssKb(stateDir: string, id: string): Promise<number> {
  const pid = (await readFile(join(stateDir, 'tasks', id, 'qemu.pid'), 'utf8')).trim();
  const m = /^VmRSS:\s+(\d+) kB/m.exec(await readFile(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no VmRSS for QEMU ${pid}`);
  return Number(m[1]);
}

async function run(driver: MicrovmDriver, h: TaskHandle, argv: string[]): Promise<number> {
  const proc = await driver.exec(h, { argv, env: { PATH }, cwd: '/', stdin: false });
  let bytes = 0;
  proc.stderr.resume();
  for await (const c of proc.stdout) bytes += (c as Buffer).length;
  const r = await proc.result;
  if (r.exitCode !== 0) throw new Error(`${argv.join(' ')} exited ${r.exitCode}`);
  return bytes;
}

const summarizeKb = (kb: number[]) => {
  const s = summarize(kb.map((k) => k / 1024));
  return { runs: s.runs, medianMiB: s.medianMs, p90MiB: s.p90Ms, minMiB: s.minMs, maxMiB: s.maxMs };
};

async function main(): Promise<void> {
  const tmp = await mkdtemp('/tmp/pbm-');
  const drivers: MicrovmDriver[] = [];
  const live: Array<[MicrovmDriver, TaskHandle]> = [];
  const cleanup = async () => {
    for (const [d, h] of live.splice(0)) await d.destroy(h).catch((e: unknown) => log(`destroy ${h.id}: ${String(e)}`));
    for (const d of drivers) await d.close().catch(() => undefined);
    await rm(tmp, { recursive: true, force: true });
  };
  const onSignal = () => void cleanup().finally(() => process.exit(130));
  process.once('SIGINT', onSignal).once('SIGTERM', onSignal);
  try {
    const layer = join(tmp, 'layers/busybox');
    await buildBusyboxLayer(layer);
    const open = (name: string, snapshots: boolean, warmPool = 0) => {
      const d = new MicrovmDriver({ stateDir: join(tmp, name), guestDir: GUEST_DIR, imageDiskCache: join(tmp, 'disks'), writableDiskMb: 256, snapshots, warmPool });
      drivers.push(d);
      return d;
    };
    const cold = open('cold', false);
    const warm = open('warm', true);
    const pooled = open('pool', true, 1);
    let n = 0;
    const spec = (): TaskSpec => ({
      id: `bench-${n++}`, hostname: 'bench', layers: [layer], env: { PATH }, workdir: '/', cpus: 1, memoryMb: MEMORY_MB, pidsLimit: 128, diskMb: 2048, maxOpenFiles: 4096,
    });
    /** create -> time + idle RSS -> destroy, `runs` times (with a warm pool: each once the pool is full). */
    const creates = async (d: MicrovmDriver, stateDir: string, runs: number, expectBoot: string) => {
      const ms: number[] = [];
      const rss: number[] = [];
      for (let i = 0; i < runs; i++) {
        await d.templatesSettled();
        const s = spec();
        let h: TaskHandle | undefined;
        ms.push(await timeIt(async () => (h = await d.create(s))));
        live.push([d, h!]);
        if (h!.data.boot !== expectBoot) throw new Error(`${s.id} came up by ${String(h!.data.boot)}, expected ${expectBoot}`);
        rss.push(await vmRssKb(join(tmp, stateDir), s.id));
        await d.destroy(h!);
        live.pop();
      }
      return { ms, rss };
    };

    log('warming the image disk cache...');
    const first = await warm.create(spec()); // cold boot; builds the template in the background
    live.push([warm, first]);
    await warm.templatesSettled();
    const templates = join(tmp, 'warm', 'templates');
    const [key] = await readdir(templates);
    if (!key) throw new Error('no template snapshot was built');
    const meta = JSON.parse(await readFile(join(templates, key, 'meta.json'), 'utf8')) as { buildMs: number; stateBytes: number };

    log('bare QEMU boots...');
    const bare = await bareBoots(tmp, RUNS);
    log('cold boots...');
    const coldRuns = await creates(cold, 'cold', RUNS, 'cold');
    log('restores...');
    const restoreRuns = await creates(warm, 'warm', RUNS, 'restore');
    log('warm-pool creates...');
    const firstPooled = await pooled.create(spec()); // cold boot; builds its template, then fills the pool
    live.push([pooled, firstPooled]);
    const poolRuns = await creates(pooled, 'pool', RUNS, 'pool');
    await pooled.destroy(firstPooled);
    live.splice(live.findIndex(([, h]) => h === firstPooled), 1);
    await pooled.close();

    log('exec round trips and transfers...');
    const execMs: number[] = [];
    for (let i = 0; i < EXEC_RUNS; i++) execMs.push(await timeIt(() => run(warm, first, ['true'])));
    const xferMs: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      let bytes = 0;
      xferMs.push(await timeIt(async () => (bytes = await run(warm, first, ['head', '-c', String(TEN_MIB), '/dev/zero']))));
      if (bytes !== TEN_MIB) throw new Error(`transfer delivered ${bytes} bytes, expected ${TEN_MIB}`);
    }

    const bareS = summarize(bare);
    const coldS = summarize(coldRuns.ms);
    const restoreS = summarize(restoreRuns.ms);
    const poolS = summarize(poolRuns.ms);
    const execS = summarize(execMs);
    const xferS = summarize(xferMs);
    const target = (value: number, op: '<=' | '>=' | '<', limit: number) => ({
      value: Math.round(value * 100) / 100, target: `${op} ${limit}`,
      met: op === '<=' ? value <= limit : op === '>=' ? value >= limit : value < limit,
    });
    console.log(JSON.stringify({
      benchmark: 'microvm',
      guest: { memoryMiB: MEMORY_MB + 128, cpus: 1, accelerator: (await cold.probe()).details?.accelerator, rootfs: 'busybox layer' },
      bareQemuBoot: bareS,
      coldBootToAgentReady: coldS,
      snapshotRestoreToAgentReady: restoreS,
      warmPoolCreateToAgentReady: poolS,
      templateBuild: { ms: meta.buildMs, stateMiB: Math.round((meta.stateBytes / 1048576) * 10) / 10 },
      execRoundTripTrue: execS,
      transfer10MiB: { ...xferS, medianMiBps: Math.round((10 / (xferS.medianMs / 1000)) * 10) / 10 },
      idleVmRss: { coldBooted: summarizeKb(coldRuns.rss), restored: summarizeKb(restoreRuns.rss), fromWarmPool: summarizeKb(poolRuns.rss) },
      targets: {
        coldBootOverBareBoot: target(coldS.medianMs / bareS.medianMs, '<=', 1.2),
        restoreSpeedupOverColdBoot: target(coldS.medianMs / restoreS.medianMs, '>=', 8),
        warmPoolSpeedupOverColdBoot: target(coldS.medianMs / poolS.medianMs, '>=', 8),
        execRoundTripMedianMs: target(execS.medianMs, '<', 5),
      },
    }, null, 2));
  } finally {
    await cleanup();
    process.off('SIGINT', onSignal).off('SIGTERM', onSignal);
  }
}

await main();
