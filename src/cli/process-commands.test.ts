import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startInProcessApi } from '../daemon/in-process-api.test-support.js';
import type { CliIo } from './context.js';
import { parseSignal } from './process-commands.js';
import { main } from './prismctl.js';

// prismctl against the real API and ProcessService on the fake driver.
let api: Awaited<ReturnType<typeof startInProcessApi>>;

beforeAll(async () => {
  api = await startInProcessApi();
  await api.node.sandboxes.create({ name: 'box' });
});
afterAll(async () => {
  await api?.close();
});

async function run(args: string[], stdin?: string): Promise<{ code: number; stdout: string; stderr: string }> {
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  const io: CliIo = {
    stdout: { write: (c) => out.push(Buffer.from(c)) },
    stderr: { write: (c) => err.push(Buffer.from(c)) },
    stdin: Object.assign(Readable.from(stdin === undefined ? [] : [Buffer.from(stdin)]), { isTTY: false }),
    env: { PRISM_API: api.url },
  };
  const code = await main(['node', 'prismctl', ...args], io);
  return { code, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() };
}

describe('prismctl background processes', () => {
  it('exec --background prints the id; ps lists it; kill and wait report the signal', async () => {
    const started = await run(['sandbox', 'exec', '--background', 'box', '--', 'sleep', '100000']);
    expect(started.code).toBe(0);
    const pid = started.stdout.trim();
    expect(pid).toMatch(/^ex-[0-9a-f]{12}$/);
    const ps = await run(['sandbox', 'ps', 'box']);
    expect(ps.stdout).toMatch(new RegExp(`${pid}\\s+running\\s+\\S+\\s+0 B\\s+sleep 100000`));
    expect((await run(['sandbox', 'wait', 'box', pid, '--timeout', '0.1'])).code).toBe(124);
    expect((await run(['sandbox', 'kill', 'box', pid, '--signal', 'INT'])).stdout).toBe(`sent SIGINT to ${pid}\n`);
    const waited = await run(['sandbox', 'wait', 'box', pid]);
    expect(waited.code).toBe(130);
    expect(waited.stdout).toMatch(new RegExp(`^${pid}: SIGINT after`));
    expect((await run(['-o', 'json', 'sandbox', 'ps', 'box'])).stdout).toContain('"signal": "SIGINT"');
  });

  it('output prints what was written; --follow streams to the exit and exits with its code', async () => {
    const started = await run(['sandbox', 'exec', '-b', '-i', 'box', '--', 'cat'], 'hello\n');
    const pid = started.stdout.trim();
    let out = await run(['sandbox', 'output', 'box', pid]);
    for (let i = 0; i < 50 && out.stdout === ''; i++) out = await run(['sandbox', 'output', 'box', pid]);
    expect(out.stdout).toBe('hello\n');
    const following = run(['sandbox', 'output', '--follow', 'box', pid]);
    await new Promise((r) => setTimeout(r, 50));
    const [p] = (await api.node.processes.list('box')).filter((x) => x.id === pid);
    expect(p!.status).toBe('running');
    await api.node.processes.writeStdin('box', pid, Buffer.from('more\n'), true);
    const followed = await following;
    expect(followed).toMatchObject({ code: 0, stdout: 'hello\nmore\n' });
  });

  it('refuses signals the API does not take', async () => {
    expect(parseSignal('term')).toBe('SIGTERM');
    expect(parseSignal('SIGUSR1')).toBe('SIGUSR1');
    expect(() => parseSignal('SEGV')).toThrow(/unknown signal/);
    const r = await run(['sandbox', 'kill', 'box', 'ex-000000000000', '--signal', 'BOGUS']);
    expect(r.code).toBe(2);
  });
});
