import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO_ROOT, integrationSkipReason, startPrismd, type Prismd } from './prismd-harness.js';

const skip = integrationSkipReason();

describe.skipIf(!!skip)('prismctl against a real prismd', () => {
  let d: Prismd;
  const cfgDir = mkdtempSync(join(tmpdir(), 'prismctl-cfg-'));
  const ctl = (args: string[], input?: string, env: Record<string, string> = { PRISM_TOKEN: d.token }) => {
    const r = spawnSync(process.execPath, [join(REPO_ROOT, 'bin', 'prismctl.js'), '--api', d.api, ...args], {
      encoding: 'utf8',
      input,
      timeout: 60_000,
      env: { ...process.env, PRISM_TOKEN: '', PRISM_CONFIG: join(cfgDir, 'config.json'), ...env },
    });
    return { code: r.status, out: r.stdout, err: r.stderr };
  };

  beforeAll(async () => {
    d = await startPrismd();
  });
  afterAll(async () => {
    await d?.dispose();
    rmSync(cfgDir, { recursive: true, force: true });
  });

  it('needs a token: refuses without one, logs in, creates, lists and revokes tokens', () => {
    const denied = ctl(['sandbox', 'ls'], undefined, {});
    expect(denied.code).toBe(1);
    expect(denied.err).toContain('UNAUTHENTICATED');
    expect(denied.err).toContain('prismctl login');
    const made = ctl(['-o', 'json', 'token', 'create', 'ci-bot', '--admin']);
    expect(made.code, made.err).toBe(0);
    const bot = JSON.parse(made.out) as { id: string; token: string };
    // login saves the address and token (mode 0600); later calls need neither flag nor env.
    const login = ctl(['--token', bot.token, 'login'], undefined, {});
    expect(login.code, login.err).toBe(0);
    expect(statSync(join(cfgDir, 'config.json')).mode & 0o777).toBe(0o600);
    const listed = ctl(['token', 'ls'], undefined, {});
    expect(listed.code, listed.err).toBe(0);
    expect(listed.out).toContain('ci-bot');
    expect(listed.out).toContain('admin');
    expect(listed.out).not.toContain(bot.token.slice(-20));
    expect(ctl(['token', 'rm', 'ci-bot']).code).toBe(0);
    const revoked = ctl(['sandbox', 'ls'], undefined, {});
    expect(revoked.code).toBe(1);
    expect(revoked.err).toContain('UNAUTHENTICATED');
    rmSync(join(cfgDir, 'config.json'));
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

    const stats = ctl(['sandbox', 'stats', 'cli']);
    expect(stats.code).toBe(0);
    expect(stats.out).toMatch(/CPU %\s+MEM USAGE \/ LIMIT\s+MEM %\s+DISK USED \/ SIZE\s+NET I\/O\s+PIDS/);
    expect(stats.out).toMatch(/cli\s+\d+\.\d% of 1\s+[\d.]+ [KMG]i?B\/256 MiB/);
    const statsJson = JSON.parse(ctl(['-o', 'json', 'sandbox', 'stats']).out).stats;
    expect(statsJson).toEqual([expect.objectContaining({ name: 'cli', memTotal: 256 * 2 ** 20, pids: expect.any(Number) })]);
    expect(ctl(['sandbox', 'pause', 'cli']).out).toMatch(/: paused/);
    expect(JSON.parse(ctl(['-o', 'json', 'sandbox', 'info', 'cli']).out).status).toBe('paused');
    expect(ctl(['sandbox', 'resume', 'cli']).out).toMatch(/: running/);
    const snap = JSON.parse(ctl(['-o', 'json', 'sandbox', 'snapshot', 'cli', '--name', 'cli-snap']).out);
    expect(snap).toMatchObject({ name: 'cli-snap', sandboxName: 'cli', memory: false });
    expect(ctl(['snapshot', 'ls']).out).toMatch(new RegExp(`${snap.id}\\s+cli-snap\\s+cli`));
    expect(ctl(['sandbox', 'create', '--name', 'from-snap', '--snapshot', snap.id]).code).toBe(0);
    expect(ctl(['sandbox', 'exec', 'from-snap', '--', 'sh', '-c', 'echo $GREETING']).out).toBe('\n'); // files, not the env
    const busy = ctl(['snapshot', 'rm', snap.id]);
    expect(busy.code).toBe(1);
    expect(busy.err).toMatch(/in use by 'from-snap'/);
    expect(ctl(['sandbox', 'rm', 'from-snap']).code).toBe(0);
    expect(ctl(['snapshot', 'rm', snap.id]).out).toMatch(/deleted/);
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
