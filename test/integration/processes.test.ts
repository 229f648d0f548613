import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { authHeaders, call, integrationSkipReason, leftovers, startPrismd, type Prismd } from './prismd-harness.js';

const skip = integrationSkipReason();
if (skip) console.warn(`skipping background process integration tests: ${skip}`);

/** Waits (at most 10 s: a loaded host starts python slowly) until a process with `marker` runs on the host. */
async function started(marker: string): Promise<void> {
  for (let i = 0; i < 200 && hostProcesses(marker).length === 0; i++) await new Promise((res) => setTimeout(res, 50));
}

/** Host processes whose command line carries `marker` (the sandbox's commands are host processes on oci). */
function hostProcesses(marker: string): string[] {
  const out = execFileSync('ps', ['-eo', 'pid,args'], { encoding: 'utf8' });
  return out.split('\n').filter((l) => l.includes(marker) && !l.includes('ps -eo'));
}

describe.skipIf(!!skip)('background processes over HTTP with the oci runtime', () => {
  let d: Prismd;
  let sb: { id: string };
  const start = (body: object, id = sb.id) => call(d.url, 'POST', `/sandboxes/${id}/exec`, { ...body, background: true });
  const proc = (pid: string, suffix = '', method = 'GET', body?: object, id = sb.id) =>
    call(d.url, method, `/sandboxes/${id}/processes/${pid}${suffix}`, body);

  beforeAll(async () => {
    d = await startPrismd({ extraArgs: ['--max-processes', '3', '--process-buffer-mb', '0.0625'] });
    const r = await call(d.url, 'POST', '/sandboxes', { name: 'procs' });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    sb = r.body;
  });
  afterAll(async () => {
    await d?.dispose();
  });

  it('outlives the request that started it; output is read incrementally by offset; wait gives the exit', async () => {
    const t0 = Date.now();
    const r = await start({ command: 'for i in 1 2 3; do echo $i; sleep 0.5; done; echo done >&2; exit 4' });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    expect(Date.now() - t0).toBeLessThan(1000); // the loop alone takes 1.5 s
    expect(r.body).toMatchObject({ status: 'running', cmd: ['/bin/sh', '-c', expect.any(String)], sandboxId: sb.id });
    const pid = r.body.id;
    // Two reads while it runs, the second from where the first ended: each gets new lines, none twice.
    const readFrom = async (offset: number) => {
      for (let i = 0; i < 100; i++) {
        const o = await call(d.url, 'GET', `/sandboxes/${sb.id}/processes/${pid}/output?stdoutOffset=${offset}&stderrOffset=0`);
        if (o.body.stdout !== '') return o.body;
        await new Promise((res) => setTimeout(res, 20));
      }
      throw new Error('no output');
    };
    const first = await readFrom(0);
    expect(first).toMatchObject({ stdoutDropped: 0, encoding: 'utf8', process: { status: 'running' } });
    expect(first.stdout.startsWith('1\n')).toBe(true);
    expect(first.stdoutOffset).toBe(first.stdout.length);
    const second = await readFrom(first.stdoutOffset);
    expect(second.stdoutOffset).toBe(first.stdoutOffset + second.stdout.length);
    expect(['1\n2\n3\n', '1\n2\n', '1\n']).toContain(first.stdout + second.stdout);
    const waited = await proc(pid, '/wait?timeoutSec=10', 'POST');
    expect(waited.body).toMatchObject({ status: 'exited', exitCode: 4, timedOut: false, stdoutBytes: 6, stderrBytes: 5 });
    const rest = await call(d.url, 'GET', `/sandboxes/${sb.id}/processes/${pid}/output?stdoutOffset=${second.stdoutOffset}`);
    expect(first.stdout + second.stdout + rest.body.stdout).toBe('1\n2\n3\n');
    expect(rest.body).toMatchObject({ stderr: 'done\n', stdoutOffset: 6, process: { status: 'exited', exitCode: 4 } });
    const listed = await call(d.url, 'GET', `/sandboxes/${sb.id}/processes`);
    expect(listed.body.processes.map((p: { id: string }) => p.id)).toContain(pid);
    // Its exec record is in the sandbox's logs under the same id.
    const logs = await call(d.url, 'GET', `/sandboxes/${sb.id}/logs`);
    expect(logs.body.executions.find((e: { id: string }) => e.id === pid)).toMatchObject({ exitCode: 4, stdout: '1\n2\n3\n' });
    expect((await proc(pid, '', 'DELETE')).status).toBe(204);
    expect((await proc(pid)).status).toBe(404);
  });

  it('takes stdin line by line and ends when it is closed', async () => {
    const script = 'import sys\nfor line in sys.stdin:\n    print(line.strip().upper(), flush=True)\nprint("bye")';
    const r = await start({ cmd: ['python3', '-c', script] });
    const pid = r.body.id;
    expect((await proc(pid, '/stdin', 'POST', { data: 'hello\n' })).body).toMatchObject({ stdinOpen: true });
    let out = '';
    for (let i = 0; i < 50 && !out.includes('HELLO'); i++) {
      out = (await proc(pid, '/output')).body.stdout;
      await new Promise((res) => setTimeout(res, 50));
    }
    expect(out).toBe('HELLO\n');
    await proc(pid, '/stdin', 'POST', { data: Buffer.from('wörld\n').toString('base64'), encoding: 'base64', close: true });
    const done = await proc(pid, '/wait?timeoutSec=10', 'POST');
    expect(done.body).toMatchObject({ status: 'exited', exitCode: 0, stdinOpen: false });
    expect((await proc(pid, '/output')).body.stdout).toBe('HELLO\nWÖRLD\nbye\n');
    expect((await proc(pid, '/stdin', 'POST', { data: 'x' })).status).toBe(412);
  });

  it('delivers SIGTERM and reports the signal', async () => {
    const r = await start({ cmd: ['sleep', '100'] });
    const pid = r.body.id;
    const sent = await proc(pid, '/signal', 'POST', { signal: 'SIGTERM' });
    expect(sent.status).toBe(200);
    const done = await proc(pid, '/wait?timeoutSec=10', 'POST');
    expect(done.body).toMatchObject({ status: 'exited', signal: 'SIGTERM', exitCode: 143 });
    expect((await proc(pid, '/signal', 'POST', { signal: 'SIGBOGUS' })).status).toBe(400);
  });

  it('answers a wait that runs out with status running', async () => {
    const r = await start({ cmd: ['sleep', '100'] });
    const t0 = Date.now();
    const w = await proc(r.body.id, '/wait?timeoutSec=0.3', 'POST');
    expect(Date.now() - t0).toBeGreaterThanOrEqual(250);
    expect(w.body).toMatchObject({ status: 'running' });
    await proc(r.body.id, '', 'DELETE');
  });

  it('follows output as NDJSON until the exit', async () => {
    const r = await start({ command: 'echo a; sleep 0.4; echo b; sleep 0.4; echo c >&2' });
    const res = await fetch(`${d.url}/api/v1/sandboxes/${sb.id}/processes/${r.body.id}/output?follow=true`, {
      headers: { ...authHeaders(d.url), accept: 'application/x-ndjson' },
    });
    expect(res.headers.get('content-type')).toContain('application/x-ndjson');
    const reader = res.body!.getReader();
    const first = new TextDecoder().decode((await reader.read()).value);
    expect(JSON.parse(first.split('\n')[0]!)).toMatchObject({ type: 'stdout', data: 'a\n', offset: 0 });
    let text = first;
    for (let c = await reader.read(); !c.done; c = await reader.read()) text += new TextDecoder().decode(c.value);
    const events = text.trim().split('\n').map((l) => JSON.parse(l));
    expect(events.filter((e) => e.type === 'stdout').map((e) => e.data).join('')).toBe('a\nb\n');
    expect(events.filter((e) => e.type === 'stderr').map((e) => e.data).join('')).toBe('c\n');
    expect(events.at(-1)).toMatchObject({ type: 'exit', status: 'exited', exitCode: 0, stdoutOffset: 4, stderrOffset: 2 });
    // follow without NDJSON is refused rather than silently answering once.
    expect((await call(d.url, 'GET', `/sandboxes/${sb.id}/processes/${r.body.id}/output?follow=true`)).status).toBe(400);
  });

  it('refuses more running processes than --max-processes with RESOURCE_EXHAUSTED', async () => {
    const running = (await call(d.url, 'GET', `/sandboxes/${sb.id}/processes`)).body.processes.filter((p: { status: string }) => p.status === 'running');
    expect(running).toEqual([]);
    const pids: string[] = [];
    for (let i = 0; i < 3; i++) pids.push((await start({ cmd: ['sleep', '100'] })).body.id);
    const over = await start({ cmd: ['sleep', '100'] });
    expect(over.status).toBe(429);
    expect(over.body.error.code).toBe('RESOURCE_EXHAUSTED');
    for (const pid of pids) expect((await proc(pid, '', 'DELETE')).status).toBe(204);
  });

  it('keeps the last --process-buffer-mb of output and says how much was dropped', async () => {
    const r = await start({ cmd: ['python3', '-c', 'import sys; sys.stdout.write("x" * 200000 + "END")'] });
    await proc(r.body.id, '/wait?timeoutSec=10', 'POST');
    const out = await proc(r.body.id, '/output');
    expect(out.body).toMatchObject({ stdoutOffset: 200003, stdoutDropped: 200003 - 65536 });
    expect(out.body.stdout).toHaveLength(65536);
    expect(out.body.stdout.endsWith('xEND')).toBe(true);
  });

  it('ends them with the sandbox: stop says INTERRUPTED, delete leaves no process behind', async () => {
    const other = (await call(d.url, 'POST', '/sandboxes', { name: 'procs-gone' })).body;
    const marker = `prism-bg-${Date.now()}`;
    const a = await start({ cmd: ['python3', '-c', 'import time; time.sleep(100)', marker] }, other.id);
    expect(a.status).toBe(201);
    const waiting = proc(a.body.id, '/wait?timeoutSec=20', 'POST', undefined, other.id);
    await started(marker);
    expect(hostProcesses(marker)).toHaveLength(1);
    expect((await call(d.url, 'POST', `/sandboxes/${other.id}/stop`)).status).toBe(200);
    expect((await waiting).body).toMatchObject({ status: 'exited', error: { code: 'INTERRUPTED' } });
    expect(hostProcesses(marker)).toEqual([]);
    await call(d.url, 'POST', `/sandboxes/${other.id}/start`);
    const b = await start({ cmd: ['python3', '-c', 'import time; time.sleep(100)', marker] }, other.id);
    await started(marker);
    expect(hostProcesses(marker)).toHaveLength(1);
    expect((await call(d.url, 'DELETE', `/sandboxes/${other.id}`)).status).toBe(204);
    expect(hostProcesses(marker)).toEqual([]);
    expect((await proc(b.body.id, '', 'GET', undefined, other.id)).status).toBe(404);
    expect(leftovers(other.id, d.dataDir)).toEqual([]);
  });

  it('are gone after a prismd restart (their exec connections closed with it)', async () => {
    const marker = `prism-bg-restart-${Date.now()}`;
    const a = await start({ cmd: ['python3', '-c', 'import time; time.sleep(100)', marker] });
    await started(marker);
    expect(hostProcesses(marker)).toHaveLength(1);
    d = await d.restart();
    for (let i = 0; i < 40 && hostProcesses(marker).length > 0; i++) await new Promise((res) => setTimeout(res, 50));
    expect(hostProcesses(marker)).toEqual([]);
    expect((await proc(a.body.id)).status).toBe(404);
    expect((await call(d.url, 'GET', `/sandboxes/${sb.id}`)).body.status).toBe('running');
  });
});

