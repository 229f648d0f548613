import { tmpdir } from 'node:os';
import { afterEach, describe, expect, it } from 'vitest';
import { PrismError } from '../core/errors.js';
import { oneImageStore } from '../images/fake/one-image-store.js';
import { FakeDriver } from '../runtime/fake/fake-driver.js';
import { SqliteStore } from '../store/sqlite/sqlite-store.js';
import { startNode } from '../daemon/node-wiring.js';
import { silentLogger } from './logger.js';
import type { PtySession } from './pty-service.js';

const IMAGE = 'prism.local/base:test';
const images = oneImageStore(IMAGE, { digest: 'sha256:' + 'cd'.repeat(32), layerDirs: ['/layers/0'] });

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function setup() {
  const store = SqliteStore.open(':memory:');
  const node = await startNode({
    store, id: 'node-pty', name: 'pty-node', version: 'test', dataDir: tmpdir(), address: 'http://127.0.0.1:0',
    images, drivers: new Map([['oci', new FakeDriver()]]), runtimeInfo: [],
    defaults: { image: IMAGE, runtime: 'oci', cpus: 1, memoryMb: 512, pidsLimit: 256, diskMb: 2048, maxOpenFiles: 4096 },
    labels: {}, capacity: {}, placement: 'spread', nodeTtlMs: 5000, scheduleTimeoutMs: 5000,
    execLimits: { recordBytes: 1 << 20, recordsPerSandbox: 100, maxTimeoutSec: 3600 },
    watchdogMs: 60_000, log: silentLogger,
  });
  cleanups.push(() => store.close(), () => node.stop());
  await node.nodes.publish();
  await node.sandboxes.create({ name: 'box', env: { FROM_SANDBOX: 'yes' } });
  return node;
}

async function screen(s: PtySession, seen: (text: string) => void = () => undefined): Promise<{ text: string; exit: Awaited<PtySession['done']> }> {
  let text = '';
  s.output.on('data', (b: Buffer) => seen((text += b.toString())));
  const exit = await s.done;
  return { text, exit };
}

const codeOf = (p: Promise<unknown>) => p.then(() => undefined, (e: unknown) => (e instanceof PrismError ? e.code : String(e)));

describe('PtyService', () => {
  it('runs the command on a terminal of the asked size, with the sandbox env', async () => {
    const node = await setup();
    const s = await node.pty.open('box', { cols: 100, rows: 30, argv: ['size'] });
    expect(await screen(s)).toEqual({ text: '30 100\n', exit: { exitCode: 0 } });
    const env = await screen(await node.pty.open('box', { cols: 80, rows: 24, argv: ['env'] }));
    expect(env.text).toContain('FROM_SANDBOX=yes\n');
  });

  it('resizes, passes keystrokes, and close() kills the command', async () => {
    const node = await setup();
    const s = await node.pty.open('box', { cols: 80, rows: 24, argv: ['cat'] });
    let echoed!: () => void;
    const typed = new Promise<void>((r) => (echoed = r));
    const shown = screen(s, (t) => t === 'typed' && echoed());
    s.write(Buffer.from('typed'));
    await typed;
    s.resize(120, 40);
    expect(() => s.resize(0, 40)).toThrow(PrismError);
    s.close();
    expect(await shown).toEqual({ text: 'typed', exit: { exitCode: 137, signal: 'SIGKILL' } });
    s.close(); // idempotent once over
  });

  it('refuses bad sizes, empty or relative commands, unknown and stopped sandboxes', async () => {
    const node = await setup();
    expect(await codeOf(node.pty.open('box', { cols: 0, rows: 24 }))).toBe('INVALID_ARGUMENT');
    expect(await codeOf(node.pty.open('box', { cols: 80, rows: 65536 }))).toBe('INVALID_ARGUMENT');
    expect(await codeOf(node.pty.open('box', { cols: 80, rows: 24, argv: [] }))).toBe('INVALID_ARGUMENT');
    expect(await codeOf(node.pty.open('box', { cols: 80, rows: 24, argv: ['sh'], cwd: 'tmp' }))).toBe('INVALID_ARGUMENT');
    expect(await codeOf(node.pty.open('nope', { cols: 80, rows: 24 }))).toBe('NOT_FOUND');
    await node.sandboxes.stop('box');
    expect(await codeOf(node.pty.open('box', { cols: 80, rows: 24 }))).toBe('FAILED_PRECONDITION');
  });
});
