/**
 * Image pull throughput: Prism's POST /images beside skopeo + GNU tar, measured in the same run.
 *
 *   prism.pull                   POST /api/v1/images {ref} on a prismd with an empty image store, from the
 *                                request to the response (resolve, download, verify, unpack every layer)
 *   prism.phases                 the same pull on another fresh store with `Accept: application/x-ndjson`,
 *                                split at the first `unpacking` event: resolve + download + verify, then
 *                                unpack (each layer's unpack also checks its diffId) + tag
 *   baseline.skopeoCopy          `skopeo copy docker://… oci:<tmp>:big` (digests checked by skopeo)
 *   baseline.skopeoPlusUnpack    the same copy, then every layer into one directory with GNU tar
 *                                (`tar -xzf` for gzip, `zstd -dc | tar -x` for zstd), in layer order
 *
 * Each run uses a new prismd on a new data dir and image store, and new temp dirs for the baseline, all under
 * the same tmpdir, so nothing is cached between runs but the registry's blobs in the page cache (one untimed
 * warm-up of each side first, so neither pays for a cold cache). Runs interleave Prism and baseline.
 * imageBytes is what a pull downloads: config + compressed layers; mbPerSec is imageBytes / 1e6 / median s.
 *
 * The image, prism-test/big:1 (~50 MB incompressible, 3 layers) on the plain test registry 127.0.0.1:5000,
 * is pushed by test/fixtures/test-images.ts `pushTestImages()`. That module is not imported here: compiled
 * into dist/ it would look for scripts/ under dist/ and re-push every fixture (its version stamp is the hash
 * of its own source). When the image is missing, this runs the fixture's vitest file, which pushes it.
 *
 * Usage: node dist/bench/pull-throughput.js [runs]   (root; default 5 runs)
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { packageRoot } from '../src/daemon/package-info.js';
import { call, integrationSkipReason, startPrismd, type Prismd, authHeaders } from '../test/integration/prismd-harness.js';
import { summarize, timeIt } from './stats.js';

const RUNS = Number(process.argv[2] ?? 5);
const REGISTRY = '127.0.0.1:5000';
const IMAGE = `${REGISTRY}/prism-test/big:1`;
const ROOT = packageRoot();

const LAYER_GZIP = 'application/vnd.oci.image.layer.v1.tar+gzip';
const LAYER_ZSTD = 'application/vnd.oci.image.layer.v1.tar+zstd';
const LAYER_TAR = 'application/vnd.oci.image.layer.v1.tar';
const DOCKER_LAYER_GZIP = 'application/vnd.docker.image.rootfs.diff.tar.gzip';

interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
}
interface Manifest {
  config: Descriptor;
  layers: Descriptor[];
}

// ---- cleanup: every temp dir and prismd this process made, on success, failure and signals -------------

const tempDirs = new Set<string>();
const daemons = new Set<Prismd>();
const children = new Set<ChildProcess>();
/** Set once cleanup begins: nothing new may start after it. */
let stopping = false;

function checkStopping(): void {
  if (stopping) throw new Error('bench: stopping');
}

async function tempDir(prefix: string): Promise<string> {
  checkStopping();
  const dir = await mkdtemp(join(tmpdir(), prefix));
  tempDirs.add(dir);
  return dir;
}

async function removeDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true, maxRetries: 3 });
  tempDirs.delete(dir);
}

/**
 * prismds whose data dir lies in one of our temp dirs: also finds one that startPrismd has spawned but not
 * returned (still starting, or never healthy, which it throws on without stopping the process).
 */
function killPrismdsIn(dirs: Iterable<string>): void {
  const ours = [...dirs].map((d) => `${d}/`);
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      const args = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
      const dataDir = args[args.indexOf('--data-dir') + 1];
      if (args.includes('--data-dir') && dataDir && ours.some((d) => dataDir.startsWith(d))) process.kill(Number(pid), 'SIGKILL');
    } catch {
      /* gone, or not ours to read */
    }
  }
}

