/**
 * The interactive terminal end to end: `GET /sandboxes/:id/pty` over a WebSocket on a real prismd
 * (oci runtime, the Debian base image), the SDK's `sandbox.pty()`, and `prismctl sandbox shell`.
 */
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { Prism } from '../../src/sdk/index.js';
import { REPO_ROOT, call, integrationSkipReason, startPrismd, type Prismd } from './prismd-harness.js';

const skip = integrationSkipReason();
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

async function waitFor(what: string, cond: () => boolean | Promise<boolean>, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

/** A raw client of the endpoint: terminal bytes collected as text, control messages as objects. */
class Client {
  out = '';
  messages: { type: string; [k: string]: unknown }[] = [];
  closed?: { code: number };
  constructor(readonly ws: WebSocket) {
    ws.on('message', (data, isBinary) => {
      if (isBinary) this.out += (data as Buffer).toString('utf8');
      else this.messages.push(JSON.parse((data as Buffer).toString('utf8')));
    });
    ws.on('close', (code) => (this.closed = { code }));
  }
  type(s: string) { this.ws.send(Buffer.from(s), { binary: true }); }
  control(msg: object) { this.ws.send(JSON.stringify(msg)); }
  /** Fails with the output as it was at the deadline. */
  expectOut(re: RegExp, what: string) {
    return waitFor(what, () => re.test(this.out)).catch((e: Error) => {
      throw new Error(`${e.message}; output so far: ${JSON.stringify(this.out.slice(-300))}, messages ${JSON.stringify(this.messages)}`);
    });
  }
}

describe.skipIf(!!skip)('interactive terminal over a WebSocket', () => {
  let d: Prismd;
  const url = (sb: string, query = '') => `ws://${d.api}/api/v1/sandboxes/${sb}/pty${query}`;
  const auth = () => ({ authorization: `Bearer ${d.token}` });

  /** Opens the socket; resolves with the client, or with the HTTP status of a refused upgrade. */
  function open(sb: string, query = '', headers: Record<string, string> = auth()): Promise<Client | number> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url(sb, query), { headers });
      const c = new Client(ws);
      ws.once('open', () => resolve(c));
      ws.once('unexpected-response', (req, res) => {
        req.destroy();
        resolve(res.statusCode ?? 0);
      });
      ws.once('error', reject);
    });
  }
  const openOk = async (sb: string, query = '') => {
    const c = await open(sb, query);
    if (typeof c === 'number') throw new Error(`upgrade refused with ${c}`);
    return c;
  };
  /** Processes in the sandbox whose command line matches `re`, counted by a second command. */
  const countProcs = async (sb: string, pattern: string) => {
    const r = await call(d.url, 'POST', `/sandboxes/${sb}/exec`, {
      command: `for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline 2>/dev/null; echo; done | grep -c '${pattern}' || true`,
    });
    return Number(String(r.body.stdout).trim());
  };

  beforeAll(async () => {
    d = await startPrismd();
    const r = await call(d.url, 'POST', '/sandboxes', { name: 'term' });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
  });
  afterAll(async () => {
    await d?.dispose();
  });

  it('refuses before the upgrade: no or a wrong token (401), unknown sandbox (404), bad size or cmd (400), plain GET (400)', async () => {
    expect(await open('term', '', {})).toBe(401);
    expect(await open('term', '', { authorization: 'Bearer prism_nope_nope' })).toBe(401);
    expect(await open('nope')).toBe(404);
    expect(await open('term', '?cols=0')).toBe(400);
    expect(await open('term', `?cmd=${encodeURIComponent('"sh"')}`)).toBe(400);
    const plain = await call(d.url, 'GET', '/sandboxes/term/pty');
    expect(plain.status).toBe(400);
    expect(plain.body.error.code).toBe('INVALID_ARGUMENT');
  });

  it('runs the login shell as the sandbox user: echo, resize, Ctrl-C, signal message, exit code', async () => {
    const c = await openOk('term', '?cols=80&rows=24');
    c.type('echo "WHO""AMI=$(id -un) $0 $((6*7))"; stty size\n');
    await c.expectOut(/WHOAMI=sandbox \S*bash 42/, 'the login shell');
    await c.expectOut(/[\r\n]24 80\r\n/, 'the initial size');
    c.control({ type: 'resize', cols: 132, rows: 43 });
    c.type('stty size\n');
    await c.expectOut(/[\r\n]43 132\r\n/, 'the new size');
    c.type('echo "ST""ART-$((1+2))"; sleep 100\n');
    await c.expectOut(/START-3/, 'sleep started');
    await waitFor('sleep 100 running', async () => (await countProcs('term', '^sleep 100')) === 1);
    c.type('\x03');
    c.type('echo "ALI""VE-$((2+3))"\n');
    await c.expectOut(/ALIVE-5/, 'the shell after Ctrl-C');
    c.type('echo "ST""ART-$((3+4))"; sleep 100\n');
    await c.expectOut(/START-7/, 'sleep started again');
    await waitFor('sleep 100 running again', async () => (await countProcs('term', '^sleep 100')) === 1);
    c.control({ type: 'signal', signal: 'SIGINT' });
    c.control({ type: 'signal', signal: 'SIGNOPE' });
    c.control({ type: 'bogus' });
    c.type('echo "AGA""IN-$((4+5))"\n');
    await c.expectOut(/AGAIN-9/, 'the shell after a SIGINT message');
    expect(c.messages.filter((m) => m.type === 'error').map((m) => (m.error as { code: string }).code)).toEqual(['INVALID_ARGUMENT', 'INVALID_ARGUMENT']);
    c.type('exit 3\n');
    await waitFor('the close', () => c.closed !== undefined);
    expect(c.messages.at(-1)).toEqual({ type: 'exit', exitCode: 3, signal: null });
    expect(c.closed!.code).toBe(1000);
  });

  it('closing the socket kills the command and everything it started', async () => {
    const c = await openOk('term', `?cmd=${encodeURIComponent(JSON.stringify(['/bin/sh', '-c', 'sleep 4242 & sleep 4343; echo never']))}`);
    await waitFor('both sleeps', async () => (await countProcs('term', '^sleep 4[23]4[23]')) === 2);
    c.ws.close();
    await waitFor('no sleep left', async () => (await countProcs('term', '^sleep 4[23]4[23]')) === 0, 10_000);
  });

  it('the SDK: pty(), write, resize, kill, wait for the exit, and the API error for a stopped sandbox', async () => {
    const prism = new Prism({ url: d.url, token: d.token });
    const sb = await prism.sandboxes.get('term');
    let out = '';
    const shell = await sb.pty({ cols: 100, rows: 40, cmd: ['/bin/bash', '--norc'], onData: (b) => (out += Buffer.from(b).toString()) });
    shell.write('stty size; echo "SD""K-$((5*5))"\n');
    await waitFor('sdk output', () => /[\r\n]40 100\r\n/.test(out) && /SDK-25/.test(out));
    shell.resize(90, 20);
    shell.write('stty size; exit 4\n');
    expect(await shell.wait()).toEqual({ exitCode: 4 });
    expect(out).toContain('20 90');
    const killed = await sb.pty({ cmd: ['sleep', '300'], onData: () => undefined });
    killed.kill();
    expect(await killed.wait()).toEqual({ exitCode: 137, signal: 'SIGKILL' });
    const stopped = await prism.sandboxes.create({ name: 'term-stopped' });
    await stopped.stop();
    await expect(stopped.pty({ onData: () => undefined })).rejects.toMatchObject({ code: 'FAILED_PRECONDITION', status: 412 });
  });

  it('prismctl sandbox shell with piped stdin: runs the lines, then ^D ends the shell; exits with its code', async () => {
    const run = (args: string[], input: string) =>
      new Promise<{ code: number | null; out: string; err: string }>((resolve) => {
        const p = spawn(process.execPath, [join(REPO_ROOT, 'bin', 'prismctl.js'), '--api', d.api, 'sandbox', 'shell', 'term', ...args], {
          env: { ...process.env, PRISM_TOKEN: d.token, PRISM_CONFIG: '/nonexistent/prismctl.json' },
        });
        let out = '';
        let err = '';
        p.stdout.on('data', (b: Buffer) => (out += b.toString()));
        p.stderr.on('data', (b: Buffer) => (err += b.toString()));
        p.once('close', (code) => resolve({ code, out, err }));
        p.stdin.end(input);
      });
    const piped = await run([], 'echo "CL""I-$((6*7))"\nexit 5\n');
    expect(piped.out).toContain('CLI-42');
    expect(piped.code, piped.err).toBe(5);
    // No exit in the input: the EOF is typed as ^D and the shell ends with status 0.
    const eof = await run([], 'echo "E""OF-$((1+1))"\n');
    expect(eof.out).toContain('EOF-2');
    expect(eof.code, eof.err).toBe(0);
    const argv = await run(['--', '/bin/sh', '-c', 'test -t 0 && echo "T""TY"; exit 9'], '');
    expect(argv.out).toContain('TTY');
    expect(argv.code, argv.err).toBe(9);
  });
});
