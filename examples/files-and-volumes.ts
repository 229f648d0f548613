/**
 * Data in and out of sandboxes: files up and down, a whole directory as a tar stream, and a persistent
 * volume that a second sandbox mounts after the first one is gone ("reuse across executions").
 *
 *   node dist/examples/files-and-volumes.js
 */
import { Prism, PrismApiError } from 'prism-sandbox';

const prism = Prism.fromEnv();
const volume = `example-cache-${process.pid}`;
await prism.volumes.create({ name: volume, sizeMb: 64 });
try {
  // First sandbox: upload input, compute, leave results on the volume.
  const first = await prism.sandboxes.create({ volumes: [{ name: volume, mountPath: '/cache' }] });
  try {
    await first.files.write('/home/sandbox/in/numbers.txt', '1\n2\n3\n4\n');
    const r = await first.exec(['python3', '-c', [
      'import os',
      'nums = [int(x) for x in open("/home/sandbox/in/numbers.txt")]',
      'os.makedirs("/cache/results", exist_ok=True)',
      'open("/cache/results/sum.txt", "w").write(str(sum(nums)))',
      'open("/cache/results/squares.txt", "w").write(" ".join(str(n * n) for n in nums))',
    ].join('\n')]);
    if (r.exitCode !== 0) throw new Error(new TextDecoder().decode(r.stderr));
    // A directory comes out as a tar stream (the same format `prismctl sandbox cp` uses).
    const tar = new Uint8Array(await new Response(await first.files.downloadArchive('/cache/results')).arrayBuffer());
    console.log(`archive of /cache/results: ${tar.length} bytes`);
  } finally {
    await first.delete();
  }

  // Second sandbox, later: the volume still holds what the first one wrote.
  const second = await prism.sandboxes.create({ volumes: [{ name: volume, mountPath: '/cache', readOnly: true }] });
  try {
    console.log(`sum from the first sandbox: ${await second.files.readText('/cache/results/sum.txt')}`);
    const entries = await second.files.list('/cache/results');
    console.log(`results: ${entries.map((e) => e.name).sort().join(', ')}`);
    const w = await second.exec(['sh', '-c', 'echo x > /cache/results/new.txt']);
    console.log(`write to the read-only mount: exit ${w.exitCode}`);
    // Paths that do not exist are NOT_FOUND, as a typed error.
    await second.files.read('/cache/nope').catch((e: unknown) => {
      if (e instanceof PrismApiError) console.log(`reading a missing file: ${e.code}`);
      else throw e;
    });
  } finally {
    await second.delete();
  }
} finally {
  await prism.volumes.delete(volume);
}
