import { existsSync } from 'node:fs';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { LinuxNetworkManager } from '../../src/net/linux/linux-network-manager.js';
import { integrationSkipReason } from './prismd-harness.js';

const skip = integrationSkipReason() ?? (existsSync('/usr/sbin/nft') ? undefined : 'nft is not installed (scripts/setup.sh)');
if (skip) console.warn(`skipping network claim tests: ${skip}`);

/** Its own pool, above those of the other network tests (10.203.128.0/19) and of test daemons (10.203.64.0/18). */
const POOL = '10.203.160.0/24';

/**
 * Two daemons' network managers on one host and one pool (as `npm run cluster`'s three nodes on one
 * machine), setting up networks at the same moment: each /30 is claimed host-wide before its address
 * is set up, so no two sandboxes get the same address. Real namespaces, veths and nftables.
 */
describe.skipIf(!!skip)('sandbox networks of two daemons on one pool', () => {
  const dirs: string[] = [];
  const managers: LinuxNetworkManager[] = [];
  const ids: [LinuxNetworkManager, string][] = [];
  afterAll(async () => {
    for (const [m, id] of ids) await m.teardown(id).catch(() => undefined);
    for (const m of managers) await m.close();
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  });

  it('never gives two sandboxes one address, and leaves no claim, link or table behind', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'prism-netclaims-'));
    dirs.push(dir);
    const claimsDir = join(dir, 'claims');
    const tag = process.pid.toString(36).slice(-4);
    const make = (n: number) => {
      const m = new LinuxNetworkManager({ stateDir: join(dir, `net${n}`), table: `prism_claims${n}_${tag}`, pool: POOL, dnsUpstream: { host: '127.0.0.1', port: 53 }, claimsDir });
      managers.push(m);
      return m;
    };
    const [a, b] = [make(0), make(1)];
    const setUp = (m: LinuxNetworkManager, name: string) => {
      const id = `claims-${tag}-${name}`;
      ids.push([m, id]);
      return m.setup(id, 'none');
    };
    // Each manager sets its own networks up one at a time; the two run side by side.
    const run = async (m: LinuxNetworkManager, who: string) => {
      const out = [];
      for (let i = 0; i < 6; i++) out.push(await setUp(m, `${who}${i}`));
      return out;
    };
    const nets = (await Promise.all([run(a, 'a'), run(b, 'b')])).flat();
    const addresses = nets.map((n) => n.address);
    expect(new Set(addresses).size).toBe(12);
    expect((await readdir(claimsDir)).length).toBe(12);

    for (const [m, id] of ids.splice(0)) await m.teardown(id);
    expect(await readdir(claimsDir)).toEqual([]);
    for (const n of nets) expect(existsSync(`/run/netns/prism-${n.sandboxId}`)).toBe(false);
  });
});
