/**
 * The docker driver beside the oci driver, at the RuntimeDriver seam, measured in the same run on the
 * same image layers (the default base image), runs interleaved so that machine noise hits both:
 *
 *   <driver>.createToFirstExec   create(spec), then exec `echo ready` until its first stdout byte
 *   <driver>.execRoundTrip       exec `true` to its result, on a running task
 *   <driver>.destroy             destroy of a running task
 *   <driver>_warmupCreateMs      the first, uncounted create: for docker it includes loading the image
 *                                into the engine when the engine lacks it (once per engine)
 *   dockerPool.*                 the docker driver with warmPool: 1, each create served by a ready
 *                                container (the refill, awaited before each create, is not counted)
 *   dockerNoDiskLimit.*          only where the engine limits container size (docker.diskLimit says
 *                                how): the docker driver without StorageOpt.size, the baseline for its cost
 *
 * Usage: node dist/bench/docker-vs-oci.js [runs]   (root; DOCKER_HOST or the test dockerd of
 * scripts/test-dockerd.sh; PRISM_BENCH_IMAGES_DIR picks the image store)
 */
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DEFAULT_IMAGE } from '../src/daemon/config.js';
import { initBinaryPath } from '../src/daemon/package-info.js';
import { LocalImageStore } from '../src/images/local-image-store.js';
import type { RuntimeDriver, TaskHandle, TaskSpec } from '../src/runtime/driver.js';
import { DockerDriver } from '../src/runtime/docker/docker-driver.js';
import { OciDriver } from '../src/runtime/oci/oci-driver.js';
import { summarize, timeIt } from './stats.js';

const RUNS = Math.max(10, Number(process.argv[2] ?? 20));
const IMAGES = process.env.PRISM_BENCH_IMAGES_DIR ?? '/var/lib/prism-test/images';
const TEST_DOCKER_SOCK = '/var/lib/prism-test/docker/docker.sock';
const DOCKER_HOST = process.env.DOCKER_HOST ?? (existsSync(TEST_DOCKER_SOCK) ? `unix://${TEST_DOCKER_SOCK}` : undefined);

type Variant = 'oci' | 'docker' | 'dockerPool' | 'dockerNoDiskLimit';

async function firstOutput(d: RuntimeDriver, h: TaskHandle, env: Record<string, string>): Promise<void> {
  const p = await d.exec(h, { argv: ['echo', 'ready'], env, cwd: '/', stdin: false });
  p.stderr.resume();
  await new Promise<void>((resolve, reject) => {
    p.stdout.once('data', () => resolve());
    p.result.then((r) => reject(new Error(`echo exited ${r.exitCode} without output`)), reject);
  });
  p.stdout.resume();
  await p.result;
}

async function main() {
  const store = new LocalImageStore({ root: IMAGES });
  const rootfs = await store.rootfs(DEFAULT_IMAGE);
  const env = Object.fromEntries(rootfs.image.config.env.map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]));
  const dir = await mkdtemp(join(tmpdir(), 'prism-bench-docker-'));
  const node = `bench-${randomBytes(3).toString('hex')}`;
  const docker = (diskLimit: boolean, warmPool = 0) => new DockerDriver({
    stateDir: join(dir, 'docker'), node, initBinary: initBinaryPath(), diskLimit, warmPool, ...(DOCKER_HOST ? { dockerHost: DOCKER_HOST } : {}),
  });
  const pooled = docker(true, 1);
  const drivers: Partial<Record<Variant, RuntimeDriver>> = {
    oci: new OciDriver({ stateDir: join(dir, 'oci'), initBinary: initBinaryPath() }),
    docker: docker(true),
    dockerPool: pooled,
  };
  let diskLimit = '';
  for (const [name, d] of Object.entries(drivers)) {
    const p = await d.probe();
    if (!p.usable) throw new Error(`${name} driver not usable: ${p.reason}`);
    if (name === 'docker') diskLimit = p.details?.diskLimit ?? '';
  }
  if (diskLimit.startsWith('enforced')) drivers.dockerNoDiskLimit = docker(false);
  const variants = Object.keys(drivers) as Variant[];
  const spec = (): TaskSpec => ({
    id: `bench-${randomBytes(4).toString('hex')}`, hostname: 'bench', layers: rootfs.layerDirs, env, workdir: '/', cpus: 1, memoryMb: 512, pidsLimit: 256, diskMb: 2048, maxOpenFiles: 4096,
  });
  const samples = Object.fromEntries(variants.map((v) => [v, { createToFirstExec: [] as number[], execRoundTrip: [] as number[], destroy: [] as number[] }]));
  const live: [RuntimeDriver, TaskHandle][] = [];
  const warmup: Record<string, number> = {};
  try {
    // Warm-up (not counted): loads the image into the engine, unpacks nothing new for oci.
    for (const [name, d] of Object.entries(drivers)) {
      const t = await timeIt(async () => {
        const h = await d.create(spec());
        live.push([d, h]);
        await firstOutput(d, h, env);
      });
      warmup[`${name}_warmupCreateMs`] = Math.round(t);
      await d.destroy(live.pop()![1]);
    }
    for (let i = 0; i < RUNS; i++) {
      // Rotated so that no variant always runs first (or right after another's destroy).
      for (const name of variants.map((_, k) => variants[(i + k) % variants.length]!)) {
        const d = drivers[name]!;
        const s = samples[name]!;
        let h!: TaskHandle;
        if (name === 'dockerPool') await pooled.poolSettled();
        s.createToFirstExec.push(await timeIt(async () => {
          h = await d.create(spec());
          live.push([d, h]);
          await firstOutput(d, h, env);
        }));
        s.execRoundTrip.push(await timeIt(async () => {
          const p = await d.exec(h, { argv: ['true'], env, cwd: '/', stdin: false });
          p.stdout.resume();
          p.stderr.resume();
          await p.result;
        }));
        s.destroy.push(await timeIt(() => d.destroy(h)));
        live.pop();
      }
    }
  } finally {
    for (const [d, h] of live) await d.destroy(h).catch(() => undefined);
    for (const d of Object.values(drivers)) await d.close();
    await rm(dir, { recursive: true, force: true });
  }
  const out = Object.fromEntries(
    Object.entries(samples).map(([name, s]) => [name, Object.fromEntries(Object.entries(s).map(([k, v]) => [k, summarize(v)]))]),
  );
  const ratio = (a: string, b: string) => Math.round((out[a]!.createToFirstExec!.medianMs / out[b]!.createToFirstExec!.medianMs) * 100) / 100;
  console.log(JSON.stringify({
    image: DEFAULT_IMAGE, runs: RUNS, dockerHost: DOCKER_HOST ?? '/var/run/docker.sock', diskLimit, ...out,
    ...warmup, createToFirstExecMedianRatio: ratio('docker', 'oci'), pooledVsColdDockerMedianRatio: ratio('dockerPool', 'docker'),
    ...(out.dockerNoDiskLimit ? { diskLimitCreateMedianRatio: ratio('docker', 'dockerNoDiskLimit') } : {}),
  }, null, 2));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
