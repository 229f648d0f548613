import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { AgentProcess } from '../agent-process.js';
import { AgentConnection } from './agent-connection.js';
import { decodeFields, decodeStart, encodeExit, encodeFrame, FrameParser, FrameType, OUTPUT_WINDOW, PROTOCOL_VERSION, UNLIMITED_OUTPUT } from './agent-protocol.js';

/**
 * A fake guest agent on a unix socket: answers hello, mount and volume mounts, and runs pretend commands:
 * `echo <words>`, `cat` (stdin to stdout until C), `big <n>` (n bytes), `flood <n>` (n bytes, then
 * until K), `sleep` (until K). It records
 * the windows (`W`) it is given but sends regardless, so the host's own buffering shows.
 */
class FakeAgent {
  server!: Server;
  socks: Socket[] = [];
  mounted: string[] = [];
  volumes: string[][] = [];
  helloDelayMs = 0;
  /** What follows the state in the hello: the version (an older agent) and live channels. */
  version = PROTOCOL_VERSION;
  liveChannels = '';
  windows: [number, bigint][] = [];
  starts = 0;

  async listen(path: string): Promise<void> {
    this.server = createServer((s) => this.serve(s));
    await new Promise<void>((r) => this.server.listen(path, r));
  }

  dropAll(): void {
    for (const s of this.socks) s.destroy();
  }

  private serve(sock: Socket): void {
    this.socks.push(sock);
    const parser = new FrameParser();
    const stdinOf = new Map<number, boolean>();
    const send = (t: Parameters<typeof encodeFrame>[0], ch: number, p?: Buffer) => !sock.destroyed && sock.write(encodeFrame(t, ch, p));
    const exit = (ch: number, code: number, sig = 0) => send(FrameType.Exit, ch, encodeExit({ exitCode: code, signal: sig }));
    sock.on('error', () => undefined);
    sock.on('data', (chunk: Buffer) => {
      for (const f of parser.push(chunk)) {
        if (f.type === 'H') setTimeout(() => send(FrameType.HelloReply, 0, Buffer.from(`prism-agent ${this.version} ${this.mounted.length ? 'ready' : 'booted'}${this.liveChannels}`)), this.helloDelayMs);
        else if (f.type === 'W') this.windows.push([f.channel, f.payload.readBigUInt64BE()]);
        else if (f.type === 'M') {
          this.mounted.push(decodeFields(f.payload)[0]!);
          send(FrameType.MountReply, 0, Buffer.from('ok'));
        } else if (f.type === 'V') {
          const fields = decodeFields(f.payload);
          this.volumes.push(fields);
          send(FrameType.VolumeReply, 0, Buffer.from(fields[0] === 'prism-vol0' ? 'ok' : `error: no disk with serial ${fields[0]}`));
        } else if (f.type === 'S') {
          this.starts++;
          const req = decodeStart(f.payload);
          const [cmd, ...rest] = req.argv;
          if (cmd === 'echo') {
            send(FrameType.Stdout, f.channel, Buffer.from(`${rest.join(' ')}|${req.cwd}|${req.env.FOO ?? ''}|${req.user ?? 'root'}\n`));
            exit(f.channel, 0);
          } else if (cmd === 'big') {
            const n = Number(rest[0]);
            for (let i = 0; i < n; i += 65536) send(FrameType.Stdout, f.channel, Buffer.alloc(Math.min(65536, n - i), i / 65536));
            send(FrameType.Stderr, f.channel, Buffer.from('done'));
            exit(f.channel, 0);
          } else if (cmd === 'flood') {
            // Output without an exit (that waits for K), so the host still reads it as a live session.
            for (let i = 0; i < Number(rest[0]); i += 65536) send(FrameType.Stdout, f.channel, Buffer.alloc(65536, 1));
          } else if (cmd === 'cat') stdinOf.set(f.channel, true);
          else if (cmd !== 'sleep') {
            send(FrameType.Stderr, f.channel, Buffer.from(`${cmd}: not found\n`));
            exit(f.channel, 127);
          }
        } else if (f.type === 'I' && stdinOf.get(f.channel)) send(FrameType.Stdout, f.channel, f.payload);
        else if (f.type === 'C') exit(f.channel, 0);
        else if (f.type === 'K') exit(f.channel, 128 + f.payload[0]!, f.payload[0]!);
      }
    });
  }
}

