import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Readable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { NodeInfo, Sandbox } from '../core/types.js';
import type { CliIo } from './context.js';
import { main } from './prismctl.js';

interface Recorded {
  method: string;
  path: string;
  headers: IncomingMessage['headers'];
  body: Record<string, unknown> | undefined;
}

const NOW = new Date().toISOString();
const SB: Sandbox = {
  id: 'sb-0123456789ab',
  name: 'calm-otter-01',
  status: 'running',
  node: 'node-a',
  image: 'python:3.12-slim',
  runtime: 'oci',
  cpus: 1,
  memoryMb: 512,
  pidsLimit: 256,
  diskMb: 2048,
  maxOpenFiles: 4096,
  env: {},
  workdir: '/workspace',
  timeoutSec: 0,
  createdAt: NOW,
};
const NODE: NodeInfo = {
  runtimeInfo: [{ name: 'oci', usable: true }],
  id: 'nd-1',
  name: 'node-a',
  address: '10.0.0.1:8008',
  labels: { zone: 'a' },
  capacity: { cpus: 8, memoryMb: 14745, maxSandboxes: 0 },
  reserved: { cpus: 1, memoryMb: 512, sandboxes: 1 },
  status: 'alive',
  version: '0.1.0',
  runtimes: ['oci', 'microvm'],
  defaultRuntime: 'oci',
  resources: { cpus: 8, memoryBytes: 16 * 2 ** 30, memoryUsedBytes: 3 * 2 ** 30, diskBytes: 2 ** 40, diskUsedBytes: 2 ** 39, load1: 0.5, cpuPercent: 12.5 },
  sandboxes: 1,
  startedAt: NOW,
  heartbeatAt: NOW,
};
const DEAD: NodeInfo = {
  ...NODE,
  id: 'nd-2',
  name: 'node-b',
  address: '10.0.0.2:8008',
  status: 'dead',
  labels: {},
  reserved: { cpus: 0, memoryMb: 0, sandboxes: 0 },
  sandboxes: 0,
  heartbeatAt: new Date(Date.now() - 90_000).toISOString(),
};

/** Minimal docs/api.md daemon: one sandbox, one node; exec answers with `execEvents` (stream) or their sum (plain). */
let server: Server;
let api = '';
let requests: Recorded[] = [];
let sandboxes: Sandbox[] = [];
let execEvents: Array<Record<string, unknown>> = [];
let nodes: NodeInfo[] = [];

