import { tmpdir } from 'node:os';
import { afterEach, describe, expect, it } from 'vitest';
import { PrismError } from '../core/errors.js';
import { startNode } from '../daemon/node-wiring.js';
import { oneImageStore } from '../images/fake/one-image-store.js';
import { FakeDriver } from '../runtime/fake/fake-driver.js';
import { SqliteStore } from '../store/sqlite/sqlite-store.js';
import { silentLogger } from './logger.js';
import { DEFAULT_PROCESS_LIMITS, type FollowEvent, type ProcessLimits } from './process-service.js';

const IMAGE = 'prism.local/base:test';
const images = oneImageStore(IMAGE, { digest: 'sha256:' + 'cd'.repeat(32), layerDirs: ['/layers/0'] });

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function setup(limits: Partial<ProcessLimits> = {}) {
  const store = SqliteStore.open(':memory:');
  const node = await startNode({
    store, id: 'node-test', name: 'test-node', version: 'test', dataDir: tmpdir(), address: 'http://127.0.0.1:0',
    images, drivers: new Map([['oci', new FakeDriver()]]), runtimeInfo: [],
    defaults: { image: IMAGE, runtime: 'oci', cpus: 1, memoryMb: 512, pidsLimit: 256, diskMb: 2048, maxOpenFiles: 4096 },
    labels: {}, capacity: {}, placement: 'spread', nodeTtlMs: 5000, scheduleTimeoutMs: 5000,
    execLimits: { recordBytes: 1 << 20, recordsPerSandbox: 100, maxTimeoutSec: 3600 },
    processLimits: { ...DEFAULT_PROCESS_LIMITS, ...limits },
    watchdogMs: 60_000, log: silentLogger,
  });
  cleanups.push(() => store.close(), () => node.stop());
  await node.nodes.publish();
  const sb = await node.sandboxes.create({});
  return { node, procs: node.processes, sb };
}

const codeOf = (p: Promise<unknown>) => p.then(() => undefined, (e: unknown) => (e instanceof PrismError ? e.code : String(e)));

