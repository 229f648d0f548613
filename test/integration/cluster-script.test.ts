/**
 * `npm run cluster` (scripts/cluster.sh) as a user runs it: three prismd on loopback formed by
 * --cluster-init and --join, a sandbox placed and run through them, `stop` leaving nothing behind;
 * and a start that fails (a node's API port is taken) stopping whatever it had started.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Prism } from '../../src/sdk/index.js';
import { etcdSkipReason } from '../fixtures/etcd-cluster.js';
import { REPO_ROOT, TEST_IMAGES_DIR, freePort, integrationSkipReason } from './prismd-harness.js';

const skip = integrationSkipReason() ?? (etcdSkipReason || undefined);

/** Three consecutive free ports from `base` (the script numbers its nodes' ports up from one). */
async function freeRun(): Promise<number> {
  for (;;) {
    const base = await freePort();
    if (base > 60000) continue;
    const ok = await Promise.all([1, 2, 10, 11, 12].map((d) => canListen(base + d)));
    if (ok.every(Boolean)) return base;
  }
}

function canListen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createServer();
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

/** Processes whose command line mentions `dir` (prismd and etcd members of that cluster). */
function processesUnder(dir: string): string[] {
  const out = spawnSync('pgrep', ['-af', dir], { encoding: 'utf8' }).stdout;
  return out.split('\n').filter((l) => l.trim() && !l.includes('pgrep'));
}

describe.skipIf(skip !== undefined)('npm run cluster (scripts/cluster.sh)', () => {
  const dirs: string[] = [];
  const script = (dir: string, env: Record<string, string>, ...args: string[]) =>
    spawnSync('bash', [join(REPO_ROOT, 'scripts', 'cluster.sh'), ...args], {
      encoding: 'utf8',
      timeout: 240_000,
      env: { ...process.env, PRISM_CLUSTER_DIR: dir, PRISM_CLUSTER_IMAGES_DIR: TEST_IMAGES_DIR, ...env },
    });

  afterAll(() => {
    for (const d of dirs) {
      if (existsSync(d)) script(d, {}, 'stop');
      rmSync(d, { recursive: true, force: true });
    }
  });

  it('starts three nodes that form one cluster, runs a sandbox through them, and stop leaves nothing', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'prism-cluster-script-'));
    dirs.push(dir);
    const api = await freeRun();
    const etcd = await freeRun();
    const env = { PRISM_CLUSTER_API_PORT: String(api), PRISM_CLUSTER_ETCD_PORT: String(etcd) };
    const started = script(dir, env, 'start', '--detach', '--runtime', 'oci', '--capacity-memory-mb', '4096');
    expect(started.status, started.stderr + started.stdout).toBe(0);
    const token = readFileSync(join(dir, 'admin-token'), 'utf8').trim();
    const via = (i: number) => new Prism({ url: `http://127.0.0.1:${api + i}`, token });
    const members = await via(1).cluster.members();
    expect(members.map((m) => m.name).sort()).toEqual(['node0', 'node1', 'node2']);
    expect(members.every((m) => m.healthy && !m.learner)).toBe(true);
    const sb = await via(2).sandboxes.create({ name: 'demo', memoryMb: 64 });
    expect((await (await via(0).sandboxes.get('demo')).exec('echo 42')).text()).toBe('42\n');
    expect(sb.status).toBe('running');
    const stopped = script(dir, env, 'stop');
    expect(stopped.status, stopped.stderr).toBe(0);
    expect(processesUnder(dir)).toEqual([]);
    expect(readFileSync('/proc/mounts', 'utf8')).not.toContain(dir);
  }, 300_000);

  it('stops what it started when a start fails', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'prism-cluster-script-'));
    dirs.push(dir);
    const api = await freeRun();
    const etcd = await freeRun();
    // node1's API port is taken: node0 (and its etcd member) start, node1 cannot.
    const blocker: Server = createServer();
    await new Promise<void>((r) => blocker.listen(api + 1, '127.0.0.1', () => r()));
    try {
      const started = script(dir, { PRISM_CLUSTER_API_PORT: String(api), PRISM_CLUSTER_ETCD_PORT: String(etcd) }, 'start', '--detach', '--runtime', 'oci');
      expect(started.status).not.toBe(0);
      expect(started.stderr).toContain('start failed; stopping what was started');
      expect(processesUnder(dir)).toEqual([]);
    } finally {
      blocker.close();
    }
  }, 300_000);
});
