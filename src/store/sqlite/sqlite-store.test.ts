import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { PrismError } from '../../core/errors.js';
import { storeConformanceSuite } from '../../../test/conformance/store-suite.js';
import type { WatchEvent } from '../store.js';
import { SqliteStore } from './sqlite-store.js';

const dirs: string[] = [];
function tempDb(): string {
  const dir = mkdtempSync(join(tmpdir(), 'prism-store-'));
  dirs.push(dir);
  return join(dir, 'store.db');
}
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    return e instanceof PrismError ? e.code : `not a PrismError: ${String(e)}`;
  }
  return undefined;
}

storeConformanceSuite('sqlite :memory:', async () => {
  const store = SqliteStore.open(':memory:', { leaseSweepMs: 50 });
  return { store, cleanup: () => store.close() };
});

storeConformanceSuite('sqlite file', async () => {
  const store = SqliteStore.open(tempDb(), { leaseSweepMs: 50 });
  return { store, cleanup: () => store.close() };
});

describe('SqliteStore', () => {
  it('keeps data, revisions, history and leases across close and reopen', async () => {
    const path = tempDb();
    const first = SqliteStore.open(path);
    const lease = await first.grantLease(60_000);
    const r1 = await first.put('a', '1');
    const r2 = await first.put('a', '2');
    const r3 = await first.put('b', '3', { lease: lease.id });
    await first.close();

    const second = SqliteStore.open(path);
    try {
      expect(await second.revision()).toBe(r3);
      expect(await second.list('')).toEqual([
        { key: 'a', value: '2', createRevision: r1, modRevision: r2 },
        { key: 'b', value: '3', createRevision: r3, modRevision: r3, lease: lease.id },
      ]);
      expect(await second.put('c', '4')).toBe(r3 + 1);
      const events: WatchEvent[] = [];
      const w = second.watch('a', 0, (e) => events.push(e));
      await new Promise((resolve) => setTimeout(resolve, 20));
      w.close();
      expect(events).toEqual([
        { type: 'put', key: 'a', value: '1', revision: r1 },
        { type: 'put', key: 'a', value: '2', revision: r2 },
      ]);
      // The lease handle from the first open still addresses the persisted lease.
      await second.delete('b');
      await expect(second.put('b', 'again', { lease: lease.id })).resolves.toBe(r3 + 3);
    } finally {
      await second.close();
    }
  });

  it('expires on open the leases that ran out while it was closed', async () => {
    const path = tempDb();
    const first = SqliteStore.open(path);
    const lease = await first.grantLease(50);
    await first.put('eph', 'v', { lease: lease.id });
    await first.close();
    await new Promise((resolve) => setTimeout(resolve, 80));
    const second = SqliteStore.open(path);
    try {
      expect(await second.get('eph')).toBeUndefined();
    } finally {
      await second.close();
    }
  });

  it('credits leases with the time the process stood still, and expires them on time after it', async () => {
    const store = SqliteStore.open(':memory:', { leaseSweepMs: 50 });
    const blockFor = (ms: number) => {
      const until = performance.now() + ms;
      while (performance.now() < until) {
        // the event loop, the lease holders and the store's sweep all stand still
      }
    };
    const warnings: string[] = [];
    const onWarning = (w: Error) => warnings.push(w.message);
    process.on('warning', onWarning);
    try {
      const renewedFirst = await store.grantLease(300);
      const sweptFirst = await store.grantLease(300);
      await store.put('renewed-first', 'v', { lease: renewedFirst.id });
      await store.put('swept-first', 'v', { lease: sweptFirst.id });
      blockFor(1500);
      // The holder's renewal comes before the store's sweep...
      await renewedFirst.keepAlive();
      // ...or after it: neither finds its lease gone.
      await new Promise((resolve) => setTimeout(resolve, 120));
      expect((await store.get('swept-first'))?.value).toBe('v');
      await sweptFirst.keepAlive();
      expect((await store.get('renewed-first'))?.value).toBe('v');
      expect(warnings.some((m) => /stood still for 1\.\d s/.test(m))).toBe(true);
      // Credited once: a lease its holder stops renewing while the process runs expires after its TTL.
      await new Promise((resolve) => setTimeout(resolve, 600));
      expect(await store.get('swept-first')).toBeUndefined();
      await expect(sweptFirst.keepAlive()).rejects.toMatchObject({ code: 'NOT_FOUND' });
    } finally {
      process.off('warning', onWarning);
      await store.close();
    }
  });

  it('refuses a watch from before the retained history with FAILED_PRECONDITION', async () => {
    const store = SqliteStore.open(':memory:', { historyLimit: 3 });
    try {
      for (let i = 1; i <= 5; i++) await store.put(`h/${i}`, String(i));
      expect(codeOf(() => store.watch('h/', 0, () => {}))).toBe('FAILED_PRECONDITION');
      expect(codeOf(() => store.watch('h/', 1, () => {}))).toBe('FAILED_PRECONDITION');
      const events: WatchEvent[] = [];
      const w = store.watch('h/', 2, (e) => events.push(e));
      await new Promise((resolve) => setTimeout(resolve, 20));
      w.close();
      expect(events.map((e) => e.revision)).toEqual([3, 4, 5]);
    } finally {
      await store.close();
    }
  });

  it('trims history by whole commits so a watch never sees half of one', async () => {
    const store = SqliteStore.open(':memory:', { historyLimit: 3 });
    try {
      const r1 = await store.commit([{ op: 'put', key: 'a', value: '1' }, { op: 'put', key: 'b', value: '1' }]);
      const r2 = await store.commit([{ op: 'put', key: 'a', value: '2' }, { op: 'put', key: 'b', value: '2' }]);
      expect(codeOf(() => store.watch('', r1 - 1, () => {}))).toBe('FAILED_PRECONDITION');
      const events: WatchEvent[] = [];
      const w = store.watch('', r1, (e) => events.push(e));
      await new Promise((resolve) => setTimeout(resolve, 20));
      w.close();
      expect(events.map((e) => [e.key, e.revision])).toEqual([['a', r2], ['b', r2]]);
    } finally {
      await store.close();
    }
  });

  it('rejects malformed input with INVALID_ARGUMENT', async () => {
    const store = SqliteStore.open(':memory:');
    try {
      await expect(store.put('', 'v')).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
      await expect(store.put('k', 'v', { expectRevision: -1 })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
      await expect(store.grantLease(0)).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
      await expect(store.commit([
        { op: 'put', key: 'k', value: '1' },
        { op: 'delete', key: 'k' },
      ])).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
      expect(await store.revision()).toBe(0);
    } finally {
      await store.close();
    }
  });

  it('closes idempotently, stops watches and refuses use afterwards', async () => {
    const store = SqliteStore.open(':memory:');
    const events: WatchEvent[] = [];
    store.watch('', 0, (e) => events.push(e));
    // Closed before the queued event's delivery runs: it must not be delivered.
    const written = store.put('k', 'v');
    await store.close();
    await store.close();
    await written;
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(events).toEqual([]);
    await expect(store.get('k')).rejects.toMatchObject({ code: 'FAILED_PRECONDITION' });
    expect(codeOf(() => store.watch('', 0, () => {}))).toBe('FAILED_PRECONDITION');
  });
});