const dockerHost = process.env.DOCKER_HOST ?? 'unix:///var/lib/prism-test/docker/docker.sock';
const dockerSkip = skip ?? (existsSync(dockerHost.replace(/^unix:\/\//, '')) || !dockerHost.startsWith('unix://') ? undefined : `no Docker engine at ${dockerHost}`);

// The driver paths are the same exec as for foreground commands; this checks the docker relay carries
// stdin, a signal other than SIGKILL and the exit code of a background process.
describe.skipIf(!!dockerSkip)('background processes on the docker runtime', () => {
  let d: Prismd;
  afterAll(async () => {
    await d?.dispose();
  });

  it('takes stdin and delivers SIGTERM to a trap', async () => {
    d = await startPrismd({ extraArgs: ['--docker-host', dockerHost] });
    const c = await call(d.url, 'POST', '/sandboxes', { runtime: 'docker' });
    expect(c.status, JSON.stringify(c.body)).toBe(201);
    const script = 'trap "echo got TERM; exit 3" TERM; read line; echo "read $line"; while :; do sleep 0.1; done';
    const r = await call(d.url, 'POST', `/sandboxes/${c.body.id}/exec`, { cmd: ['sh', '-c', script], background: true });
    expect(r.status).toBe(201);
    const base = `/sandboxes/${c.body.id}/processes/${r.body.id}`;
    await call(d.url, 'POST', `${base}/stdin`, { data: 'hello\n' });
    let out = '';
    for (let i = 0; i < 100 && !out.includes('read hello'); i++) {
      out = (await call(d.url, 'GET', `${base}/output`)).body.stdout;
      await new Promise((res) => setTimeout(res, 50));
    }
    expect(out).toBe('read hello\n');
    await call(d.url, 'POST', `${base}/signal`, { signal: 'SIGTERM' });
    expect((await call(d.url, 'POST', `${base}/wait?timeoutSec=20`)).body).toMatchObject({ status: 'exited', exitCode: 3 });
    expect((await call(d.url, 'GET', `${base}/output`)).body.stdout).toBe('read hello\ngot TERM\n');
  });
});