beforeEach(async () => {
  requests = [];
  nodes = [NODE];
  sandboxes = [{ ...SB }];
  execEvents = [];
  server = createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const text = Buffer.concat(chunks).toString();
    const body = text ? (JSON.parse(text) as Record<string, unknown>) : undefined;
    const path = req.url!.replace(/^\/api\/v1/, '');
    requests.push({ method: req.method!, path, headers: req.headers, body });
    const send = (status: number, value?: unknown): void => {
      res.writeHead(status, { 'content-type': 'application/json' }).end(value === undefined ? undefined : JSON.stringify(value));
    };
    const key = `${req.method} ${path}`;
    if (key === 'GET /cluster/info') {
      const alive = nodes.filter((n) => n.status === 'alive').length;
      return send(200, {
        version: '0.1.0',
        node: 'nd-1',
        nodes: nodes.length,
        nodesAlive: alive,
        nodesDead: nodes.length - alive,
        leader: 'nd-1',
        leaderName: 'node-a',
        uptimeSec: 7200,
        sandboxes: { total: 1, byStatus: { running: 1 } },
      });
    }
    if (key === 'GET /nodes') return send(200, { nodes });
    const nm = /^\/nodes\/([^/]+)$/.exec(path);
    if (nm) {
      const n = nodes.find((x) => x.id === nm[1] || x.name === nm[1]);
      if (!n) return send(404, { error: { code: 'NOT_FOUND', message: `node '${nm[1]}' not found` } });
      if (req.method === 'GET') return send(200, n);
      if (n.status === 'alive') return send(412, { error: { code: 'FAILED_PRECONDITION', message: `node '${n.name}' is alive; stop its prismd first` } });
      nodes = nodes.filter((x) => x !== n);
      return void res.writeHead(204).end();
    }
    if (key === 'GET /sandboxes') return send(200, { sandboxes });
    if (key === 'POST /sandboxes') {
      const sb = { ...SB, ...body, id: 'sb-newnewnew000' } as Sandbox;
      sandboxes.push(sb);
      return send(201, sb);
    }
    const m = /^\/sandboxes\/([^/]+)(?:\/(\w+))?$/.exec(path);
    const sb = m && sandboxes.find((s) => s.id === m[1] || s.name === m[1]);
    if (!m || !sb) return send(404, { error: { code: 'NOT_FOUND', message: `sandbox '${m?.[1]}' not found` } });
    if (req.method === 'GET' && !m[2]) return send(200, sb);
    if (req.method === 'DELETE') return ((sandboxes = sandboxes.filter((s) => s !== sb)), res.writeHead(204).end());
    if (m[2] === 'stop') return send(200, { ...sb, status: 'stopped' });
    if (m[2] === 'logs') {
      return send(200, { executions: [{ id: 'ex-1', cmd: ['echo', 'hi'], startedAt: NOW, truncated: false, exitCode: 0, timedOut: false, oomKilled: false, durationMs: 3, stdout: 'hi\n', stderr: '', encoding: 'utf8' }] });
    }
    if (m[2] === 'exec') {
      const exit = execEvents.find((e) => e.type === 'exit')!;
      if (!req.headers.accept?.includes('application/x-ndjson')) {
        const join = (t: string): string => execEvents.filter((e) => e.type === t).map((e) => e.data).join('');
        return send(200, { id: 'ex-2', ...exit, type: undefined, stdout: join('stdout'), stderr: join('stderr'), encoding: 'utf8' });
      }
      res.writeHead(200, { 'content-type': 'application/x-ndjson' });
      for (const e of execEvents) res.write(`${JSON.stringify(e)}\n`);
      return void res.end();
    }
    send(404, { error: { code: 'NOT_FOUND', message: 'no route' } });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  api = `127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterEach(async () => {
  server.closeAllConnections();
  await new Promise((r) => server.close(r));
});

interface Run {
  code: number;
  stdout: string;
  stdoutBytes: Buffer;
  stderr: string;
}

async function run(args: string[], opts: { stdin?: string; tty?: boolean; stdoutTty?: boolean; env?: Record<string, string> } = {}): Promise<Run> {
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  const stdin = Object.assign(Readable.from(opts.stdin === undefined ? [] : [Buffer.from(opts.stdin)]), { isTTY: opts.tty ?? false });
  const io: CliIo = {
    stdout: { write: (c) => out.push(Buffer.from(c)), isTTY: opts.stdoutTty ?? false } as CliIo['stdout'],
    stderr: { write: (c) => err.push(Buffer.from(c)) },
    stdin,
    env: opts.env ?? { PRISM_API: api },
  };
  const code = await main(['node', 'prismctl', ...args], io);
  const stdoutBytes = Buffer.concat(out);
  return { code, stdout: stdoutBytes.toString(), stdoutBytes, stderr: Buffer.concat(err).toString() };
}

const exitEvent = (exitCode: number, over: Record<string, unknown> = {}) => ({ type: 'exit', exitCode, timedOut: false, oomKilled: false, durationMs: 5, ...over });

describe('prismctl sandbox exec', () => {
  it('streams raw output bytes and exits with the command exit code', async () => {
    execEvents = [
      { type: 'stdout', data: '42\n' },
      { type: 'stderr', data: 'warning\n' },
      { type: 'stdout', data: Buffer.from([0xff, 0x0a]).toString('base64'), encoding: 'base64' },
      exitEvent(3),
    ];
    const r = await run(['sandbox', 'exec', 'calm-otter-01', '--', 'python3', '-c', 'print(42)']);
    expect(r.code).toBe(3);
    expect(r.stdoutBytes).toEqual(Buffer.concat([Buffer.from('42\n'), Buffer.from([0xff, 0x0a])]));
    expect(r.stderr).toBe('warning\n');
    const exec = requests.find((q) => q.path.endsWith('/exec'))!;
    expect(exec.body).toEqual({ cmd: ['python3', '-c', 'print(42)'] });
    expect(exec.headers.accept).toContain('application/x-ndjson');
  });

  it('sends --command as a shell string with env, cwd and timeout', async () => {
    execEvents = [exitEvent(0)];
    const r = await run(['sb', 'exec', SB.id, '--command', "python3 -c 'print(42)'", '--env', 'A=1', '--env', 'B=x=y', '--cwd', '/tmp', '--timeout', '9']);
    expect(r.code).toBe(0);
    expect(requests.find((q) => q.path.endsWith('/exec'))!.body).toEqual({
      command: "python3 -c 'print(42)'",
      env: { A: '1', B: 'x=y' },
      cwd: '/tmp',
      timeoutSec: 9,
    });
  });

  it('forwards piped stdin with -i, and not from a terminal', async () => {
    execEvents = [exitEvent(0)];
    await run(['sandbox', 'exec', SB.name, '-i', '--', 'cat'], { stdin: 'piped data\n' });
    expect(requests.at(-1)!.body).toMatchObject({ stdin: Buffer.from('piped data\n').toString('base64'), stdinEncoding: 'base64' });
    const r = await run(['sandbox', 'exec', SB.name, '-i', '--', 'cat'], { stdin: 'x', tty: true });
    expect(requests.at(-1)!.body).not.toHaveProperty('stdin');
    expect(r.stderr).toContain('stdin is a terminal');
  });

  it('says so on stderr when the command timed out or was OOM-killed', async () => {
    execEvents = [exitEvent(137, { timedOut: true, signal: 'SIGKILL' })];
    let r = await run(['sandbox', 'exec', SB.name, '--command', 'sleep 100']);
    expect(r.code).toBe(137);
    expect(r.stderr).toMatch(/timed out/);
    execEvents = [exitEvent(-1, { oomKilled: true, signal: 'SIGKILL' })];
    r = await run(['sandbox', 'exec', SB.name, '--command', 'eat-memory']);
    expect(r.code).toBe(137);
    expect(r.stderr).toMatch(/out of memory/);
  });

  it('prints the result as JSON with -o json and still exits with its code', async () => {
    execEvents = [{ type: 'stdout', data: 'ok\n' }, exitEvent(4)];
    const r = await run(['-o', 'json', 'sandbox', 'exec', SB.name, '--command', 'x']);
    expect(r.code).toBe(4);
    expect(JSON.parse(r.stdout)).toMatchObject({ exitCode: 4, stdout: 'ok\n', stderr: '', encoding: 'utf8' });
  });

  it('is a usage error (exit 2) without a command or with two', async () => {
    let r = await run(['sandbox', 'exec', SB.name]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^error: no command/);
    r = await run(['sandbox', 'exec', SB.name, '--command', 'ls', '--', 'ls']);
    expect(r.code).toBe(2);
    expect(requests.filter((q) => q.path.endsWith('/exec'))).toHaveLength(0);
  });
});

describe('prismctl output', () => {
  it('-o json prints what the API returned', async () => {
    const ls = await run(['-o', 'json', 'sandbox', 'ls']);
    expect(ls.code).toBe(0);
    expect(JSON.parse(ls.stdout)).toEqual({ sandboxes: [SB] });
    const info = await run(['sb', 'info', SB.name, '--output', 'json']);
    expect(JSON.parse(info.stdout)).toEqual(SB);
    const nodes = await run(['node', 'ls', '-o', 'json']);
    expect(JSON.parse(nodes.stdout)).toEqual({ nodes: [NODE] });
  });

  it('prints aligned tables with human sizes and ages', async () => {
    const r = await run(['sandbox', 'ls']);
    const [header, row] = r.stdout.trimEnd().split('\n');
    expect(header).toMatch(/^ID\s+NAME\s+STATUS\s+NODE\s+IMAGE\s+RUNTIME\s+CPUS\s+MEMORY\s+AGE$/);
    expect(row).toMatch(/^sb-0123456789ab\s+calm-otter-01\s+running\s+node-a\s+python:3\.12-slim\s+oci\s+1\s+512 MiB\s+\d+s$/);
    expect(row!.indexOf('calm-otter-01')).toBe(header!.indexOf('NAME'));
    const nodes = await run(['node', 'ls']);
    expect(nodes.stdout).toContain('3 GiB/16 GiB');
  });

  it('create sends the flags and prints a summary with the id', async () => {
    const r = await run(['sandbox', 'create', '--name', 'web', '--image', 'alpine', '--runtime', 'microvm', '--cpus', '0.5', '--memory', '256', '--env', 'K=V', '--workdir', '/w', '--timeout', '60', '--node-selector', 'zone=a', '--node-selector', 'gpu=yes']);
    expect(r.code).toBe(0);
    expect(requests.at(-1)!.body).toEqual({ name: 'web', image: 'alpine', runtime: 'microvm', cpus: 0.5, memoryMb: 256, env: { K: 'V' }, workdir: '/w', timeoutSec: 60, nodeSelector: { zone: 'a', gpu: 'yes' } });
    expect(r.stdout).toMatch(/ID:\s+sb-newnewnew000/);
  });

  it('logs, stop and rm', async () => {
    expect((await run(['sandbox', 'logs', SB.name])).stdout).toMatch(/\$ echo hi\nhi\n$/);
    expect((await run(['sandbox', 'stop', SB.name])).stdout).toContain('stopped');
    const rm = await run(['sandbox', 'delete', SB.name, 'ghost']);
    expect(rm.code).toBe(1);
    expect(rm.stdout).toContain(`deleted ${SB.name}`);
    expect(rm.stderr).toBe("error: sandbox 'ghost' not found (NOT_FOUND)\n");
    expect(sandboxes).toHaveLength(0);
  });
});

describe('prismctl cluster commands', () => {
  const cells = (line: string): string[] => line.split(/\s{3,}/);

  it('node ls shows usage, reservations, labels and last heartbeat per node', async () => {
    nodes = [DEAD, NODE];
    const r = await run(['node', 'ls']);
    expect(r.code).toBe(0);
    const [header, a, b] = r.stdout.trimEnd().split('\n');
    expect(cells(header!)).toEqual(['NAME', 'STATUS', 'ADDRESS', 'CPU', 'MEMORY', 'DISK', 'RESERVED', 'SANDBOXES', 'LABELS', 'SEEN']);
    // Sorted by name, whatever order the API answered in.
    expect(cells(a!)).toEqual(['node-a', 'alive', '10.0.0.1:8008', '12.5%/8', '3 GiB/16 GiB', '512 GiB/1 TiB', '1/32 cpu, 512 MiB/14 GiB', '1', 'zone=a', expect.stringMatching(/^\d+s ago$/)]);
    expect(cells(b!)).toEqual(['node-b', 'dead', '10.0.0.2:8008', '-/8', '3 GiB/16 GiB', '512 GiB/1 TiB', '0/32 cpu, 0 B/14 GiB', '0', '-', '1m ago']);
  });

  it('node info shows capacity, reservations, labels, runtimes and the leader role', async () => {
    const r = await run(['node', 'info', 'node-a']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^Status:\s+alive, leader \(runs the scheduler\)$/m);
    expect(r.stdout).toMatch(/^Labels:\s+zone=a$/m);
    expect(r.stdout).toMatch(/^CPU:\s+8 cores, 12\.5% busy, load 0\.50$/m);
    expect(r.stdout).toMatch(/^Capacity:\s+8 CPUs, 14 GiB, no sandbox limit$/m);
    expect(r.stdout).toMatch(/^Reserved:\s+1 CPUs \(3%\), 512 MiB \(3%\), 1 sandboxes$/m);
    // A node record without factors (an older version) shows the defaults placement applies to it.
    expect(r.stdout).toMatch(/^Overcommit:\s+CPU 4x, memory 1x: up to 32 CPUs and 14 GiB reserved$/m);
    expect(r.stdout).toMatch(/^ {2}oci:\s+usable$/m);
    const json = await run(['node', 'info', 'node-a', '-o', 'json']);
    expect(JSON.parse(json.stdout)).toEqual(NODE);
  });

  it('info shows nodes alive and dead, the leader by name and id, this node and sandboxes by status', async () => {
    nodes = [NODE, DEAD];
    const r = await run(['info']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^This node:\s+node-a \(nd-1\)$/m);
    expect(r.stdout).toMatch(/^Leader:\s+node-a \(nd-1\)$/m);
    expect(r.stdout).toMatch(/^Nodes:\s+2 \(1 alive, 1 dead: node-b\)$/m);
    expect(r.stdout).toMatch(/^Sandboxes:\s+1 \(running 1\)$/m);
    expect(r.stdout).toMatch(/^Uptime:\s+2h$/m);
    expect(JSON.parse((await run(['info', '-o', 'json'])).stdout)).toMatchObject({ nodesAlive: 1, nodesDead: 1, leaderName: 'node-a' });
  });

  it('node top prints one snapshot with the cluster line and the leader marked', async () => {
    nodes = [NODE, DEAD];
    const r = await run(['node', 'top']);
    expect(r.code).toBe(0);
    const lines = r.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^nodes 1\/2 alive \(1 dead\)\s+leader node-a\s+sandboxes 1 \(running 1\)\s+\d\d:\d\d:\d\d$/);
    expect(cells(lines[1]!)).toEqual(['NAME', 'STATUS', 'CPU%', 'LOAD', 'MEMORY', 'MEM%', 'DISK', 'DISK%', 'SANDBOXES', 'RES-CPU', 'RES-MEM']);
    expect(cells(lines[2]!)).toEqual(['node-a*', 'alive', '12.5', '0.50', '3 GiB/16 GiB', '19%', '512 GiB/1 TiB', '50%', '1', '1/32', '512 MiB/14 GiB']);
    expect(cells(lines[3]!).slice(0, 4)).toEqual(['node-b', 'dead 1m', '-', '-']);
    expect(r.stdout).not.toContain('\x1b');
  });

  it('node top --watch appends snapshots to a pipe, redraws a terminal, and prints JSON lines', async () => {
    let r = await run(['node', 'top', '--watch', '0.01', '--count', '3']);
    expect(r.code).toBe(0);
    expect(r.stdout.match(/^nodes 1\/1 alive/gm)).toHaveLength(3);
    expect(r.stdout).not.toContain('\x1b');
    expect(requests.filter((q) => q.path === '/nodes')).toHaveLength(3);
    r = await run(['node', 'top', '-w', '0.01', '-n', '2'], { stdoutTty: true });
    expect(r.stdout.split('\x1b[H\x1b[2J')).toHaveLength(3);
    r = await run(['-o', 'json', 'node', 'top', '--watch', '0.01', '--count', '2']);
    const docs = r.stdout.trimEnd().split('\n').map((l) => JSON.parse(l) as { cluster: { leader: string }; nodes: NodeInfo[] });
    expect(docs).toHaveLength(2);
    expect(docs[0]).toEqual({ cluster: expect.objectContaining({ leader: 'nd-1' }), nodes: [NODE] });
  });

  it('node top --watch keeps going when the daemon is briefly unreachable', async () => {
    const port = (server.address() as AddressInfo).port;
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
    server = createServer().listen(0);
    const r = await run(['--api', `127.0.0.1:${port}`, 'node', 'top', '--watch', '0.01', '--count', '2'], { env: {} });
    expect(r.code).toBe(0);
    expect(r.stdout.match(/^error: cannot reach the Prism API .*\(UNAVAILABLE\); retrying in 0\.01s$/gm)).toHaveLength(2);
    expect((await run(['--api', `127.0.0.1:${port}`, 'node', 'top'], { env: {} })).code).toBe(1);
  });

  it('node top rejects a zero or non-numeric interval as a usage error', async () => {
    expect((await run(['node', 'top', '--watch', '0'])).code).toBe(2);
    expect((await run(['node', 'top', '--watch', 'soon'])).code).toBe(2);
  });

  it('node rm deletes dead nodes through DELETE /nodes/:id and reports the refusals', async () => {
    nodes = [NODE, DEAD];
    const r = await run(['node', 'rm', 'node-b', 'node-a', 'ghost']);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('removed node node-b\n');
    expect(r.stderr).toBe("error: node 'node-a' is alive; stop its prismd first (FAILED_PRECONDITION)\nerror: node 'ghost' not found (NOT_FOUND)\n");
    expect(requests.filter((q) => q.method === 'DELETE').map((q) => q.path)).toEqual(['/nodes/node-b', '/nodes/node-a', '/nodes/ghost']);
    expect(nodes).toEqual([NODE]);
    nodes = [NODE, DEAD];
    const json = await run(['-o', 'json', 'node', 'remove', 'nd-2']);
    expect(json.code).toBe(0);
    expect(JSON.parse(json.stdout)).toEqual({ removed: ['nd-2'] });
  });
});

describe('prismctl errors', () => {
  it('prints the API error and code and exits 1, without a stack trace', async () => {
    const r = await run(['sandbox', 'info', 'nope']);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe("error: sandbox 'nope' not found (NOT_FOUND)\n");
    expect(r.stdout).toBe('');
  });

  it('reports an unreachable daemon as UNAVAILABLE, naming the address', async () => {
    const port = (server.address() as AddressInfo).port;
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
    server = createServer().listen(0);
    const r = await run(['--api', `http://127.0.0.1:${port}`, 'sandbox', 'ls']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`^error: cannot reach the Prism API at http://127\\.0\\.0\\.1:${port}: .*ECONNREFUSED.* \\(UNAVAILABLE\\)\\n`));
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });

  it('uses --token, else PRISM_TOKEN', async () => {
    await run(['sandbox', 'ls'], { env: { PRISM_API: api, PRISM_TOKEN: 'from-env' } });
    expect(requests.at(-1)!.headers.authorization).toBe('Bearer from-env');
    await run(['--api', api, '--token', 'flag', 'sandbox', 'ls'], { env: {} });
    expect(requests.at(-1)!.headers.authorization).toBe('Bearer flag');
  });

  it('exits 2 for usage errors', async () => {
    expect((await run(['frobnicate'])).code).toBe(2);
    expect((await run(['-o', 'yaml', 'sandbox', 'ls'])).code).toBe(2);
    expect((await run(['sandbox', 'create', '--memory', 'lots'])).code).toBe(2);
    expect((await run(['sandbox', 'create', '--env', 'NOEQUALS'])).code).toBe(2);
    expect((await run(['sandbox', 'create', '--node-selector', 'zone'])).stderr).toContain('--node-selector expects KEY=VALUE');
    expect((await run(['--help'])).code).toBe(0);
  });
});
