import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { EgressPolicy } from '../src/core/types.js';
import { LinuxNetworkManager } from '../src/net/linux/linux-network-manager.js';
import { summarize, timeIt } from './stats.js';

/**
 * What a sandbox network adds to create and delete: NetworkManager.setup/teardown per policy, next to
 * the baseline of a bare `ip netns add` + `delete` in the same process. Root only. Prints JSON.
 */
async function main(): Promise<void> {
  const runs = Number(process.env.RUNS ?? 20);
  const stateDir = await mkdtemp(join(tmpdir(), 'prism-net-bench-'));
  const net = new LinuxNetworkManager({ stateDir, table: 'prism_bench', pool: '10.203.240.0/24', dnsUpstream: { host: '127.0.0.1', port: 53 } });
  const out: Record<string, unknown> = {};
  try {
    const { execFileSync } = await import('node:child_process');
    const bare: number[] = [];
    for (let i = 0; i < runs; i++) bare.push(await timeIt(async () => {
      execFileSync('ip', ['netns', 'add', 'prism-bench-bare']);
      execFileSync('ip', ['netns', 'delete', 'prism-bench-bare']);
    }));
    out.bareNetnsAddDelete = summarize(bare);
    const policies: Array<[string, EgressPolicy]> = [['none+ports', 'none'], ['all', 'all'], ['list', { allow: ['203.0.113.0/24', 'example.com'], deny: ['203.0.113.7/32'] }]];
    for (const [name, egress] of policies) {
      const setup: number[] = [];
      const teardown: number[] = [];
      for (let i = 0; i < runs; i++) {
        const id = `sb-bench0000${String(i).padStart(2, '0')}`;
        setup.push(await timeIt(() => net.setup(id, egress)));
        teardown.push(await timeIt(() => net.teardown(id)));
      }
      out[name] = { setup: summarize(setup), teardown: summarize(teardown) };
    }
  } finally {
    await net.close();
    for (const id of await net.listAttached()) await net.teardown(id);
    await rm(stateDir, { recursive: true, force: true });
  }
  console.log(JSON.stringify(out, null, 2));
}

await main();