async function prismd(work: string, imagesDir: string): Promise<Prismd> {
  checkStopping();
  let d: Prismd;
  try {
    d = await startPrismd({ dataDir: join(work, 'data'), imagesDir });
  } catch (e) {
    killPrismdsIn([work]);
    throw e;
  }
  daemons.add(d);
  checkStopping(); // cleanup() began while it started: it is in `daemons` now, so cleanup stops it
  return d;
}

async function dispose(d: Prismd): Promise<void> {
  await d.dispose();
  daemons.delete(d);
}

let cleaning: Promise<void> | undefined;
function cleanup(): Promise<void> {
  stopping = true;
  cleaning ??= (async () => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    for (const d of daemons) await d.dispose().catch(() => d.proc.kill('SIGKILL'));
    // A daemon whose start was in flight when this began; wait out its startup, then stop it.
    await new Promise((r) => setTimeout(r, 200));
    for (const d of daemons) await d.dispose().catch(() => d.proc.kill('SIGKILL'));
    killPrismdsIn(tempDirs);
    for (const dir of tempDirs) await rm(dir, { recursive: true, force: true, maxRetries: 3 }).catch(() => undefined);
  })();
  return cleaning;
}

for (const [sig, code] of [['SIGINT', 130], ['SIGTERM', 143]] as const) {
  process.once(sig, () => {
    process.stderr.write(`bench: ${sig}, cleaning up\n`);
    void cleanup().finally(() => process.exit(code));
  });
}

// ---- processes ---------------------------------------------------------------------------------------

function track(p: ChildProcess): ChildProcess {
  children.add(p);
  p.once('exit', () => children.delete(p));
  return p;
}

function run(cmd: string, args: string[], opts: { cwd?: string; stdout?: 'collect' | 'stderr' } = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    const p = track(spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], ...(opts.cwd ? { cwd: opts.cwd } : {}) }));
    let out = '';
    let err = '';
    p.stdout!.on('data', (b: Buffer) => {
      if (opts.stdout === 'collect') out += b.toString();
      else if (opts.stdout === 'stderr') process.stderr.write(b);
    });
    p.stderr!.on('data', (b: Buffer) => (opts.stdout === 'stderr' ? process.stderr.write(b) : (err += b.toString())));
    p.once('error', reject);
    p.once('close', (code) => (code === 0 ? resolve(out) : reject(new Error(`${cmd} ${args.join(' ')}: exit ${code} ${err.trim()}`))));
  });
}

/** `a | b`, without a shell; fails if either side does. */
function pipe(a: [string, string[]], b: [string, string[]]): Promise<void> {
  return new Promise((resolve, reject) => {
    const pa = track(spawn(a[0], a[1], { stdio: ['ignore', 'pipe', 'pipe'] }));
    const pb = track(spawn(b[0], b[1], { stdio: ['pipe', 'ignore', 'pipe'] }));
    pa.stdout!.pipe(pb.stdin!);
    let err = '';
    pa.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    pb.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    const done = (p: ChildProcess) =>
      new Promise<number | null>((r, j) => {
        p.once('error', j);
        p.once('close', (code) => r(code));
      });
    Promise.all([done(pa), done(pb)]).then(([ca, cb]) => {
      if (ca === 0 && cb === 0) resolve();
      else reject(new Error(`${a[0]} | ${b[0]}: exit ${ca}/${cb} ${err.trim()}`));
    }, reject);
  });
}

// ---- setup -------------------------------------------------------------------------------------------

