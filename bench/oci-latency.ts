/**
 * Sandbox latency on the oci runtime, beside bare runc on the same bundle, measured in the same run.
 *
 *   prism.createToFirstOutput  POST /sandboxes, then exec `echo ready` (streamed) until the first byte
 *   prism.execRoundTrip        POST /sandboxes/:id/exec {cmd: ["true"]} on a running sandbox
 *   pooled.createToFirstOutput the same with `--warm-pool 2`, each create served by a ready container
 *                              (the pool is refilled between creates; the cold first create is not counted)
 *   bare.runForeground         `runc run` of a bundle whose process is `echo ready`, until the output
 *   bare.runDetachedThenExec   `runc run -d` (init) then `runc exec echo ready`: the same steps as Prism
 *   bare.exec                  `runc exec <id> true`
 *
 * Usage: node dist/bench/oci-latency.js [runs]   (root; PRISM_BENCH_IMAGES_DIR picks the image store)
 */
import { lstatSync, readdirSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { LocalImageStore } from '../src/images/local-image-store.js';
import { DEFAULT_IMAGE } from '../src/daemon/config.js';
import { BareRunc, run } from './bare-runc.js';
import { startPrismd, call, authHeaders } from '../test/integration/prismd-harness.js';
import { summarize, timeIt } from './stats.js';

const RUNS = Number(process.argv[2] ?? 20);
const IMAGES = process.env.PRISM_BENCH_IMAGES_DIR ?? '/var/lib/prism-test/images';

async function bare(layers: string[], env: Record<string, string>) {
  const b = await BareRunc.setup(layers, env);
  const result = { runForeground: [] as number[], runDetachedThenExec: [] as number[], exec: [] as number[] };
  try {
    await b.configure(['echo', 'ready']);
    for (let i = 0; i < RUNS; i++) {
      result.runForeground.push(await timeIt(() => run('runc', b.args('run', '-b', b.bundle, `fg${i}`), true)));
      await run('runc', b.args('delete', '-f', `fg${i}`)).catch(() => undefined);
    }
    await b.configure(['/.prism/init']);
    for (let i = 0; i < RUNS; i++) {
      result.runDetachedThenExec.push(
        await timeIt(async () => {
          await run('runc', b.args('run', '-d', '-b', b.bundle, `d${i}`));
          await run('runc', b.args('exec', `d${i}`, 'echo', 'ready'), true);
        }),
      );
      if (i < RUNS - 1) await run('runc', b.args('delete', '-f', `d${i}`));
    }
    const last = `d${RUNS - 1}`;
    for (let i = 0; i < RUNS; i++) result.exec.push(await timeIt(() => run('runc', b.args('exec', last, 'true'))));
    await run('runc', b.args('delete', '-f', last));
  } finally {
    await b.dispose();
  }
  return result;
}

/** Ready (unclaimed) warm-pool tasks of a prismd: pool task dirs no sandbox's link points at. */
function readyPoolTasks(dataDir: string): number {
  const tasks = join(dataDir, 'runtime', 'oci', 'tasks');
  const names = readdirSync(tasks);
  const claimed = new Set(names.flatMap((n) => (lstatSync(join(tasks, n)).isSymbolicLink() ? [readlinkSync(join(tasks, n))] : [])));
  return names.filter((n) => n.startsWith('pool-') && !claimed.has(n)).length;
}

async function prism(pool = 0) {
  const d = await startPrismd(pool ? { extraArgs: ['--warm-pool', String(pool)] } : {});
  const result = { createToFirstOutput: [] as number[], execRoundTrip: [] as number[] };
  const poolFull = async () => {
    for (let t = 0; pool && readyPoolTasks(d.dataDir) < pool && t < 300; t++) await new Promise((r) => setTimeout(r, 20));
  };
  try {
    if (pool) {
      // The first create of a shape is made from scratch and starts its pool.
      const c = await call(d.url, 'POST', '/sandboxes', {});
      await call(d.url, 'DELETE', `/sandboxes/${c.body.id}`);
    }
    for (let i = 0; i < RUNS; i++) {
      await poolFull();
      let id = '';
      result.createToFirstOutput.push(
        await timeIt(async () => {
          const c = await call(d.url, 'POST', '/sandboxes', {});
          if (c.status !== 201) throw new Error(JSON.stringify(c.body));
          id = c.body.id;
          const r = await fetch(`${d.url}/api/v1/sandboxes/${id}/exec`, {
            method: 'POST',
            headers: { ...authHeaders(d.url), 'content-type': 'application/json', accept: 'application/x-ndjson' },
            body: JSON.stringify({ cmd: ['echo', 'ready'] }),
          });
          const reader = r.body!.getReader();
          await reader.read();
          await reader.cancel().catch(() => undefined);
        }),
      );
      if (i < RUNS - 1) await call(d.url, 'DELETE', `/sandboxes/${id}`);
      else {
        for (let j = 0; j < RUNS; j++) {
          result.execRoundTrip.push(await timeIt(() => call(d.url, 'POST', `/sandboxes/${id}/exec`, { cmd: ['true'] })));
        }
        await call(d.url, 'DELETE', `/sandboxes/${id}`);
      }
    }
  } finally {
    await d.dispose();
  }
  return result;
}

async function main() {
  const store = new LocalImageStore({ root: IMAGES });
  const rootfs = await store.rootfs(DEFAULT_IMAGE);
  const env = Object.fromEntries(rootfs.image.config.env.map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]));
  process.env.PRISM_TEST_IMAGES_DIR = IMAGES;
  const b = await bare(rootfs.layerDirs, env);
  const p = await prism();
  const pooled = await prism(2);
  const s = {
    prismCreate: summarize(p.createToFirstOutput),
    prismExec: summarize(p.execRoundTrip),
    pooledCreate: summarize(pooled.createToFirstOutput),
    bareRun: summarize(b.runForeground),
    bareRunDetachedExec: summarize(b.runDetachedThenExec),
    bareExec: summarize(b.exec),
  };
  const ratio = (a: number, c: number) => Math.round((a / c) * 100) / 100;
  const out = {
    benchmark: 'oci-latency',
    date: new Date().toISOString(),
    runs: RUNS,
    image: DEFAULT_IMAGE,
    prism: { createToFirstOutput: s.prismCreate, execRoundTrip: s.prismExec },
    pooled: { createToFirstOutput: s.pooledCreate },
    bare: { runForeground: s.bareRun, runDetachedThenExec: s.bareRunDetachedExec, exec: s.bareExec },
    ratios: {
      createVsBareRun: ratio(s.prismCreate.medianMs, s.bareRun.medianMs),
      pooledCreateVsBareRun: ratio(s.pooledCreate.medianMs, s.bareRun.medianMs),
      createVsBareRunDetachedThenExec: ratio(s.prismCreate.medianMs, s.bareRunDetachedExec.medianMs),
      execVsBareExec: ratio(s.prismExec.medianMs, s.bareExec.medianMs),
    },
    targets: { createVsBareRun: 1.5, pooledCreateVsBareRun: 1.0, execVsBareExec: 2 },
  };
  process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
}

main().catch((e) => {
  process.stderr.write(`bench failed: ${e instanceof Error ? e.stack : e}\n`);
  process.exit(1);
});
