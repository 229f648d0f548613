import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Sandbox } from '../core/types.js';
import { Prism, PrismApiError } from './index.js';

/** What the fake's exec route answers with; tests set it per case. */
type ExecReply =
  | { kind: 'json'; body: unknown }
  | { kind: 'ndjson'; chunks: Uint8Array[]; beforeChunk?: (i: number) => Promise<void> };

interface Recorded {
  method: string;
  url: string;
  headers: IncomingMessage['headers'];
  body: unknown;
}

/** A daemon stand-in speaking docs/api.md, with sandboxes kept in memory. */
class FakeApi {
  server: Server = createServer((req, res) => void this.#handle(req, res));
  requests: Recorded[] = [];
  sandboxes = new Map<string, Sandbox>();
  exec: (body: Record<string, unknown>) => ExecReply = () => ({ kind: 'json', body: execBody('') });
  /** Resolves when a streamed exec answer's connection closed before the answer was complete. */
  clientLeft!: Promise<void>;
  #left: () => void = () => undefined;
  url = '';

  async start(): Promise<void> {
    this.clientLeft = new Promise((r) => (this.#left = r));
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise((r) => this.server.close(r));
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const text = Buffer.concat(chunks).toString('utf8');
    const body = text ? (JSON.parse(text) as Record<string, unknown>) : undefined;
    this.requests.push({ method: req.method!, url: req.url!, headers: req.headers, body });
    const path = req.url!.replace(/^\/api\/v1/, '');
    const m = /^\/sandboxes\/([^/]+)(?:\/(\w+))?$/.exec(path);
    const send = (status: number, value?: unknown): void => {
      res.writeHead(status, value === undefined ? {} : { 'content-type': 'application/json' });
      res.end(value === undefined ? undefined : JSON.stringify(value));
    };
    if (req.method === 'GET' && path === '/health') return send(200, { status: 'ok', node: 'n1', version: '0.1.0' });
    if (req.method === 'GET' && path === '/boom') return send(502, undefined);
    if (req.method === 'POST' && path === '/sandboxes') {
      const sb = sandbox({ ...(body as Partial<Sandbox>) });
      if ([...this.sandboxes.values()].some((s) => s.name === sb.name)) {
        return send(409, { error: { code: 'ALREADY_EXISTS', message: `sandbox '${sb.name}' already exists` } });
      }
      this.sandboxes.set(sb.id, sb);
      return send(201, sb);
    }
    if (req.method === 'GET' && path === '/sandboxes') return send(200, { sandboxes: [...this.sandboxes.values()] });
    if (!m) return send(404, { error: { code: 'NOT_FOUND', message: `no route ${path}` } });
    const ref = decodeURIComponent(m[1]!);
    const sb = this.sandboxes.get(ref) ?? [...this.sandboxes.values()].find((s) => s.name === ref);
    if (!sb) return send(404, { error: { code: 'NOT_FOUND', message: `sandbox '${ref}' not found` } });
    const action = `${req.method} ${m[2] ?? ''}`;
    if (action === 'GET ') return send(200, sb);
    if (action === 'DELETE ') return (this.sandboxes.delete(sb.id), send(204));
    if (action === 'POST stop') return send(200, Object.assign(sb, { status: 'stopped' }));
    if (action === 'POST start') return send(200, Object.assign(sb, { status: 'running' }));
    if (action === 'GET logs') {
      return send(200, {
        executions: [{ ...execBody('aGk=', 'base64'), cmd: ['echo', 'hi'], startedAt: sb.createdAt, truncated: false }],
      });
    }
    if (action === 'POST exec') {
      const reply = this.exec(body!);
      if (reply.kind === 'json' || req.headers.accept?.includes('ndjson') !== true) {
        return send(200, reply.kind === 'json' ? reply.body : execBody(''));
      }
      res.writeHead(200, { 'content-type': 'application/x-ndjson' });
      res.once('close', () => !res.writableFinished && this.#left());
      for (const [i, chunk] of reply.chunks.entries()) {
        await reply.beforeChunk?.(i);
        res.write(chunk);
        // Separate writes in time so the client really sees them as separate reads.
        await new Promise((r) => setTimeout(r, 1));
      }
      return void res.end();
    }
    send(404, { error: { code: 'NOT_FOUND', message: `no route ${path}` } });
  }
}

function sandbox(over: Partial<Sandbox> = {}): Sandbox {
  return {
    id: `sb-${Math.random().toString(16).slice(2, 14).padEnd(12, '0')}`,
    name: 'calm-otter-01',
    status: 'running',
    node: 'n1',
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
    createdAt: new Date().toISOString(),
    ...over,
  };
}

function execBody(stdout: string, encoding: 'utf8' | 'base64' = 'utf8', over: Record<string, unknown> = {}) {
  return { id: 'ex-000000000001', exitCode: 0, timedOut: false, oomKilled: false, durationMs: 12, stdout, stderr: '', encoding, ...over };
}

const bytes = (s: string): Uint8Array => new TextEncoder().encode(s);
const ndjson = (events: unknown[]): Uint8Array => bytes(events.map((e) => JSON.stringify(e)).join('\n') + '\n');

/** Cuts `data` into pieces of `size` bytes: lines and multi-byte characters end up split mid-way. */
function split(data: Uint8Array, size: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let i = 0; i < data.length; i += size) out.push(data.slice(i, i + size));
  return out;
}

let fake: FakeApi;
let prism: Prism;

beforeEach(async () => {
  fake = new FakeApi();
  await fake.start();
  prism = new Prism({ url: fake.url, token: 's3cret' });
});

afterEach(async () => {
  await fake.stop();
});

describe('Prism client', () => {
  it('sends the bearer token and accepts host:port without a scheme', async () => {
    const p = new Prism({ url: fake.url.replace('http://', '') + '/', token: 't0k' });
    expect(p.url).toBe(fake.url);
    expect(await p.health()).toEqual({ status: 'ok', node: 'n1', version: '0.1.0' });
    expect(fake.requests[0]!.headers.authorization).toBe('Bearer t0k');
    expect(fake.requests[0]!.url).toBe('/api/v1/health');
  });

  it('sends no Authorization header without a token', async () => {
    await new Prism({ url: fake.url }).health();
    expect(fake.requests[0]!.headers.authorization).toBeUndefined();
  });

  it('creates, gets by name and id, lists, stops, starts and deletes sandboxes', async () => {
    const sb = await prism.sandboxes.create({ name: 'web', memoryMb: 256, env: { A: '1' } });
    expect(fake.requests[0]!.body).toEqual({ name: 'web', memoryMb: 256, env: { A: '1' } });
    expect(sb.name).toBe('web');
    expect(sb.status).toBe('running');
    expect(sb.info.memoryMb).toBe(256);
    expect(JSON.parse(JSON.stringify(sb))).toEqual(sb.info);

    expect((await prism.sandboxes.get('web')).id).toBe(sb.id);
    expect((await prism.sandboxes.get(sb.id)).name).toBe('web');
    const list = await prism.sandboxes.list();
    expect(list.map((h) => h.id)).toEqual([sb.id]);

    expect((await sb.stop()).status).toBe('stopped');
    expect((await sb.start()).status).toBe('running');
    await sb.delete();
    expect(fake.requests.at(-1)).toMatchObject({ method: 'DELETE', url: `/api/v1/sandboxes/${sb.id}` });
    await expect(sb.refresh()).rejects.toMatchObject({ code: 'NOT_FOUND', status: 404 });
  });

  it('maps API errors to PrismApiError with the stable code', async () => {
    await prism.sandboxes.create({ name: 'dup' });
    const err = await prism.sandboxes.create({ name: 'dup' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PrismApiError);
    expect(err).toMatchObject({ code: 'ALREADY_EXISTS', status: 409, retryable: false, message: "sandbox 'dup' already exists" });

    await expect(prism.sandboxes.get('nope')).rejects.toMatchObject({ code: 'NOT_FOUND', message: "sandbox 'nope' not found" });
  });

  it('maps a non-JSON error answer by its HTTP status', async () => {
    const f: typeof fetch = (input) => fetch(String(input).replace('/health', '/boom'));
    await expect(new Prism({ url: fake.url, fetch: f }).health()).rejects.toMatchObject({ code: 'INTERNAL', status: 502 });
  });

  it('reports a refused connection as UNAVAILABLE naming the URL', async () => {
    const closed = new FakeApi();
    await closed.start();
    const url = closed.url;
    await closed.stop();
    const err = await new Prism({ url }).health().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PrismApiError);
    expect(err).toMatchObject({ code: 'UNAVAILABLE', status: 0, retryable: true });
    expect((err as Error).message).toContain(url);
    expect((err as Error).message).toContain('ECONNREFUSED');
  });
});

describe('SandboxHandle.exec', () => {
  it('sends a string as a shell command and an array as argv', async () => {
    const sb = await prism.sandboxes.create();
    await sb.exec("python3 -c 'print(42)'", { env: { X: 'y' }, cwd: '/tmp', timeoutSec: 5 });
    await sb.exec(['python3', '-c', 'print(42)']);
    const execs = fake.requests.filter((r) => r.url.endsWith('/exec'));
    expect(execs[0]!.body).toEqual({ command: "python3 -c 'print(42)'", env: { X: 'y' }, cwd: '/tmp', timeoutSec: 5 });
    expect(execs[1]!.body).toEqual({ cmd: ['python3', '-c', 'print(42)'] });
    expect(execs[0]!.headers.accept).toBe('application/json');
  });

  it('decodes utf8 output into its bytes', async () => {
    fake.exec = () => ({ kind: 'json', body: execBody('héllo ✓\n', 'utf8', { stderr: 'warn\n', exitCode: 3 }) });
    const r = await (await prism.sandboxes.create()).exec('x');
    expect(r.stdout).toEqual(bytes('héllo ✓\n'));
    expect(r.stderr).toEqual(bytes('warn\n'));
    expect(r.text()).toBe('héllo ✓\n');
    expect(r).toMatchObject({ id: 'ex-000000000001', exitCode: 3, timedOut: false, oomKilled: false, durationMs: 12 });
  });

  it('decodes base64 output into the exact bytes, stdout and stderr alike', async () => {
    const raw = new Uint8Array([0x00, 0xff, 0xfe, 0x80, 0x0a, 0xc3]);
    const b64 = Buffer.from(raw).toString('base64');
    fake.exec = () => ({ kind: 'json', body: execBody(b64, 'base64', { stderr: b64, signal: 'SIGKILL', exitCode: 137 }) });
    const r = await (await prism.sandboxes.create()).exec(['cat', '/bin/true']);
    expect(r.stdout).toEqual(raw);
    expect(r.stderr).toEqual(raw);
    expect(r.signal).toBe('SIGKILL');
  });

  it('sends stdin as utf8 text or base64 bytes', async () => {
    const sb = await prism.sandboxes.create();
    await sb.exec('cat', { stdin: 'héllo' });
    await sb.exec('cat', { stdin: new Uint8Array([0, 255, 10]) });
    const execs = fake.requests.filter((r) => r.url.endsWith('/exec')).map((r) => r.body);
    expect(execs[0]).toMatchObject({ stdin: 'héllo', stdinEncoding: 'utf8' });
    expect(execs[1]).toMatchObject({ stdin: 'AP8K', stdinEncoding: 'base64' });
  });

  it('streams NDJSON split at awkward byte boundaries, in order, and assembles the result', async () => {
    const events = [
      { type: 'stdout', data: 'héllo ✓ ' },
      { type: 'stderr', data: 'wärn\n' },
      { type: 'stdout', data: Buffer.from([0xff, 0x00, 0xc3]).toString('base64'), encoding: 'base64' },
      { type: 'stdout', data: '日本語\n' },
      { type: 'exit', exitCode: 7, timedOut: false, oomKilled: false, durationMs: 31 },
    ];
    for (const size of [1, 3, 7, 1000]) {
      fake.exec = () => ({ kind: 'ndjson', chunks: split(ndjson(events), size) });
      const seen: Array<[string, Uint8Array]> = [];
      const r = await (await prism.sandboxes.create({ name: `s${size}` })).exec('x', {
        onStdout: (c) => seen.push(['out', c]),
        onStderr: (c) => seen.push(['err', c]),
      });
      expect(fake.requests.at(-1)!.headers.accept).toContain('application/x-ndjson');
      expect(seen).toEqual([
        ['out', bytes('héllo ✓ ')],
        ['err', bytes('wärn\n')],
        ['out', new Uint8Array([0xff, 0x00, 0xc3])],
        ['out', bytes('日本語\n')],
      ]);
      const out = Buffer.concat([Buffer.from('héllo ✓ '), Buffer.from([0xff, 0x00, 0xc3]), Buffer.from('日本語\n')]);
      expect(Buffer.from(r.stdout)).toEqual(out);
      expect(r.stderr).toEqual(bytes('wärn\n'));
      expect(r).toMatchObject({ exitCode: 7, timedOut: false, oomKilled: false, durationMs: 31 });
      expect(r.id).toBeUndefined();
    }
  });

  it('calls the callbacks live, before the command has finished', async () => {
    let delivered!: () => void;
    const firstDelivered = new Promise<void>((r) => (delivered = r));
    fake.exec = () => ({
      kind: 'ndjson',
      chunks: [ndjson([{ type: 'stdout', data: 'first\n' }]), ndjson([{ type: 'exit', exitCode: 0, timedOut: true, oomKilled: false, durationMs: 1 }])],
      // The server holds the exit back until the client has seen the first chunk: buffering would deadlock.
      beforeChunk: async (i) => (i === 1 ? firstDelivered : undefined),
    });
    const r = await (await prism.sandboxes.create()).exec('x', { onStdout: () => delivered() });
    expect(r.text()).toBe('first\n');
    expect(r.timedOut).toBe(true);
  });

  it('fails with UNAVAILABLE, not retryable, when the stream ends without an exit event', async () => {
    fake.exec = () => ({ kind: 'ndjson', chunks: [ndjson([{ type: 'stdout', data: 'partial' }])] });
    const sb = await prism.sandboxes.create();
    await expect(sb.exec('x', { onStdout: () => {} })).rejects.toMatchObject({ code: 'UNAVAILABLE', retryable: false });
  });

  it('sends timeoutMs as the daemon-enforced timeoutSec, and refuses both at once', async () => {
    const sb = await prism.sandboxes.create();
    await sb.exec('x', { timeoutMs: 1500 });
    expect(fake.requests.at(-1)!.body).toMatchObject({ command: 'x', timeoutSec: 1.5 });
    const before = fake.requests.length;
    await expect(sb.exec('x', { timeoutMs: 1, timeoutSec: 1 })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    expect(fake.requests.length).toBe(before);
  });

  it('aborts a streaming exec with its AbortSignal, dropping the connection (the daemon then kills the command)', async () => {
    let hold: (() => void) | undefined;
    fake.exec = () => ({
      kind: 'ndjson',
      chunks: [ndjson([{ type: 'stdout', data: 'started\n' }]), ndjson([{ type: 'exit', exitCode: 0, timedOut: false, oomKilled: false, durationMs: 1 }])],
      beforeChunk: (i) => (i === 1 ? new Promise<void>((r) => (hold = r)) : Promise.resolve()),
    });
    const sb = await prism.sandboxes.create();
    const ac = new AbortController();
    const run = sb.exec('x', { signal: ac.signal, onStdout: () => ac.abort() });
    await expect(run).rejects.toMatchObject({ name: 'AbortError' });
    await fake.clientLeft;
    hold?.();
  });

  it('yields exec output as an async iterator, the exit last', async () => {
    fake.exec = () => ({
      kind: 'ndjson',
      chunks: split(ndjson([
        { type: 'stdout', data: 'a' },
        { type: 'stderr', data: Buffer.from([0xff]).toString('base64'), encoding: 'base64' },
        { type: 'exit', id: 'ex-1', exitCode: 3, timedOut: true, oomKilled: false, diskFull: false, limitExceeded: 'TIMEOUT', durationMs: 5 },
      ]), 5),
    });
    const sb = await prism.sandboxes.create();
    const seen: unknown[] = [];
    for await (const ev of sb.execStream(['x'], { timeoutMs: 10 })) seen.push(ev);
    expect(fake.requests.at(-1)!.headers.accept).toContain('application/x-ndjson');
    expect(seen).toEqual([
      { type: 'stdout', data: bytes('a') },
      { type: 'stderr', data: new Uint8Array([0xff]) },
      { type: 'exit', exit: { id: 'ex-1', exitCode: 3, timedOut: true, oomKilled: false, diskFull: false, limitExceeded: 'TIMEOUT', durationMs: 5 } },
    ]);
  });

  it('drops the exec stream when the loop is left early', async () => {
    let hold: (() => void) | undefined;
    fake.exec = () => ({
      kind: 'ndjson',
      chunks: [ndjson([{ type: 'stdout', data: 'one' }]), ndjson([{ type: 'exit', exitCode: 0, timedOut: false, oomKilled: false, durationMs: 1 }])],
      beforeChunk: (i) => (i === 1 ? new Promise<void>((r) => (hold = r)) : Promise.resolve()),
    });
    const sb = await prism.sandboxes.create();
    for await (const ev of sb.execStream('x')) {
      expect(ev).toEqual({ type: 'stdout', data: bytes('one') });
      break;
    }
    await fake.clientLeft;
    hold?.();
  });

  it('maps an error answer to the streaming form too', async () => {
    const sb = await prism.sandboxes.create();
    await sb.delete();
    await expect(sb.exec('x', { onStdout: () => {} })).rejects.toMatchObject({ code: 'NOT_FOUND', status: 404 });
  });
});

describe('SandboxHandle.logs', () => {
  it('returns past executions with decoded output', async () => {
    const logs = await (await prism.sandboxes.create()).logs();
    expect(logs).toHaveLength(1);
    expect(logs[0]).toMatchObject({ id: 'ex-000000000001', cmd: ['echo', 'hi'], truncated: false, exitCode: 0 });
    expect(logs[0]!.text()).toBe('hi');
  });
});
