/**
 * The files API's throughput on a real prismd, with the host's own disk speed measured in the same run
 * as the baseline (writing and reading the same bytes with plain fs calls in the same data dir):
 *
 *   <runtime>.upload / .download   50 MiB (default) through the SDK: HTTP, the daemon, the exec agent,
 *                                   `prism-init fs` inside the task, the sandbox's writable layer
 *   hostDisk.write / .read         the same bytes written (fsync'd like a finished upload is not: no
 *                                   fsync on either side) and read back on the host
 *   <runtime>.uploadVsHost         upload MiB/s over host write MiB/s (the cost of the path)
 *
 * Usage: node dist/bench/files-throughput.js [runs] [MiB] [runtimes, default oci]   (root; PRISM_BENCH_IMAGES_DIR)
 */
import { randomBytes } from 'node:crypto';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Prism } from '../src/sdk/index.js';
import { startPrismd } from '../test/integration/prismd-harness.js';
import { summarize, timeIt } from './stats.js';

const RUNS = Math.max(3, Number(process.argv[2] ?? 5));
const MIB = Math.max(1, Number(process.argv[3] ?? 50));
const RUNTIMES = (process.argv[4] ?? 'oci').split(',');
const IMAGES = process.env.PRISM_BENCH_IMAGES_DIR ?? '/var/lib/prism-test/images';

const rate = (ms: number) => Math.round((MIB / (ms / 1000)) * 10) / 10;

async function main() {
  const d = await startPrismd({ imagesDir: IMAGES });
  const out: Record<string, unknown> = { benchmark: 'files-throughput', mib: MIB, runs: RUNS };
  try {
    const prism = new Prism({ url: d.url, token: d.token });
    const data = randomBytes(MIB << 20);
    const hostFile = join(d.dataDir, 'bench-host-file');
    const host = { write: [] as number[], read: [] as number[] };
    for (const runtime of RUNTIMES) {
      const sb = await prism.sandboxes.create({ runtime: runtime as 'oci', memoryMb: 512, diskMb: Math.max(1024, MIB * 3) });
      const up: number[] = [];
      const down: number[] = [];
      try {
        for (let i = 0; i < RUNS; i++) {
          // Interleaved with the host baseline so machine noise hits both.
          host.write.push(await timeIt(() => writeFile(hostFile, data)));
          host.read.push(await timeIt(() => readFile(hostFile)));
          up.push(await timeIt(() => sb.files.write('/home/sandbox/bench.bin', data)));
          let got: Uint8Array | undefined;
          down.push(await timeIt(async () => (got = await sb.files.read('/home/sandbox/bench.bin'))));
          if (!got || Buffer.compare(Buffer.from(got), data) !== 0) throw new Error(`${runtime}: the file came back different`);
        }
      } finally {
        await sb.delete();
      }
      const u = summarize(up);
      const dn = summarize(down);
      out[runtime] = {
        upload: { ...u, medianMiBps: rate(u.medianMs) },
        download: { ...dn, medianMiBps: rate(dn.medianMs) },
      };
    }
    await rm(hostFile, { force: true });
    const w = summarize(host.write);
    const r = summarize(host.read);
    out.hostDisk = { write: { ...w, medianMiBps: rate(w.medianMs) }, read: { ...r, medianMiBps: rate(r.medianMs) } };
    for (const runtime of RUNTIMES) {
      const x = out[runtime] as { upload: { medianMs: number }; download: { medianMs: number } };
      out[`${runtime}.uploadVsHost`] = Math.round((w.medianMs / x.upload.medianMs) * 100) / 100;
      out[`${runtime}.downloadVsHost`] = Math.round((r.medianMs / x.download.medianMs) * 100) / 100;
    }
  } finally {
    await d.dispose();
  }
  console.log(JSON.stringify(out, null, 2));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