async function collect(s: NodeJS.ReadableStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of s) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

const exec = (conn: AgentConnection, argv: string[], stdin = false, user?: string): AgentProcess =>
  conn.exec({ argv, env: { FOO: 'bar' }, cwd: '/tmp', stdin }, user);

describe('AgentConnection', () => {
  let dir: string;
  let path: string;
  let agent: FakeAgent;
  let conn: AgentConnection | undefined;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'prism-agent-conn-'));
    path = join(dir, 'agent.sock');
    agent = new FakeAgent();
  });
  afterEach(async () => {
    conn?.close();
    agent.server?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('retries until the socket exists and the guest says hello, then mounts', async () => {
    agent.helloDelayMs = 100;
    const opening = AgentConnection.open(path, { timeoutMs: 5000 });
    await new Promise((r) => setTimeout(r, 200));
    await agent.listen(path);
    conn = await opening;
    expect(conn.state).toBe('booted');
    await conn.mount('box-1');
    expect(agent.mounted).toEqual(['box-1']);
    expect(conn.state).toBe('ready');
    await conn.mountVolume('prism-vol0', '/data', true);
    await expect(conn.mountVolume('prism-vol1', '/other', false)).rejects.toMatchObject({ code: 'INTERNAL', message: expect.stringMatching(/on \/other: no disk with serial prism-vol1/) });
    expect(agent.volumes).toEqual([['prism-vol0', '/data', 'ro'], ['prism-vol1', '/other', 'rw']]);
  });

  it('times out UNAVAILABLE when no guest answers', async () => {
    await expect(AgentConnection.open(path, { timeoutMs: 300 })).rejects.toMatchObject({ code: 'UNAVAILABLE' });
  });

  it('runs commands with cwd, env and user and reports exit codes and signals', async () => {
    await agent.listen(path);
    conn = await AgentConnection.open(path, { timeoutMs: 2000 });
    const p = exec(conn, ['echo', 'a', 'b'], false, '1000 1000 1000');
    const [out, , exit] = await Promise.all([collect(p.stdout), collect(p.stderr), p.exit]);
    expect(out.toString()).toBe('a b|/tmp|bar|1000 1000 1000\n');
    expect(exit).toEqual({ exitCode: 0 });
    expect(p.stdin).toBeNull();
    const missing = exec(conn, ['nope']);
    const [, err, exit2] = await Promise.all([collect(missing.stdout), collect(missing.stderr), missing.exit]);
    expect(err.toString()).toBe('nope: not found\n');
    expect(exit2.exitCode).toBe(127);
    const sleeper = exec(conn, ['sleep']);
    sleeper.stdout.resume();
    sleeper.stderr.resume();
    sleeper.kill('SIGTERM');
    expect(await sleeper.exit).toEqual({ exitCode: 143, signal: 'SIGTERM' });
    expect(conn.sessionCount).toBe(0);
  });

  it('streams stdin through and ends on close', async () => {
    await agent.listen(path);
    conn = await AgentConnection.open(path, { timeoutMs: 2000 });
    const p = exec(conn, ['cat'], true);
    const out = collect(p.stdout);
    p.stderr.resume();
    const blob = Buffer.alloc(3 * 1024 * 1024 + 7, 7);
    p.stdin!.end(blob);
    expect((await out).equals(blob)).toBe(true);
    expect((await p.exit).exitCode).toBe(0);
  });

  it('a session nobody reads does not stall the others', async () => {
    await agent.listen(path);
    conn = await AgentConnection.open(path, { timeoutMs: 2000 });
    const unread = exec(conn, ['big', String(8 * 1024 * 1024)]);
    const others = await Promise.all(Array.from({ length: 5 }, (_, i) => {
      const p = exec(conn!, ['echo', String(i)]);
      p.stderr.resume();
      return Promise.all([collect(p.stdout), p.exit]);
    }));
    expect(others.map(([o]) => o.toString().split('|')[0])).toEqual(['0', '1', '2', '3', '4']);
    // Its output was kept, not dropped, while it was not read.
    const [out, err] = await Promise.all([collect(unread.stdout), collect(unread.stderr)]);
    expect(out.length).toBe(8 * 1024 * 1024);
    expect(err.toString()).toBe('done');
    expect((await unread.exit).exitCode).toBe(0);
  });

  it('opens a session\'s window (W) only as its reader takes the output', async () => {
    await agent.listen(path);
    conn = await AgentConnection.open(path, { timeoutMs: 2000 });
    const size = 4 * 1024 * 1024;
    const p = exec(conn, ['flood', String(size)]);
    p.stderr.resume();
    await new Promise((r) => setTimeout(r, 100));
    // All of it arrived (the fake does not wait for windows), none of it was read: nothing granted.
    expect(agent.windows).toEqual([]);
    let got = 0;
    p.stdout.on('data', (c: Buffer) => (got += c.length));
    while (got < size) await new Promise((r) => setTimeout(r, 10));
    await new Promise((r) => setTimeout(r, 50));
    p.kill();
    await p.exit;
    const limits = agent.windows.map(([ch, limit]) => (expect(ch).toBe(1), Number(limit)));
    // Each grant a quarter window or more past the last, the last a full window past everything read.
    expect(limits.length).toBeGreaterThan(0);
    expect(limits.length).toBeLessThanOrEqual(4 * (size / OUTPUT_WINDOW + 1));
    limits.reduce((prev, l) => (expect(l - prev).toBeGreaterThanOrEqual(OUTPUT_WINDOW / 4), l), OUTPUT_WINDOW);
    expect(limits.at(-1)).toBeGreaterThanOrEqual(size);
    expect(limits.at(-1)).toBeLessThanOrEqual(size + OUTPUT_WINDOW);
  });

  it('lifts the window of sessions it does not know; sends no windows to a version 7 agent', async () => {
    agent.liveChannels = ' 5 9';
    await agent.listen(path);
    conn = await AgentConnection.open(path, { timeoutMs: 2000 });
    await new Promise((r) => setTimeout(r, 50));
    expect(agent.windows).toEqual([[5, UNLIMITED_OUTPUT], [9, UNLIMITED_OUTPUT]]);
    conn.close();
    agent.windows = [];
    agent.version = 7;
    conn = await AgentConnection.open(path, { timeoutMs: 2000 });
    const p = exec(conn, ['big', String(1024 * 1024)]);
    p.stderr.resume();
    expect((await collect(p.stdout)).length).toBe(1024 * 1024);
    await p.exit;
    expect(agent.windows).toEqual([]);
    agent.version = 6;
    await expect(AgentConnection.open(path, { timeoutMs: 2000 })).rejects.toMatchObject({ code: 'FAILED_PRECONDITION' });
  });

  it('ends running sessions as killed when the connection drops, and reconnects', async () => {
    await agent.listen(path);
    conn = await AgentConnection.open(path, { timeoutMs: 2000 });
    const a = exec(conn, ['sleep']);
    const b = exec(conn, ['cat'], true);
    for (const p of [a, b]) {
      p.stdout.resume();
      p.stderr.resume();
    }
    await new Promise((r) => setTimeout(r, 50));
    agent.dropAll();
    expect(await a.exit).toEqual({ exitCode: 137, signal: 'SIGKILL' });
    expect(await b.exit).toEqual({ exitCode: 137, signal: 'SIGKILL' });
    b.stdin!.write('ignored'); // writing to a dead session must not throw
    expect(conn.connected).toBe(false);
    expect(() => exec(conn!, ['echo'])).toThrow(/not running/);
    await conn.connect({ timeoutMs: 2000 });
    const p = exec(conn, ['echo', 'again']);
    expect((await collect(p.stdout)).toString()).toMatch(/^again\|/);
    expect(agent.starts).toBe(3);
  });
});
