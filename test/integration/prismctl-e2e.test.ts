import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO_ROOT, integrationSkipReason, startPrismd, type Prismd } from './prismd-harness.js';

const skip = integrationSkipReason();

describe.skipIf(!!skip)('prismctl against a real prismd', () => {
  let d: Prismd;
  const ctl = (args: string[], input?: string) => {
    const r = spawnSync(process.execPath, [join(REPO_ROOT, 'bin', 'prismctl.js'), '--api', d.api, ...args], {
      encoding: 'utf8',
      input,
      timeout: 60_000,
    });
    return { code: r.status, out: r.stdout, err: r.stderr };
  };

  beforeAll(async () => {
    d = await startPrismd();
  });
  afterAll(async () => {
    await d?.dispose();
  });

  it('creates, lists, runs, logs, stops, starts and removes a sandbox', () => {
    const created = ctl(['-o', 'json', 'sandbox', 'create', '--name', 'cli', '--memory', '256', '--env', 'GREETING=hi']);
    expect(created.code, created.err).toBe(0);
    expect(JSON.parse(created.out)).toMatchObject({ name: 'cli', status: 'running', memoryMb: 256 });

    const ls = ctl(['sandbox', 'ls']);
    expect(ls.out).toMatch(/cli\s+.*running/);

    const py = ctl(['sandbox', 'exec', 'cli', '--', 'python3', '-c', 'print(42)']);
    expect(py).toMatchObject({ code: 0, out: '42\n' });

    const sh = ctl(['sandbox', 'exec', 'cli', '--command', 'echo $GREETING; echo oops >&2; exit 5']);
    expect(sh).toMatchObject({ code: 5, out: 'hi\n', err: 'oops\n' });

    const stdin = ctl(['sandbox', 'exec', '-i', 'cli', '--', 'wc', '-c'], 'twelve bytes');
    expect(stdin.out.trim()).toBe('12');

    const logs = ctl(['-o', 'json', 'sandbox', 'logs', 'cli']);
    const execs = JSON.parse(logs.out).executions ?? JSON.parse(logs.out);
    expect(execs.map((e: { exitCode: number }) => e.exitCode)).toEqual([0, 5, 0]);

    expect(ctl(['sandbox', 'stop', 'cli']).code).toBe(0);
    expect(JSON.parse(ctl(['-o', 'json', 'sandbox', 'info', 'cli']).out).status).toBe('stopped');
    expect(ctl(['sandbox', 'start', 'cli']).code).toBe(0);
    expect(ctl(['sandbox', 'rm', 'cli']).code).toBe(0);
    expect(JSON.parse(ctl(['-o', 'json', 'sandbox', 'ls']).out).sandboxes).toEqual([]);
  });

  it('shows the node and the cluster', () => {
    const nodes = ctl(['-o', 'json', 'node', 'ls']);
    const list = JSON.parse(nodes.out).nodes;
    expect(list).toHaveLength(1);
    const info = ctl(['node', 'info', list[0].name]);
    expect(info.code).toBe(0);
    expect(info.out).toContain(list[0].id);
    expect(ctl(['info']).code).toBe(0);
  });

  it('prints the API error and exits non-zero', () => {
    const r = ctl(['sandbox', 'exec', 'ghost', '--', 'true']);
    expect(r.code).toBe(1);
    expect(r.err).toContain('NOT_FOUND');
    const dup1 = ctl(['sandbox', 'create', '--name', 'dup']);
    const dup2 = ctl(['sandbox', 'create', '--name', 'dup']);
    expect(dup1.code).toBe(0);
    expect(dup2.code).toBe(1);
    expect(dup2.err).toContain('ALREADY_EXISTS');
    ctl(['sandbox', 'rm', 'dup']);
  });
});
