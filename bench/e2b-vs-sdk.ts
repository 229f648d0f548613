/**
 * The E2B path beside Prism's own, same prismd, same run: the official e2b SDK (through the gateway)
 * and Prism's SDK each create a sandbox, run `echo ready` to its first output, and delete it. The
 * difference is the gateway's cost (translation, envd over Connect, the E2B network default).
 *
 *   e2b.createToFirstOutput    Sandbox.create() then commands.run('echo ready') until its stdout
 *   e2bNoNet.createToFirstOutput  the same with allowInternetAccess: false (no network setup, as Prism's default)
 *   prism.createToFirstOutput  prism.sandboxes.create() then sb.exec(['echo', 'ready']) until its stdout
 *   e2b.command / prism.exec   one more command on a running sandbox
 *
 * Usage: node dist/bench/e2b-vs-sdk.js [runs]   (root; PRISM_BENCH_IMAGES_DIR picks the image store)
 */
import { Sandbox } from 'e2b';
import { Prism } from '../src/sdk/index.js';
import { startPrismd } from '../test/integration/prismd-harness.js';
import { summarize, timeIt } from './stats.js';

const RUNS = Number(process.argv[2] ?? 15);
const IMAGES = process.env.PRISM_BENCH_IMAGES_DIR ?? '/var/lib/prism-test/images';

async function main(): Promise<void> {
  const d = await startPrismd({ imagesDir: IMAGES, extraArgs: ['--runtime', 'oci'] });
  const e2b = { apiKey: d.token, apiUrl: `${d.url}/e2b`, sandboxUrl: `${d.url}/e2b/envd` };
  const prism = new Prism({ url: d.url, token: d.token });
  const samples: Record<string, number[]> = {
    'e2b.createToFirstOutput': [], 'e2bNoNet.createToFirstOutput': [], 'prism.createToFirstOutput': [], 'e2b.command': [], 'prism.exec': [],
  };
  try {
    for (let i = 0; i < RUNS + 1; i++) {
      // Interleaved, so that drift on the host hits all sides alike; the first round warms up.
      const keep = i > 0;
      let sbx!: Sandbox;
      let t = await timeIt(async () => {
        sbx = await Sandbox.create(e2b);
        await sbx.commands.run('echo ready');
      });
      if (keep) samples['e2b.createToFirstOutput']!.push(t);
      t = await timeIt(() => sbx.commands.run('echo ready'));
      if (keep) samples['e2b.command']!.push(t);
      await sbx.kill();
      let quiet!: Sandbox;
      t = await timeIt(async () => {
        quiet = await Sandbox.create({ ...e2b, allowInternetAccess: false });
        await quiet.commands.run('echo ready');
      });
      if (keep) samples['e2bNoNet.createToFirstOutput']!.push(t);
      await quiet.kill();
      let sb!: Awaited<ReturnType<typeof prism.sandboxes.create>>;
      t = await timeIt(async () => {
        sb = await prism.sandboxes.create({});
        await sb.exec(['echo', 'ready']);
      });
      if (keep) samples['prism.createToFirstOutput']!.push(t);
      t = await timeIt(() => sb.exec(['echo', 'ready']));
      if (keep) samples['prism.exec']!.push(t);
      await sb.delete();
    }
  } finally {
    await d.dispose();
  }
  const s = Object.fromEntries(Object.entries(samples).map(([k, v]) => [k, summarize(v)]));
  const ratio = (a: string, b: string) => Math.round((s[a]!.medianMs / s[b]!.medianMs) * 100) / 100;
  console.log(JSON.stringify({
    bench: 'e2b-vs-sdk',
    runtime: 'oci',
    samples: s,
    ratios: {
      e2bCreateVsPrism: ratio('e2b.createToFirstOutput', 'prism.createToFirstOutput'),
      e2bNoNetCreateVsPrism: ratio('e2bNoNet.createToFirstOutput', 'prism.createToFirstOutput'),
      e2bCommandVsPrismExec: ratio('e2b.command', 'prism.exec'),
    },
    note: 'same prismd, same run; e2b sandboxes get the internet by default (a network namespace and rules), Prism sandboxes none',
  }, null, 2));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
