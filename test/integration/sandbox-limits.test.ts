import { request } from 'node:http';
import { execFileSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SqliteStore } from '../../src/store/sqlite/sqlite-store.js';
import { authHeaders, call, integrationSkipReason, leftovers, startPrismd, type Prismd } from './prismd-harness.js';
import { ociCgroups, taskPidsCurrent } from '../fixtures/host-cgroups.js';

const skip = integrationSkipReason();

describe.skipIf(!!skip)('limits, bad input and failures', () => {
  let d: Prismd;

  beforeAll(async () => {
    d = await startPrismd();
  });
  afterAll(async () => {
    await d?.dispose();
  });

  it('kills a memory hog and reports it as OOM', async () => {
    const sb = (await call(d.url, 'POST', '/sandboxes', { name: 'hog', memoryMb: 64 })).body;
    const r = await call(d.url, 'POST', `/sandboxes/${sb.id}/exec`, {
      cmd: ['python3', '-c', 'b = []\nwhile True: b.append(bytearray(16 << 20))'],
      timeoutSec: 60,
    });
    expect(r.body).toMatchObject({ oomKilled: true, timedOut: false, exitCode: 137, signal: 'SIGKILL' });
    // The sandbox itself survives and still runs commands.
    const ok = await call(d.url, 'POST', `/sandboxes/${sb.id}/exec`, { command: 'echo alive' });
    expect(ok.body.stdout).toBe('alive\n');
    await call(d.url, 'DELETE', `/sandboxes/${sb.id}`);
  });

  it('contains a fork bomb and keeps the host responsive', async () => {
    const bomb = (await call(d.url, 'POST', '/sandboxes', { name: 'bomb', pidsLimit: 64 })).body;
    const other = (await call(d.url, 'POST', '/sandboxes', { name: 'bystander' })).body;
    const running = call(d.url, 'POST', `/sandboxes/${bomb.id}/exec`, {
      cmd: ['python3', '-c', 'import os\nwhile True:\n  try: os.fork()\n  except OSError: pass'],
      timeoutSec: 5,
    });
    await new Promise((r) => setTimeout(r, 1000));
    const t0 = Date.now();
    const echo = await call(d.url, 'POST', `/sandboxes/${other.id}/exec`, { command: 'echo fine' });
    expect(echo.body.stdout).toBe('fine\n');
    expect(Date.now() - t0).toBeLessThan(5000);
    const pids = taskPidsCurrent(ociCgroups, bomb.id);
    expect(pids).toBeLessThanOrEqual(64);
    const r = await running;
    expect(r.body.timedOut).toBe(true);
    // Everything the bomb forked is gone once the exec was killed.
    await new Promise((r) => setTimeout(r, 500));
    const after = taskPidsCurrent(ociCgroups, bomb.id);
    expect(after).toBe(1);
    await call(d.url, 'DELETE', `/sandboxes/${bomb.id}`);
    await call(d.url, 'DELETE', `/sandboxes/${other.id}`);
  });

  it('answers bad requests with 4xx and stable codes', async () => {
    const cases: [string, string, unknown, number, string][] = [
      ['GET', '/sandboxes/sb-doesnotexist', undefined, 404, 'NOT_FOUND'],
      ['POST', '/sandboxes/sb-doesnotexist/exec', { command: 'true' }, 404, 'NOT_FOUND'],
      ['DELETE', '/sandboxes/sb-doesnotexist', undefined, 404, 'NOT_FOUND'],
      ['POST', '/sandboxes', '{"name": ', 400, 'INVALID_ARGUMENT'],
      ['POST', '/sandboxes', { memoryMb: 'lots' }, 400, 'INVALID_ARGUMENT'],
      ['POST', '/sandboxes', { cpus: -1 }, 400, 'INVALID_ARGUMENT'],
      ['POST', '/sandboxes', { name: 'Bad Name!' }, 400, 'INVALID_ARGUMENT'],
      ['POST', '/sandboxes', { nmae: 'typo' }, 400, 'INVALID_ARGUMENT'],
      ['POST', '/sandboxes', { image: 'prism.local/no-such-image:1' }, 404, 'NOT_FOUND'],
      ['POST', '/sandboxes', { runtime: 'warp' }, 400, 'INVALID_ARGUMENT'],
      ['GET', '/no/such/route', undefined, 404, 'NOT_FOUND'],
      ['POST', '/sandboxes', { name: 'x'.repeat(10) , env: { 'BAD KEY': 'v' } }, 400, 'INVALID_ARGUMENT'],
    ];
    for (const [method, path, body, status, code] of cases) {
      const r = await call(d.url, method, path, body);
      expect({ method, path, status: r.status, code: r.body?.error?.code }).toEqual({ method, path, status, code });
      expect(typeof r.body.error.message).toBe('string');
    }
    // A body over the limit is refused on its declared length, before it is read. (Sending all of it
    // raced the server's early answer and close: the client could get EPIPE instead of the 413.)
    expect(await declaredTooLarge(d.url, '/sandboxes', (17 << 20) + 100)).toEqual({ status: 413, code: 'PAYLOAD_TOO_LARGE' });
    // None of that created anything.
    expect((await call(d.url, 'GET', '/sandboxes')).body.sandboxes).toEqual([]);
    expect((await call(d.url, 'GET', '/health')).status).toBe(200);
  });

  it('refuses a duplicate name with 409 and keeps the first sandbox', async () => {
    const a = await call(d.url, 'POST', '/sandboxes', { name: 'twin' });
    const b = await call(d.url, 'POST', '/sandboxes', { name: 'twin' });
    expect(b.status).toBe(409);
    expect(b.body.error.code).toBe('ALREADY_EXISTS');
    expect((await call(d.url, 'GET', '/sandboxes/twin')).body.id).toBe(a.body.id);
    expect((await call(d.url, 'GET', '/sandboxes')).body.sandboxes).toHaveLength(1);
    await call(d.url, 'DELETE', `/sandboxes/${a.body.id}`);
  });

  it('leaves nothing behind when create fails in the runtime', async () => {
    // An impossible workdir (a file, not a directory) makes the task fail after the overlay is mounted.
    const r = await call(d.url, 'POST', '/sandboxes', { name: 'broken', workdir: '/etc/passwd' });
    expect(r.status).toBeGreaterThanOrEqual(400);
    expect(r.body.error.code).toBeDefined();
    expect((await call(d.url, 'GET', '/sandboxes')).body.sandboxes).toEqual([]);
    const fs = await import('node:fs');
    const tasks = `${d.dataDir}/runtime/oci/tasks`;
    expect(fs.existsSync(tasks) ? fs.readdirSync(tasks) : []).toEqual([]);
    expect(fs.readFileSync('/proc/mounts', 'utf8')).not.toContain(d.dataDir);
    // The writable layer's disk image was made and loop-mounted before the task failed: both gone.
    const loops = fs.readdirSync('/sys/block').filter((b) => b.startsWith('loop'))
      .map((b) => `/sys/block/${b}/loop/backing_file`).filter((f) => fs.existsSync(f))
      .map((f) => fs.readFileSync(f, 'utf8').trim()).filter((f) => f.startsWith(d.dataDir));
    expect(loops).toEqual([]);
  });

  it('keeps running sandboxes usable across a prismd restart, even a crash', async () => {
    const sb = (await call(d.url, 'POST', '/sandboxes', { name: 'survivor' })).body;
    await call(d.url, 'POST', `/sandboxes/${sb.id}/exec`, { command: 'echo before > /tmp/state' });
    d = await d.restart('SIGTERM');
    expect((await call(d.url, 'GET', `/sandboxes/${sb.id}`)).body.status).toBe('running');
    expect((await call(d.url, 'POST', `/sandboxes/${sb.id}/exec`, { command: 'cat /tmp/state' })).body.stdout).toBe('before\n');
    d = await d.restart('SIGKILL');
    expect((await call(d.url, 'GET', `/sandboxes/${sb.id}`)).body.status).toBe('running');
    expect((await call(d.url, 'POST', `/sandboxes/${sb.id}/exec`, { command: 'cat /tmp/state' })).body.stdout).toBe('before\n');
    expect((await call(d.url, 'DELETE', `/sandboxes/${sb.id}`)).status).toBe(204);
    expect(leftovers(sb.id, d.dataDir)).toEqual([]);
  });

  it('after a crash, keeps a sandbox whose processes died (restartable) and destroys orphaned tasks', async () => {
    const a = (await call(d.url, 'POST', '/sandboxes', { name: 'interrupted' })).body;
    const b = (await call(d.url, 'POST', '/sandboxes', { name: 'orphan' })).body;
    await call(d.url, 'POST', `/sandboxes/${a.id}/exec`, { command: 'echo kept > ~/data' });
    await d.stop('SIGKILL');
    // While prismd is down: a's processes die (as on a host reboot) and b is forgotten by the store.
    execFileSync('runc', ['--root', `${d.dataDir}/runtime/oci/runc`, 'kill', a.id, 'KILL']);
    const store = SqliteStore.open(`${d.dataDir}/store.db`);
    await store.commit([
      { op: 'delete', key: `/prism/sandboxes/${b.id}` },
      { op: 'delete', key: '/prism/names/orphan' },
    ]);
    await store.close();
    d = await startPrismd({ dataDir: d.dataDir, port: Number(d.api.split(':')[1]) });
    const got = (await call(d.url, 'GET', `/sandboxes/${a.id}`)).body;
    expect(got.status).toBe('stopped');
    expect(got.error.code).toBe('INTERRUPTED');
    expect(leftovers(a.id, d.dataDir).filter((l) => !l.startsWith('task dir'))).toEqual([]);
    expect(leftovers(b.id, d.dataDir)).toEqual([]);
    expect((await call(d.url, 'POST', `/sandboxes/${a.id}/start`)).body.status).toBe('running');
    expect((await call(d.url, 'POST', `/sandboxes/${a.id}/exec`, { command: 'cat ~/data' })).body.stdout).toBe('kept\n');
    await call(d.url, 'DELETE', `/sandboxes/${a.id}`);
  });

  it('stops a sandbox when its timeoutSec runs out', async () => {
    const sb = (await call(d.url, 'POST', '/sandboxes', { name: 'brief', timeoutSec: 1 })).body;
    await new Promise((r) => setTimeout(r, 2500));
    const got = (await call(d.url, 'GET', `/sandboxes/${sb.id}`)).body;
    expect(got.status).toBe('stopped');
    expect(got.error.code).toBe('TTL_EXPIRED');
    await call(d.url, 'DELETE', `/sandboxes/${sb.id}`);
  });
});

/** POSTs headers announcing `length` bytes of JSON and reads the answer before sending any of it. */
function declaredTooLarge(base: string, path: string, length: number): Promise<{ status: number; code: string }> {
  const u = new URL(base);
  return new Promise((resolve, reject) => {
    const req = request(
      { host: u.hostname, port: u.port, method: 'POST', path: `/api/v1${path}`, headers: { ...authHeaders(base), 'content-type': 'application/json', 'content-length': String(length) } },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (text += c));
        res.on('end', () => {
          req.destroy();
          resolve({ status: res.statusCode ?? 0, code: (JSON.parse(text) as { error: { code: string } }).error.code });
        });
      },
    );
    req.on('error', (e) => reject(e));
    req.flushHeaders();
  });
}