describe('ProcessService', () => {
  it('returns at once, reads output incrementally by offset, takes stdin, and waits for the exit', async () => {
    const { procs, sb, node } = await setup();
    const p = await procs.start(sb.id, { argv: ['cat'], stdin: Buffer.from('one\n') });
    expect(p).toMatchObject({ status: 'running', stdinOpen: true, cmd: ['cat'] });
    expect((await procs.wait(sb.id, p.id, 20)).status).toBe('running');
    const first = await procs.output(sb.id, p.id, { stdout: 0, stderr: 0 });
    expect(first.stdout.data.toString()).toBe('one\n');
    await procs.writeStdin(sb.id, p.id, Buffer.from('two\n'), true);
    const done = await procs.wait(sb.id, p.id, 5000);
    expect(done).toMatchObject({ status: 'exited', exitCode: 0, stdinOpen: false, stdoutBytes: 8 });
    const second = await procs.output(sb.id, p.id, { stdout: first.stdout.next, stderr: 0 });
    expect(second.stdout).toMatchObject({ from: 4, next: 8, dropped: 0 });
    expect(second.stdout.data.toString()).toBe('two\n');
    expect(await codeOf(procs.writeStdin(sb.id, p.id, Buffer.from('x'), false))).toBe('FAILED_PRECONDITION');
    // Its exec record is in the sandbox's logs under the same id.
    expect((await node.exec.logs(sb.id)).find((r) => r.id === p.id)).toMatchObject({ cmd: ['cat'], stdout: 'one\ntwo\n' });
  });

  it('delivers a signal and reports it in the result', async () => {
    const { procs, sb } = await setup();
    const p = await procs.start(sb.id, { argv: ['sleep', '100000'] });
    await procs.signal(sb.id, p.id, 'SIGTERM');
    expect(await procs.wait(sb.id, p.id, 5000)).toMatchObject({ status: 'exited', signal: 'SIGTERM', exitCode: 143 });
    expect(await codeOf(procs.signal(sb.id, p.id, 'SIGTERM'))).toBe('FAILED_PRECONDITION');
    expect(await codeOf(procs.signal(sb.id, p.id, 'SIGSEGV' as never))).toBe('INVALID_ARGUMENT');
  });

  it('applies the exec timeout', async () => {
    const { procs, sb } = await setup();
    const p = await procs.start(sb.id, { argv: ['sleep', '100000'], timeoutSec: 0.05 });
    expect(await procs.wait(sb.id, p.id, 5000)).toMatchObject({ status: 'exited', timedOut: true, limitExceeded: 'TIMEOUT' });
  });

  it('refuses more running processes than the limit, counting starts under way', async () => {
    const { procs, sb } = await setup({ maxPerSandbox: 2 });
    const starts = await Promise.allSettled([0, 1, 2].map(() => procs.start(sb.id, { argv: ['sleep', '100000'] })));
    expect(starts.filter((s) => s.status === 'fulfilled')).toHaveLength(2);
    const refused = starts.find((s) => s.status === 'rejected') as PromiseRejectedResult;
    expect((refused.reason as PrismError).code).toBe('RESOURCE_EXHAUSTED');
    const [a] = await procs.list(sb.id);
    await procs.signal(sb.id, a!.id, 'SIGKILL');
    await procs.wait(sb.id, a!.id, 5000);
    // An exited process no longer counts.
    expect((await procs.start(sb.id, { argv: ['sleep', '100000'] })).status).toBe('running');
  });

  it('keeps the last bufferBytes of output and says how many bytes a reader missed', async () => {
    const { procs, sb } = await setup({ bufferBytes: 8 });
    const p = await procs.start(sb.id, { argv: ['cat'] });
    await procs.writeStdin(sb.id, p.id, Buffer.from('0123456789abcdefghij'), true);
    await procs.wait(sb.id, p.id, 5000);
    const out = await procs.output(sb.id, p.id, { stdout: 0, stderr: 0 });
    expect(out.stdout).toMatchObject({ from: 12, next: 20, dropped: 12 });
    expect(out.stdout.data.toString()).toBe('cdefghij');
  });

  it('keeps at most keepExited exited processes, forgetting the oldest; remove kills and forgets', async () => {
    const { procs, sb } = await setup({ keepExited: 2 });
    const ids: string[] = [];
    for (const word of ['a', 'b', 'c']) {
      const p = await procs.start(sb.id, { argv: ['echo', word] });
      await procs.wait(sb.id, p.id, 5000);
      ids.push(p.id);
    }
    expect((await procs.list(sb.id)).map((p) => p.id)).toEqual(ids.slice(1));
    expect(await codeOf(procs.get(sb.id, ids[0]!))).toBe('NOT_FOUND');
    const sleeper = await procs.start(sb.id, { argv: ['sleep', '100000'] });
    const waiting = procs.wait(sb.id, sleeper.id, 5000);
    await procs.remove(sb.id, sleeper.id);
    expect(await waiting).toMatchObject({ status: 'exited', signal: 'SIGKILL' });
    expect(await codeOf(procs.get(sb.id, sleeper.id))).toBe('NOT_FOUND');
  });

  it('follows output until the exit, from the given offsets', async () => {
    const { procs, sb } = await setup();
    const p = await procs.start(sb.id, { argv: ['cat'], stdin: Buffer.from('skip') });
    const events: FollowEvent[] = [];
    const following = (async () => {
      for await (const ev of procs.follow(sb.id, p.id, { stdout: 2, stderr: 0 })) events.push(ev);
    })();
    await new Promise((r) => setTimeout(r, 20));
    await procs.writeStdin(sb.id, p.id, Buffer.from('-more'), true);
    await following;
    const text = events.flatMap((e) => (e.type === 'stdout' ? [e.read.data.toString()] : [])).join('');
    expect(text).toBe('ip-more');
    expect(events.at(-1)).toMatchObject({ type: 'exit', info: { status: 'exited', exitCode: 0 } });
  });

  it('stops following when aborted, leaving the process running', async () => {
    const { procs, sb } = await setup();
    const p = await procs.start(sb.id, { argv: ['sleep', '100000'] });
    const ac = new AbortController();
    const events: FollowEvent[] = [];
    const following = (async () => {
      for await (const ev of procs.follow(sb.id, p.id, { stdout: 0, stderr: 0 }, ac.signal)) events.push(ev);
    })();
    setTimeout(() => ac.abort(), 20);
    await following;
    expect(events).toEqual([]);
    expect((await procs.get(sb.id, p.id)).status).toBe('running');
  });

  it('ends processes with INTERRUPTED when their sandbox stops, and forgets them when it is deleted', async () => {
    const { procs, sb, node } = await setup();
    const a = await procs.start(sb.id, { argv: ['sleep', '100000'] });
    await node.sandboxes.stop(sb.id);
    expect(await procs.wait(sb.id, a.id, 5000)).toMatchObject({ status: 'exited', error: { code: 'INTERRUPTED' } });
    await node.sandboxes.start(sb.id);
    const b = await procs.start(sb.id, { argv: ['sleep', '100000'] });
    const waiting = procs.wait(sb.id, b.id, 5000);
    await node.sandboxes.delete(sb.id);
    expect(await waiting).toMatchObject({ status: 'exited', error: { code: 'INTERRUPTED', message: expect.stringContaining('deleted') } });
    expect(await codeOf(procs.list(sb.id))).toBe('NOT_FOUND');
  });
});
