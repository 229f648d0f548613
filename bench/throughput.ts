/**
 * Create and delete throughput on the oci runtime at 1, 8 and 32 in flight, beside bare `runc run -d`
 * and `runc delete -f` at the same concurrency, in the same run (bare-runc.ts: same layers, config and
 * host cgroups). Prism's creates go through the API (placement, store, disk, overlay, runc, limits read
 * back) until `running`; cold (no warm pool), so the ratio is of the full create path.
 *
 * Usage: node dist/bench/throughput.js [sandboxes per level]   (root; PRISM_BENCH_IMAGES_DIR picks the image store)
 */
import { LocalImageStore } from '../src/images/local-image-store.js';
import { DEFAULT_IMAGE } from '../src/daemon/config.js';
import { call, startPrismd } from '../test/integration/prismd-harness.js';
import { BareRunc, run } from './bare-runc.js';
import { inFlight } from './stats.js';

const PER_LEVEL = Number(process.argv[2] ?? 48);
const LEVELS = [1, 8, 32];
const IMAGES = process.env.PRISM_BENCH_IMAGES_DIR ?? '/var/lib/prism-test/images';

interface Level { perSec: number; p50Ms: number; p95Ms: number; p99Ms: number; failures: number }

/** `fn` over 0..n-1 with `limit` in flight: rate and latency percentiles. */
async function measure(n: number, limit: number, fn: (i: number) => Promise<void>): Promise<Level> {
  const { latencies, failures, wallMs } = await inFlight(n, limit, fn);
  const sorted = [...latencies].sort((a, b) => a - b);
  const q = (p: number) => Math.round((sorted[Math.min(sorted.length - 1, Math.ceil(p * sorted.length) - 1)] ?? 0) * 10) / 10;
  return { perSec: Math.round((latencies.length / (wallMs / 1000)) * 10) / 10, p50Ms: q(0.5), p95Ms: q(0.95), p99Ms: q(0.99), failures: failures.length };
}

async function main() {
  const store = new LocalImageStore({ root: IMAGES });
  const rootfs = await store.rootfs(DEFAULT_IMAGE);
  const env = Object.fromEntries(rootfs.image.config.env.map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]));
  process.env.PRISM_TEST_IMAGES_DIR = IMAGES;
  const bare: Record<number, { create: Level; delete: Level }> = {};
  const prism: Record<number, { create: Level; delete: Level }> = {};

  const b = await BareRunc.setup(rootfs.layerDirs, env);
  try {
    for (const c of LEVELS) {
      const ids = Array.from({ length: PER_LEVEL }, (_, i) => `t${c}x${i}`);
      const create = await measure(PER_LEVEL, c, async (i) => {
        const bundle = await b.bundleFor(ids[i]!, ['/.prism/init']);
        await run('runc', b.args('run', '-d', '-b', bundle, ids[i]!));
      });
      const del = await measure(PER_LEVEL, c, (i) => run('runc', b.args('delete', '-f', ids[i]!)));
      bare[c] = { create, delete: del };
    }
  } finally {
    await b.dispose();
  }

  const d = await startPrismd({ extraArgs: ['--runtime', 'oci', '--cpu-overcommit', '64', '--log-level', 'warn'] });
  try {
    for (const c of LEVELS) {
      const ids: string[] = [];
      const create = await measure(PER_LEVEL, c, async () => {
        const r = await call(d.url, 'POST', '/sandboxes', { memoryMb: 64, cpus: 0.1, diskMb: 256 });
        if (r.status !== 201) throw new Error(JSON.stringify(r.body));
        ids.push(r.body.id);
      });
      const del = await measure(ids.length, c, async (i) => {
        const r = await call(d.url, 'DELETE', `/sandboxes/${ids[i]}`);
        if (r.status !== 204) throw new Error(String(r.status));
      });
      prism[c] = { create, delete: del };
    }
  } finally {
    await d.dispose();
  }
  const ratio = (a: number, x: number) => (x ? Math.round((a / x) * 100) / 100 : 0);
  const out = {
    benchmark: 'throughput',
    date: new Date().toISOString(),
    perLevel: PER_LEVEL,
    image: DEFAULT_IMAGE,
    bare,
    prism,
    ratios: Object.fromEntries(LEVELS.map((c) => [c, { create: ratio(prism[c]!.create.perSec, bare[c]!.create.perSec), delete: ratio(prism[c]!.delete.perSec, bare[c]!.delete.perSec) }])),
    targets: { createVsBare: 0.5, deleteVsBare: 0.5 },
  };
  process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
}

main().catch((e) => {
  process.stderr.write(`bench failed: ${e instanceof Error ? e.stack : e}\n`);
  process.exit(1);
});
