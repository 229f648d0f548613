/**
 * The exec agent (guest/init/exec-agent.c) run as a plain process, outside any task, spoken to by the
 * daemon's client (src/runtime/exec-agent-client.ts): what travels over one connection when the two
 * sides race. `prism-init listen PATH -- prism-init` is the agent as a task's PID 1 gets it.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createConnection, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { agentExec, attachAgent, startFrame } from '../../src/runtime/exec-agent-client.js';
import { REPO_ROOT } from './prismd-harness.js';

const init = join(REPO_ROOT, 'guest/init/prism-init');
const skip = existsSync(init) ? undefined : 'guest/init not built (npm run build)';

function frame(type: string, payload = Buffer.alloc(0)): Buffer {
  const hdr = Buffer.alloc(5);
  hdr.write(type, 0, 'latin1');
  hdr.writeUInt32BE(payload.length, 1);
  return Buffer.concat([hdr, payload]);
}

async function collect(p: { stdout: NodeJS.ReadableStream; stderr: NodeJS.ReadableStream; exit: Promise<unknown> }): Promise<{ out: string; exit: unknown }> {
  let out = '';
  p.stdout.on('data', (b: Buffer) => (out += b.toString()));
  p.stderr.resume();
  const exit = await p.exit;
  return { out, exit };
}

describe.skipIf(skip !== undefined)('the exec agent over its socket', () => {
  let dir = '';
  let sock = '';
  let agent: ChildProcess;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'prism-agent-'));
    sock = join(dir, 'agent.sock');
    agent = spawn(init, ['listen', sock, '--', init], { stdio: 'ignore' });
    for (const deadline = Date.now() + 10_000; !existsSync(sock); ) {
      if (Date.now() > deadline) throw new Error('the agent did not listen');
      await new Promise((r) => setTimeout(r, 20));
    }
  });

  afterAll(async () => {
    agent?.kill('SIGTERM');
    await rm(dir, { recursive: true, force: true });
  });

  it('runs a command and reports its exit', async () => {
    const p = await agentExec(sock, { argv: ['sh', '-c', 'echo out; exit 3'], env: { PATH: '/usr/bin:/bin' }, cwd: '/', stdin: false });
    expect(await collect(p)).toEqual({ out: 'out\n', exit: { exitCode: 3 } });
  });

  it('keeps output and exit when the daemon ends stdin after the command already exited', async () => {
    // The daemon does not read (paused) until the command is long gone, then closes its stdin: the
    // agent must still hold the connection, or the write fails and what it sent is lost.
    const s: Socket = createConnection(sock);
    s.pause();
    await new Promise<void>((resolve, reject) => s.once('connect', resolve).once('error', reject));
    s.write(startFrame({ argv: ['echo', 'quick'], env: { PATH: '/usr/bin:/bin' }, cwd: '/', stdin: true }));
    await new Promise((r) => setTimeout(r, 300));
    s.write(frame('C'));
    await new Promise((r) => setTimeout(r, 100));
    expect(s.destroyed, 'the write failed: the agent had closed the connection').toBe(false);
    const p = attachAgent(s, s, true);
    s.resume();
    expect(await collect(p)).toEqual({ out: 'quick\n', exit: { exitCode: 0 } });
  });

  it('closes the connection once the daemon hangs up after the exit', async () => {
    for (let i = 0; i < 20; i++) {
      const p = await agentExec(sock, { argv: ['true'], env: { PATH: '/usr/bin:/bin' }, cwd: '/', stdin: true });
      p.stdin?.end();
      expect((await collect(p)).exit).toEqual({ exitCode: 0 });
    }
  });
});
