/**
 * What a network costs a create on each runtime, end to end through one prismd (its API's create call
 * until 201, i.e. until a command can run): egress none against egress all, runs interleaved so that
 * machine noise hits both. The microvm runtime restores egress-none VMs from a template snapshot but
 * cold-boots every networked VM (docs/network.md), so its delta is mostly that boot.
 *
 *   <runtime>.none / <runtime>.all   create latency
 *   <runtime>.deltaMedianMs          all minus none, medians
 *
 * Usage: node dist/bench/net-runtimes.js [runs] [runtimes]   e.g. `3 microvm,docker,oci` (root; the
 * shared test image store; PRISM_GUEST_DIR and DOCKER_HOST as for the tests). The first create per
 * runtime and policy is a warm-up (image load, template build) and is not counted.
 */
import { call, startPrismd } from '../test/integration/prismd-harness.js';
import { summarize, timeIt } from './stats.js';

const RUNS = Math.max(1, Number(process.argv[2] ?? 3));
const RUNTIMES = (process.argv[3] ?? 'microvm,docker').split(',');

async function main() {
  const d = await startPrismd({ extraArgs: ['--runtime', 'oci', '--sandbox-cidr', '10.203.224.0/20'] });
  const out: Record<string, unknown> = { runs: RUNS };
  try {
    for (const runtime of RUNTIMES) {
      const samples: Record<'none' | 'all', number[]> = { none: [], all: [] };
      const createOne = async (egress: 'none' | 'all') => {
        let id = '';
        const ms = await timeIt(async () => {
          const r = await call(d.url, 'POST', '/sandboxes', { runtime, cpus: 0.25, memoryMb: 128, network: { egress } });
          if (r.status !== 201) throw new Error(`${runtime} create (${egress}): ${r.status} ${JSON.stringify(r.body)}`);
          id = r.body.id;
        });
        await call(d.url, 'DELETE', `/sandboxes/${id}`);
        return ms;
      };
      await createOne('none');
      await createOne('all');
      // Let a template build that the warm-up started finish before counting (microvm).
      await new Promise((r) => setTimeout(r, runtime === 'microvm' ? 15_000 : 0));
      for (let i = 0; i < RUNS; i++) {
        samples.none.push(await createOne('none'));
        samples.all.push(await createOne('all'));
      }
      const none = summarize(samples.none);
      const all = summarize(samples.all);
      out[runtime] = { none, all, deltaMedianMs: Math.round((all.medianMs - none.medianMs) * 100) / 100 };
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
