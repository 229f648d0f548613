import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { call, integrationSkipReason, leftovers, startPrismd, type Prismd, authHeaders } from './prismd-harness.js';

const skip = integrationSkipReason();
if (skip) console.warn(`skipping sandbox API integration tests: ${skip}`);

describe.skipIf(!!skip)('sandbox API over HTTP with the oci runtime', () => {
  let d: Prismd;
  let sb: { id: string; name: string };
  const exec = (body: object, id = sb.id) => call(d.url, 'POST', `/sandboxes/${id}/exec`, body);

  beforeAll(async () => {
    d = await startPrismd();
    const r = await call(d.url, 'POST', '/sandboxes', { name: 'main' });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    sb = r.body;
  });
  afterAll(async () => {
    await d?.dispose();
  });

  it('creates a running sandbox from the default image and runs python in it', async () => {
    const got = await call(d.url, 'GET', `/sandboxes/${sb.id}`);
    expect(got.body).toMatchObject({ id: sb.id, name: 'main', status: 'running', runtime: 'oci', cpus: 1, memoryMb: 512 });
    expect(got.body.imageDigest).toMatch(/^sha256:[0-9a-f]{64}$/);
    const r = await exec({ cmd: ['python3', '-c', 'print(6*7)'] });
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ exitCode: 0, stdout: '42\n', stderr: '', timedOut: false, oomKilled: false, encoding: 'utf8' });
  });

  it('finds a sandbox by exact name but not by prefix', async () => {
    expect((await call(d.url, 'GET', '/sandboxes/main')).body.id).toBe(sb.id);
    expect((await call(d.url, 'GET', `/sandboxes/${sb.id.slice(0, 6)}`)).status).toBe(404);
  });

  it('propagates exit codes and keeps stdout and stderr apart', async () => {
    const r = await exec({ command: 'echo out; echo err >&2; exit 7' });
    expect(r.body).toMatchObject({ exitCode: 7, stdout: 'out\n', stderr: 'err\n' });
  });

  it('returns 10 MiB of output complete', async () => {
    const r = await exec({ cmd: ['python3', '-c', 'import sys; sys.stdout.write("x" * (10 << 20)); sys.stderr.write("done")'] });
    expect(r.body.exitCode).toBe(0);
    expect(r.body.stdout.length).toBe(10 << 20);
    expect(r.body.stderr).toBe('done');
  });

  it('returns binary output byte-exact as base64', async () => {
    const r = await exec({ cmd: ['python3', '-c', 'import sys; sys.stdout.buffer.write(bytes(range(256)) * 3)'] });
    expect(r.body.encoding).toBe('base64');
    const bytes = Buffer.from(r.body.stdout, 'base64');
    const want = Buffer.concat([0, 1, 2].map(() => Buffer.from([...Array(256).keys()])));
    expect(bytes.equals(want)).toBe(true);
  });

  it('keeps UTF-8 intact, also when streamed', async () => {
    const text = 'héllo wörld ✓ 日本語 🎉\n'.repeat(1500);
    const plain = await exec({ cmd: ['python3', '-c', `import sys; sys.stdout.write(${JSON.stringify(text)})`] });
    expect(plain.body.stdout).toBe(text);
    const r = await fetch(`${d.url}/api/v1/sandboxes/${sb.id}/exec`, {
      method: 'POST',
      headers: { ...authHeaders(d.url), 'content-type': 'application/json', accept: 'application/x-ndjson' },
      body: JSON.stringify({ cmd: ['python3', '-c', `import sys; sys.stdout.write(${JSON.stringify(text)}); sys.stderr.write("e"); sys.exit(3)`] }),
    });
    expect(r.headers.get('content-type')).toContain('application/x-ndjson');
    const events = (await r.text()).trim().split('\n').map((l) => JSON.parse(l));
    const out = events.filter((e) => e.type === 'stdout').map((e) => (e.encoding === 'base64' ? Buffer.from(e.data, 'base64').toString() : e.data)).join('');
    expect(out).toBe(text);
    expect(events.filter((e) => e.type === 'stderr').map((e) => e.data).join('')).toBe('e');
    expect(events.at(-1)).toMatchObject({ type: 'exit', exitCode: 3, timedOut: false });
  });

  it('streams output as it is produced, not at the end', async () => {
    const r = await fetch(`${d.url}/api/v1/sandboxes/${sb.id}/exec`, {
      method: 'POST',
      headers: { ...authHeaders(d.url), 'content-type': 'application/json', accept: 'application/x-ndjson' },
      body: JSON.stringify({ command: 'echo first; sleep 2; echo second' }),
    });
    const reader = r.body!.getReader();
    const t0 = Date.now();
    const first = await reader.read();
    const firstAt = Date.now() - t0;
    expect(new TextDecoder().decode(first.value)).toContain('first');
    while (!(await reader.read()).done) {
      /* drain */
    }
    // The first line arrived long before the command's 2 s sleep ended.
    expect(firstAt).toBeLessThan(1500);
  });

  it('applies env, cwd and stdin', async () => {
    const r = await exec({ command: 'echo "$FOO $BAR"; pwd; cat', env: { FOO: 'foo', BAR: 'b a r' }, cwd: '/tmp', stdin: 'from stdin' });
    expect(r.body.stdout).toBe('foo b a r\n/tmp\nfrom stdin');
    const bin = await exec({ cmd: ['sha256sum'], stdin: Buffer.from([0, 255, 1, 254]).toString('base64'), stdinEncoding: 'base64' });
    expect(bin.body.stdout.split(' ')[0]).toBe(createHash('sha256').update(Buffer.from([0, 255, 1, 254])).digest('hex'));
  });

  it('keeps files between execs and across stop/start', async () => {
    await exec({ command: 'echo persisted > ~/note.txt' });
    expect((await exec({ command: 'cat ~/note.txt' })).body.stdout).toBe('persisted\n');
    expect((await call(d.url, 'POST', `/sandboxes/${sb.id}/stop`)).body.status).toBe('stopped');
    const refused = await exec({ command: 'true' });
    expect(refused.status).toBe(412);
    expect(refused.body.error.code).toBe('FAILED_PRECONDITION');
    expect((await call(d.url, 'POST', `/sandboxes/${sb.id}/start`)).body.status).toBe('running');
    expect((await exec({ command: 'cat ~/note.txt' })).body.stdout).toBe('persisted\n');
  });

  it('kills a command that exceeds its timeout, with everything it started', async () => {
    const t0 = Date.now();
    const r = await exec({ command: 'sleep 300 & sleep 300; echo never', timeoutSec: 1 });
    expect(r.body.timedOut).toBe(true);
    expect(r.body.exitCode).not.toBe(0);
    expect(r.body.stdout).toBe('');
    expect(Date.now() - t0).toBeLessThan(10_000);
    const ps = await exec({ command: 'for p in /proc/[0-9]*; do cat $p/cmdline | tr "\\0" " "; echo; done' });
    expect(ps.body.stdout).not.toContain('sleep 300');
  });

  it('runs a missing program as a failed command, not a server error', async () => {
    const r = await exec({ cmd: ['/no/such/program'] });
    expect(r.status).toBe(200);
    expect(r.body.exitCode).toBeGreaterThanOrEqual(126);
  });

  it('has no network but loopback', async () => {
    const r = await exec({ command: 'ls /sys/class/net' });
    expect(r.body.stdout.trim()).toBe('lo');
    const host = d.url.replace('http://', '').split(':');
    const conn = await exec({
      cmd: ['python3', '-c', `import socket\ntry:\n socket.create_connection(("${host[0]}", ${host[1]}), timeout=2); print("connected")\nexcept OSError as e: print("refused", e.errno)`],
    });
    expect(conn.body.stdout).toMatch(/^refused/);
  });

  it('records executions for logs', async () => {
    const r = await call(d.url, 'GET', `/sandboxes/${sb.id}/logs`);
    expect(r.status).toBe(200);
    const recs = r.body.executions as { cmd: string[]; exitCode: number; stdout: string }[];
    expect(recs.length).toBeGreaterThan(5);
    expect(recs.some((e) => e.cmd.join(' ') === 'python3 -c print(6*7)' && e.stdout === '42\n' && e.exitCode === 0)).toBe(true);
  });

  it('samples usage: GET /sandboxes/:id/metrics, windowed, validated', async () => {
    await exec({ cmd: ['sh', '-c', 'head -c 8000000 /dev/urandom > /tmp/m.bin'] });
    const r = await call(d.url, 'GET', `/sandboxes/${sb.id}/metrics`);
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(r.body.intervalSec).toBe(5);
    const last = r.body.metrics.at(-1);
    expect(last).toMatchObject({ cpuCount: 1, memTotal: 512 * 2 ** 20, diskTotal: expect.any(Number), pids: expect.any(Number) });
    expect(Date.now() - Date.parse(last.timestamp)).toBeLessThan(6000); // sampled on the read when stale
    expect(last.memUsed).toBeGreaterThan(0);
    expect(last.diskTotal).toBeGreaterThan(1900 * 2 ** 20);
    // The write shows in the next sample (the newest may predate it by up to one interval).
    let disk = last.diskUsed;
    for (const deadline = Date.now() + 15_000; disk <= 8_000_000 && Date.now() < deadline; await new Promise((res) => setTimeout(res, 500))) {
      disk = (await call(d.url, 'GET', `/sandboxes/${sb.id}/metrics`)).body.metrics.at(-1).diskUsed;
    }
    expect(disk).toBeGreaterThan(8_000_000);
    const future = await call(d.url, 'GET', `/sandboxes/${sb.id}/metrics?start=${new Date(Date.now() + 60_000).toISOString()}`);
    expect(future.body.metrics).toEqual([]);
    expect((await call(d.url, 'GET', `/sandboxes/${sb.id}/metrics?start=yesterday`)).body.error.code).toBe('INVALID_ARGUMENT');
    expect((await call(d.url, 'GET', `/sandboxes/${sb.id}/metrics?start=20&end=10`)).status).toBe(400);
    expect((await call(d.url, 'GET', '/sandboxes/ghost/metrics')).status).toBe(404);
  });

  it('reports real node figures and cluster info', async () => {
    const nodes = (await call(d.url, 'GET', '/nodes')).body.nodes;
    expect(nodes).toHaveLength(1);
    const n = (await call(d.url, 'GET', `/nodes/${nodes[0].id}`)).body;
    expect(n.resources.cpus).toBeGreaterThan(0);
    expect(n.resources.memoryBytes).toBeGreaterThan(n.resources.memoryUsedBytes);
    expect(n.resources.diskBytes).toBeGreaterThan(n.resources.diskUsedBytes);
    expect(n.sandboxes).toBeGreaterThanOrEqual(1);
    expect(n.runtimes).toContain('oci');
    const info = (await call(d.url, 'GET', '/cluster/info')).body;
    expect(info).toMatchObject({ nodes: 1, nodesAlive: 1, leader: nodes[0].id });
    expect(info.sandboxes.byStatus.running).toBeGreaterThanOrEqual(1);
  });

  it("runs commands as the base image's unprivileged user by default, and as root only when asked", async () => {
    const plain = (await call(d.url, 'POST', '/sandboxes', {})).body;
    expect(plain).toMatchObject({ user: '1000:1000', workdir: '/home/sandbox' });
    const r = await call(d.url, 'POST', `/sandboxes/${plain.id}/exec`, { command: 'id -un; id -u; id -g; echo $HOME; pwd; grep CapEff /proc/self/status; touch /etc/x' });
    expect(r.body.stdout).toBe('sandbox\n1000\n1000\n/home/sandbox\n/home/sandbox\nCapEff:\t0000000000000000\n');
    expect(r.body.exitCode).not.toBe(0);
    await call(d.url, 'DELETE', `/sandboxes/${plain.id}`);
    const root = (await call(d.url, 'POST', '/sandboxes', { user: 'root' })).body;
    expect((await call(d.url, 'POST', `/sandboxes/${root.id}/exec`, { command: 'id -u' })).body.stdout).toBe('0\n');
    await call(d.url, 'DELETE', `/sandboxes/${root.id}`);
  });

  it('runs commands as a non-root user when asked, without capabilities', async () => {
    const nobody = (await call(d.url, 'POST', '/sandboxes', { name: 'nobody', user: 'nobody' })).body;
    expect(nobody.user).toBe('nobody');
    const r = await call(d.url, 'POST', `/sandboxes/${nobody.id}/exec`, { command: 'id -u; id -g; echo $HOME; grep CapEff /proc/self/status; touch /root/x' });
    expect(r.body.stdout).toBe('65534\n65534\n/nonexistent\nCapEff:\t0000000000000000\n');
    expect(r.body.exitCode).not.toBe(0);
    await call(d.url, 'DELETE', `/sandboxes/${nobody.id}`);
    const numeric = (await call(d.url, 'POST', '/sandboxes', { user: '1234:4321' })).body;
    expect((await call(d.url, 'POST', `/sandboxes/${numeric.id}/exec`, { command: 'id -u; id -g' })).body.stdout).toBe('1234\n4321\n');
    await call(d.url, 'DELETE', `/sandboxes/${numeric.id}`);
    const ghost = await call(d.url, 'POST', '/sandboxes', { name: 'ghost', user: 'ghost' });
    expect(ghost.status).toBe(400);
    expect(ghost.body.error.message).toContain('ghost');
    expect((await call(d.url, 'GET', '/sandboxes/ghost')).status).toBe(404);
  });

  it('deletes a sandbox and leaves nothing behind', async () => {
    const c = await call(d.url, 'POST', '/sandboxes', { name: 'doomed' });
    expect(c.status).toBe(201);
    await call(d.url, 'POST', `/sandboxes/${c.body.id}/exec`, { command: 'sleep 1000 >/dev/null 2>&1 &' });
    expect((await call(d.url, 'DELETE', `/sandboxes/${c.body.id}`)).status).toBe(204);
    expect((await call(d.url, 'GET', `/sandboxes/${c.body.id}`)).status).toBe(404);
    expect(leftovers(c.body.id, d.dataDir)).toEqual([]);
    // The name is free again.
    const again = await call(d.url, 'POST', '/sandboxes', { name: 'doomed' });
    expect(again.status).toBe(201);
    await call(d.url, 'DELETE', `/sandboxes/${again.body.id}`);
  });
});
