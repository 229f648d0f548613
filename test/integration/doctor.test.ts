import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DOCTOR_CHECKS } from '../../src/daemon/doctor/doctor.js';
import { REPO_ROOT, freePort, integrationSkipReason, startPrismd, type Prismd } from './prismd-harness.js';

const skip = integrationSkipReason();
if (skip) console.warn(`skipping prismd doctor tests: ${skip}`);

/** Runs bin/prismd.js to its end (asynchronously: the test's own servers must keep answering meanwhile). */
function prismd(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [join(REPO_ROOT, 'bin', 'prismd.js'), ...args], { timeout: 120_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : null) : 0, stdout, stderr });
    });
  });
}

const LINE = /^(ok|warn|fail) {2,}(\S.*?) {2,}\S/;

/** The real `prismd doctor` on this machine (root, cgroup v1, runc from scripts/setup.sh). */
describe.skipIf(!!skip)('prismd doctor (real host)', () => {
  let dataDir = '';
  let api = '';
  let blocker: Server | undefined;
  const blocked = new Set<Socket>();
  let daemon: Prismd | undefined;
  beforeAll(async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'prism-doctor-'));
    api = `127.0.0.1:${await freePort()}`;
  });
  afterAll(async () => {
    await daemon?.dispose();
    for (const s of blocked) s.destroy();
    await new Promise((r) => (blocker ? blocker.close(r) : r(undefined)));
    await rm(dataDir, { recursive: true, force: true });
  });

  it('prints one line per check and exits 0 with --runtime oci', async () => {
    const r = await prismd(['doctor', '--runtime', 'oci', '--data-dir', join(dataDir, 'new'), '--api', api]);
    console.log(r.stdout);
    expect(r.stderr).toBe('');
    const lines = r.stdout.trimEnd().split('\n');
    expect(lines).toHaveLength(DOCTOR_CHECKS.length);
    for (const l of lines) expect(l).toMatch(LINE);
    const status = Object.fromEntries(lines.map((l) => [LINE.exec(l)![2], LINE.exec(l)![1]]));
    expect(status).toMatchObject({ root: 'ok', runc: 'ok', 'runtime oci': 'ok', 'default runtime': 'ok', 'data dir': 'ok', 'api port': 'ok' });
    expect(lines.filter((l) => l.startsWith('fail'))).toEqual([]);
    expect(lines.find((l) => l.includes('default runtime'))).toContain('oci (--runtime oci)');
    expect(r.code).toBe(0);
  });

  it('prints the same checks as JSON with --json', async () => {
    const r = await prismd(['doctor', '--json', '--runtime', 'oci', '--data-dir', join(dataDir, 'new'), '--api', api]);
    const out = JSON.parse(r.stdout) as { exitCode: number; checks: { name: string; status: string; detail: string }[] };
    expect(out.exitCode).toBe(0);
    expect(out.checks).toHaveLength(DOCTOR_CHECKS.length);
    expect(out.checks.find((c) => c.name === 'runtime oci')?.status).toBe('ok');
    expect(r.code).toBe(0);
  });

  it('fails on a port another program holds, and prismd refuses it naming the check, without a stack trace', async () => {
    // Something that is not a prismd: it greets like an ssh server and hangs up.
    blocker = createServer((s) => {
      blocked.add(s);
      s.on('error', () => undefined).on('close', () => blocked.delete(s)).resume();
      s.end('SSH-2.0-OpenSSH_9.2\r\n');
    });
    await new Promise<void>((r) => blocker!.listen(0, '127.0.0.1', r));
    const taken = `127.0.0.1:${(blocker.address() as { port: number }).port}`;
    const doctor = await prismd(['doctor', '--runtime', 'oci', '--data-dir', join(dataDir, 'b'), '--api', taken]);
    expect(doctor.stdout).toMatch(new RegExp(`^fail +api port +the API address ${taken} is in use`, 'm'));
    expect(doctor.code).toBe(1);
    const start = await prismd(['--runtime', 'oci', '--data-dir', join(dataDir, 'b'), '--api', taken]);
    expect(start.stderr).toBe(`prismd: the API address ${taken} is in use (another prismd, or another program; choose another with --api). Run \`prismd doctor\` for a full check.\n`);
    expect(start.code).toBe(1);
  });

  it('sees a running prismd on its port and data dir; a second prismd on that data dir is refused', async () => {
    daemon = await startPrismd({ dataDir: join(dataDir, 'running'), extraArgs: ['--runtime', 'oci'] });
    const r = await prismd(['doctor', '--runtime', 'oci', '--data-dir', daemon.dataDir, '--api', daemon.api]);
    expect(r.stdout).toMatch(new RegExp(`^ok +api port +${daemon.api} is served by a running prismd`, 'm'));
    expect(r.stdout).toMatch(new RegExp(`^ok +data dir +.*a prismd \\(pid ${daemon.proc.pid}\\) is using it`, 'm'));
    expect(r.code).toBe(0);
    const second = await prismd(['--runtime', 'oci', '--data-dir', daemon.dataDir, '--api', `127.0.0.1:${await freePort()}`]);
    expect(second.stderr).toMatch(/^prismd: another prismd \(pid \d+\) is using .*Run `prismd doctor` for a full check\.\n$/);
    expect(second.code).toBe(1);
  });

  it('exits 1 when the runtime asked for cannot work here', async () => {
    const r = await prismd(['doctor', '--runtime', 'docker', '--docker-host', 'unix:///nonexistent/docker.sock', '--data-dir', join(dataDir, 'new'), '--api', api]);
    expect(r.stdout).toMatch(/^fail +runtime docker +no Docker engine reachable at unix:\/\/\/nonexistent\/docker.sock/m);
    expect(r.code).toBe(1);
  });
});