async function inspectManifest(): Promise<Manifest | undefined> {
  try {
    return JSON.parse(await run('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${IMAGE}`], { stdout: 'collect' })) as Manifest;
  } catch {
    return undefined;
  }
}

/** The registries up (idempotent script), and the image in place: else pushTestImages() via its test file. */
async function ensureImage(): Promise<Manifest> {
  await run('bash', [join(ROOT, 'scripts', 'test-registries.sh'), 'start']);
  let manifest = await inspectManifest();
  if (!manifest) {
    process.stderr.write(`bench: ${IMAGE} is not in the registry; pushing the test images (vitest test/fixtures/test-images.test.ts)\n`);
    await run(join(ROOT, 'node_modules', '.bin', 'vitest'), ['run', 'test/fixtures/test-images.test.ts'], { cwd: ROOT, stdout: 'stderr' });
    manifest = await inspectManifest();
  }
  if (!manifest?.layers?.length) throw new Error(`${IMAGE} is still not in the registry at ${REGISTRY}`);
  for (const l of manifest.layers) {
    if (![LAYER_GZIP, DOCKER_LAYER_GZIP, LAYER_ZSTD, LAYER_TAR].includes(l.mediaType)) throw new Error(`no baseline unpacker for ${l.mediaType}`);
  }
  return manifest;
}

// ---- Prism -------------------------------------------------------------------------------------------

async function prismPull(expectLayers: number): Promise<number> {
  const work = await tempDir('prism-bench-pull-');
  const imagesDir = join(work, 'images');
  try {
    const d = await prismd(work, imagesDir);
    try {
      let status = 0;
      let body: unknown;
      const ms = await timeIt(async () => {
        ({ status, body } = await call(d.url, 'POST', '/images', { ref: IMAGE }));
      });
      if (status !== 200) throw new Error(`prism pull: HTTP ${status} ${JSON.stringify(body)}`);
      const unpacked = await readdir(join(imagesDir, 'layers'));
      if (unpacked.length !== expectLayers) throw new Error(`prism pull: ${unpacked.length} unpacked layers, want ${expectLayers}`);
      return ms;
    } finally {
      await dispose(d);
    }
  } finally {
    await removeDir(work);
  }
}

interface Phases {
  downloadMs: number;
  unpackMs: number;
  totalMs: number;
}

/** The streamed pull: where the time goes (event times as the client sees them). */
async function prismPhases(): Promise<Phases> {
  const work = await tempDir('prism-bench-pull-');
  try {
    const d = await prismd(work, join(work, 'images'));
    try {
      const t0 = performance.now();
      const r = await fetch(`${d.url}/api/v1/images`, {
        method: 'POST',
        headers: { ...authHeaders(d.url), 'content-type': 'application/json', accept: 'application/x-ndjson' },
        body: JSON.stringify({ ref: IMAGE }),
      });
      let firstUnpack: number | undefined;
      let done: number | undefined;
      let buf = '';
      const decoder = new TextDecoder();
      for await (const chunk of r.body!) {
        const now = performance.now();
        buf += decoder.decode(chunk as Uint8Array, { stream: true });
        let nl: number;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const ev = JSON.parse(buf.slice(0, nl)) as { type: string; phase?: string; error?: unknown };
          buf = buf.slice(nl + 1);
          if (ev.type === 'error') throw new Error(`prism pull (ndjson): ${JSON.stringify(ev.error)}`);
          if (ev.type === 'progress' && ev.phase === 'unpacking') firstUnpack ??= now;
          if (ev.type === 'done') done = now;
        }
      }
      if (firstUnpack === undefined || done === undefined) throw new Error('prism pull (ndjson): no unpacking or done event');
      return { downloadMs: firstUnpack - t0, unpackMs: done - firstUnpack, totalMs: done - t0 };
    } finally {
      await dispose(d);
    }
  } finally {
    await removeDir(work);
  }
}

// ---- baseline ----------------------------------------------------------------------------------------

function skopeoCopy(layout: string): Promise<string> {
  return run('skopeo', ['copy', '--quiet', '--src-tls-verify=false', `docker://${IMAGE}`, `oci:${layout}:big`]);
}

/** The manifest skopeo wrote, as a client would read it: index.json, then the manifest blob. */
async function layoutManifest(layout: string): Promise<Manifest> {
  const blob = (digest: string) => join(layout, 'blobs', ...digest.split(':'));
  const index = JSON.parse(await readFile(join(layout, 'index.json'), 'utf8')) as { manifests: Descriptor[] };
  return JSON.parse(await readFile(blob(index.manifests[0]!.digest), 'utf8')) as Manifest;
}

async function unpackLayers(layout: string, rootfs: string): Promise<void> {
  const manifest = await layoutManifest(layout);
  await mkdir(rootfs);
  for (const l of manifest.layers) {
    const blob = join(layout, 'blobs', ...l.digest.split(':'));
    if (l.mediaType === LAYER_ZSTD) await pipe(['zstd', ['-dc', '-q', '--', blob]], ['tar', ['-x', '-C', rootfs]]);
    else if (l.mediaType === LAYER_TAR) await run('tar', ['-xf', blob, '-C', rootfs]);
    else await run('tar', ['-xzf', blob, '-C', rootfs]);
  }
}

async function baseline(): Promise<{ copyMs: number; copyUnpackMs: number }> {
  const work = await tempDir('prism-bench-skopeo-');
  try {
    const copyMs = await timeIt(() => skopeoCopy(join(work, 'copy')));
    const copyUnpackMs = await timeIt(async () => {
      await skopeoCopy(join(work, 'layout'));
      await unpackLayers(join(work, 'layout'), join(work, 'rootfs'));
    });
    return { copyMs, copyUnpackMs };
  } finally {
    await removeDir(work);
  }
}

// ---- main --------------------------------------------------------------------------------------------

async function main() {
  if (!Number.isInteger(RUNS) || RUNS < 1) throw new Error(`runs must be a positive integer, got ${process.argv[2]}`);
  const skip = integrationSkipReason();
  if (skip) throw new Error(`cannot start prismd: ${skip}`);

  const manifest = await ensureImage();
  const imageBytes = manifest.config.size + manifest.layers.reduce((n, l) => n + l.size, 0);

  // Untimed warm-up of both sides: registry blobs into the page cache, binaries and modules loaded.
  await baseline();
  await prismPull(manifest.layers.length);

  const pull: number[] = [];
  const phases: Phases[] = [];
  const copy: number[] = [];
  const copyUnpack: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    // Alternate which side goes first, so neither always follows the other's writeback.
    if (i % 2 === 0) pull.push(await prismPull(manifest.layers.length));
    const b = await baseline();
    copy.push(b.copyMs);
    copyUnpack.push(b.copyUnpackMs);
    if (i % 2 === 1) pull.push(await prismPull(manifest.layers.length));
    phases.push(await prismPhases());
  }

  const s = {
    pull: summarize(pull),
    copy: summarize(copy),
    copyUnpack: summarize(copyUnpack),
    download: summarize(phases.map((p) => p.downloadMs)),
    unpack: summarize(phases.map((p) => p.unpackMs)),
    streamed: summarize(phases.map((p) => p.totalMs)),
  };
  const ratio = (a: number, c: number) => Math.round((a / c) * 100) / 100;
  const mbPerSec = (ms: number) => Math.round((imageBytes / 1e6 / (ms / 1000)) * 10) / 10;
  const out = {
    benchmark: 'pull-throughput',
    date: new Date().toISOString(),
    runs: RUNS,
    image: IMAGE,
    imageBytes,
    prism: {
      pull: s.pull,
      mbPerSec: mbPerSec(s.pull.medianMs),
      phases: { resolveDownloadVerify: s.download, unpackAndTag: s.unpack, streamedTotal: s.streamed },
    },
    baseline: {
      skopeoCopy: s.copy,
      skopeoPlusUnpack: s.copyUnpack,
      mbPerSec: { skopeoCopy: mbPerSec(s.copy.medianMs), skopeoPlusUnpack: mbPerSec(s.copyUnpack.medianMs) },
    },
    ratios: {
      prismVsSkopeoPlusUnpack: ratio(s.pull.medianMs, s.copyUnpack.medianMs),
      prismDownloadVsSkopeoCopy: ratio(s.download.medianMs, s.copy.medianMs),
    },
    target: { prismVsSkopeoPlusUnpack: 1.0 },
  };
  process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
}

if (process.getuid?.() !== 0) {
  process.stderr.write('pull-throughput: must run as root (prismd needs root, and the test registries keep their state under /var/lib/prism-test)\n');
  process.exit(1);
}

main()
  .catch((e) => {
    if (stopping) return; // a signal: its handler reports and sets the exit code
    process.stderr.write(`bench failed: ${e instanceof Error ? e.stack : e}\n`);
    process.exitCode = 1;
  })
  .finally(() => cleanup());
