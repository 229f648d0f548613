/**
 * The Store contract (src/store/store.ts) as tests. Every Store implementation runs this suite from its
 * own test file; a behaviour that only one implementation has belongs in that file, not here.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { PrismError, type ErrorCode } from '../../src/core/errors.js';
import type { Store, WatchEvent } from '../../src/store/store.js';

export interface StoreSuiteOptions {
  /** Lease TTL used by the lease tests. etcd counts TTLs in whole seconds, so it needs a larger one. */
  leaseTtlMs?: number;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

async function waitFor(what: string, cond: () => boolean | Promise<boolean>, timeoutMs = 3000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(10);
  }
}

async function expectCode(p: Promise<unknown>, code: ErrorCode): Promise<void> {
  const err = await p.then(() => undefined, (e: unknown) => e);
  expect(err, `expected a PrismError ${code}`).toBeInstanceOf(PrismError);
  expect((err as PrismError).code).toBe(code);
}

/** Events without values for deletes, as plain objects, so toEqual compares exactly what a user sees. */
const put = (key: string, value: string, revision: number): WatchEvent => ({ type: 'put', key, value, revision });
const del = (key: string, revision: number): WatchEvent => ({ type: 'delete', key, revision });

export function storeConformanceSuite(
  name: string,
  makeStore: () => Promise<{ store: Store; cleanup: () => Promise<void> }>,
  opts: StoreSuiteOptions = {},
): void {
  const ttl = opts.leaseTtlMs ?? 500;

  describe(`Store conformance: ${name}`, () => {
    let store: Store;
    let cleanup: () => Promise<void>;
    const watches: { close(): void }[] = [];

    beforeEach(async () => {
      ({ store, cleanup } = await makeStore());
    });
    afterEach(async () => {
      for (const w of watches.splice(0)) w.close();
      await cleanup();
    });

    function collect(prefix: string, from: number): WatchEvent[] {
      const events: WatchEvent[] = [];
      watches.push(store.watch(prefix, from, (e) => events.push({ ...e })));
      return events;
    }

    describe('get, put, list', () => {
      it('returns undefined for a missing key and the written value with its revisions', async () => {
        expect(await store.get('k')).toBeUndefined();
        const rev = await store.put('k', '{"a":1}');
        expect(await store.get('k')).toEqual({ key: 'k', value: '{"a":1}', createRevision: rev, modRevision: rev });
      });

      it('lists only keys under the prefix, sorted by key', async () => {
        for (const k of ['a/2', 'ab', 'a/1', 'a', 'b/1', 'a/1/x', 'a0']) await store.put(k, `v-${k}`);
        const listed = await store.list('a/');
        expect(listed.map((kv) => kv.key)).toEqual(['a/1', 'a/1/x', 'a/2']);
        expect(listed.map((kv) => kv.value)).toEqual(['v-a/1', 'v-a/1/x', 'v-a/2']);
        expect((await store.list('')).map((kv) => kv.key)).toEqual(['a', 'a/1', 'a/1/x', 'a/2', 'a0', 'ab', 'b/1']);
        expect(await store.list('zz')).toEqual([]);
      });

      it('bumps the revision on every write and delete, not on reads or no-ops', async () => {
        const r0 = await store.revision();
        const r1 = await store.put('x', '1');
        const r2 = await store.put('x', '1');
        const r3 = await store.put('y', '2');
        expect(r1).toBeGreaterThan(r0);
        expect(r2).toBeGreaterThan(r1);
        expect(r3).toBeGreaterThan(r2);
        expect(await store.delete('x')).toBe(true);
        const r4 = await store.revision();
        expect(r4).toBeGreaterThan(r3);
        await store.get('y');
        await store.list('');
        expect(await store.delete('never-written')).toBe(false);
        expect(await store.revision()).toBe(r4);
      });

      it('keeps createRevision across updates and resets it on delete + re-create', async () => {
        const created = await store.put('k', 'one');
        const updated = await store.put('k', 'two');
        expect(await store.get('k')).toMatchObject({ value: 'two', createRevision: created, modRevision: updated });
        await store.delete('k');
        const recreated = await store.put('k', 'three');
        expect(await store.get('k')).toMatchObject({ value: 'three', createRevision: recreated, modRevision: recreated });
      });
    });

    describe('compare-and-swap', () => {
      it('expectRevision 0 creates only when absent', async () => {
        const rev = await store.put('k', 'first', { expectRevision: 0 });
        await expectCode(store.put('k', 'second', { expectRevision: 0 }), 'CONFLICT');
        expect(await store.get('k')).toMatchObject({ value: 'first', modRevision: rev });
        expect(await store.revision()).toBe(rev);
      });

      it('expectRevision n updates only when modRevision is n', async () => {
        const r1 = await store.put('k', 'v1');
        const r2 = await store.put('k', 'v2', { expectRevision: r1 });
        await expectCode(store.put('k', 'stale', { expectRevision: r1 }), 'CONFLICT');
        await expectCode(store.put('missing', 'v', { expectRevision: r1 }), 'CONFLICT');
        expect(await store.get('k')).toMatchObject({ value: 'v2', modRevision: r2 });
        expect(await store.get('missing')).toBeUndefined();
        expect(await store.revision()).toBe(r2);
      });

      it('deletes with compare-and-swap and reports a missing key', async () => {
        const r1 = await store.put('k', 'v');
        await store.put('other', 'v');
        await expectCode(store.delete('k', { expectRevision: r1 + 1 }), 'CONFLICT');
        await expectCode(store.delete('gone', { expectRevision: r1 }), 'CONFLICT');
        expect(await store.get('k')).toMatchObject({ value: 'v' });
        expect(await store.delete('k', { expectRevision: r1 })).toBe(true);
        expect(await store.get('k')).toBeUndefined();
        expect(await store.delete('k')).toBe(false);
      });

      it('20 parallel read-modify-write loops with retry count to exactly 20', async () => {
        await store.put('counter', '0');
        const increment = async () => {
          for (;;) {
            const kv = (await store.get('counter'))!;
            try {
              return await store.put('counter', String(Number(kv.value) + 1), { expectRevision: kv.modRevision });
            } catch (e) {
              if (!(e instanceof PrismError && e.code === 'CONFLICT')) throw e;
              // Lost the race: re-read and try again, as every CAS caller must.
            }
          }
        };
        const revisions = await Promise.all(Array.from({ length: 20 }, increment));
        expect((await store.get('counter'))!.value).toBe('20');
        expect(new Set(revisions).size).toBe(20);
      });
    });

    describe('commit', () => {
      it('applies all operations at one revision', async () => {
        await store.put('c/old', 'x');
        const before = await store.revision();
        const rev = await store.commit([
          { op: 'put', key: 'c/a', value: '1', expectRevision: 0 },
          { op: 'put', key: 'c/b', value: '2' },
          { op: 'delete', key: 'c/old' },
        ]);
        expect(rev).toBeGreaterThan(before);
        expect(await store.revision()).toBe(rev);
        expect(await store.list('c/')).toEqual([
          { key: 'c/a', value: '1', createRevision: rev, modRevision: rev },
          { key: 'c/b', value: '2', createRevision: rev, modRevision: rev },
        ]);
      });

      it('writes nothing when one comparison fails', async () => {
        const r1 = await store.put('c/exists', 'orig');
        await expectCode(store.commit([
          { op: 'put', key: 'c/a', value: '1' },
          { op: 'delete', key: 'c/exists' },
          { op: 'put', key: 'c/exists2', value: 'x', expectRevision: r1 + 100 },
        ]), 'CONFLICT');
        expect((await store.list('c/')).map((kv) => [kv.key, kv.value])).toEqual([['c/exists', 'orig']]);
        expect(await store.revision()).toBe(r1);
      });

      it('check ops guard the commit without writing the checked key', async () => {
        const lock = await store.put('lock', 'me');
        const rev = await store.commit([
          { op: 'check', key: 'lock', expectRevision: lock },
          { op: 'check', key: 'absent', expectRevision: 0 },
          { op: 'put', key: 'guarded', value: 'ok' },
        ]);
        expect(await store.get('guarded')).toMatchObject({ value: 'ok', modRevision: rev });
        expect(await store.get('lock')).toMatchObject({ modRevision: lock });
        expect(await store.get('absent')).toBeUndefined();
        await expectCode(store.commit([
          { op: 'check', key: 'lock', expectRevision: 0 },
          { op: 'put', key: 'guarded', value: 'overwritten' },
        ]), 'CONFLICT');
        await expectCode(store.commit([
          { op: 'check', key: 'lock', expectRevision: lock - 1 },
          { op: 'put', key: 'guarded', value: 'overwritten' },
        ]), 'CONFLICT');
        expect(await store.get('guarded')).toMatchObject({ value: 'ok', modRevision: rev });
      });
    });

    describe('watch', () => {
      it('delivers puts and deletes under the prefix, in order, with their revisions', async () => {
        const events = collect('w/', await store.revision());
        const r1 = await store.put('w/a', '1');
        await store.put('x/a', 'other prefix');
        await store.put('wx', 'not under w/');
        const r2 = await store.put('w/b', '2');
        await store.delete('w/a');
        const r3 = await store.revision();
        await waitFor('3 events', () => events.length >= 3);
        await sleep(30);
        expect(events).toEqual([put('w/a', '1', r1), put('w/b', '2', r2), del('w/a', r3)]);
      });

      it('delivers a commit as events sharing its revision, in op order', async () => {
        const events = collect('m/', await store.revision());
        const rev = await store.commit([{ op: 'put', key: 'm/2', value: 'b' }, { op: 'put', key: 'm/1', value: 'a' }]);
        await waitFor('2 events', () => events.length >= 2);
        expect(events).toEqual([put('m/2', 'b', rev), put('m/1', 'a', rev)]);
      });

      it('replays exactly the events after fromRevision, then goes live without gap or duplicate', async () => {
        await store.put('r/a', 'before');
        const from = await store.revision();
        const r1 = await store.put('r/a', 'missed-1');
        const r2 = await store.put('r/b', 'missed-2');
        await store.put('s/a', 'other prefix');
        const r3 = await store.revision();
        await store.delete('r/b');
        const r4 = await store.revision();
        const events = collect('r/', from);
        const r5 = await store.put('r/c', 'live');
        await waitFor('4 events', () => events.length >= 4);
        await sleep(30);
        expect(r3).toBeLessThan(r4);
        expect(events).toEqual([
          put('r/a', 'missed-1', r1), put('r/b', 'missed-2', r2), del('r/b', r4), put('r/c', 'live', r5),
        ]);
      });

      it('replays from revision 0 everything the store has seen', async () => {
        const r1 = await store.put('z/1', 'a');
        const r2 = await store.put('z/1', 'b');
        const events = collect('z/', 0);
        await waitFor('2 events', () => events.length >= 2);
        await sleep(30);
        expect(events).toEqual([put('z/1', 'a', r1), put('z/1', 'b', r2)]);
      });

      it('from a future revision delivers only changes after it', async () => {
        const now = await store.revision();
        const events = collect('f/', now + 1);
        await store.put('f/1', 'at now+1, not after it');
        const r2 = await store.put('f/2', 'after');
        await waitFor('1 event', () => events.length >= 1);
        await sleep(30);
        expect(events).toEqual([put('f/2', 'after', r2)]);
      });

      it('stops delivering after close, even events already queued', async () => {
        const events: WatchEvent[] = [];
        const w = store.watch('q/', await store.revision(), (e) => {
          events.push(e);
          w.close();
        });
        await store.commit([{ op: 'put', key: 'q/1', value: '1' }, { op: 'put', key: 'q/2', value: '2' }]);
        await store.put('q/3', '3');
        // A networked store delivers later than the write returns: wait for the first event, then
        // give the others time to (wrongly) arrive.
        await waitFor('the first event', () => events.length >= 1);
        await sleep(150);
        expect(events.map((e) => e.key)).toEqual(['q/1']);
      });

      it('lets a callback write to the store without deadlock', async () => {
        const seen: string[] = [];
        watches.push(store.watch('chain/', await store.revision(), (e) => {
          seen.push(e.key);
          const n = Number(e.key.slice('chain/'.length));
          if (e.type === 'put' && n < 5) void store.put(`chain/${n + 1}`, 'next');
        }));
        await store.put('chain/0', 'start');
        await waitFor('chain/5', async () => (await store.get('chain/5')) !== undefined);
        await waitFor('6 events', () => seen.length >= 6);
        expect(seen).toEqual(['chain/0', 'chain/1', 'chain/2', 'chain/3', 'chain/4', 'chain/5']);
      });
    });

    describe('leases', () => {
      it('deletes a key (with a delete event) when its lease is not kept alive', async () => {
        const lease = await store.grantLease(ttl);
        expect(lease.ttlMs).toBe(ttl);
        const events = collect('l/', await store.revision());
        await store.put('l/node', 'alive', { lease: lease.id });
        await store.put('l/plain', 'no lease');
        expect(await store.get('l/node')).toMatchObject({ value: 'alive', lease: lease.id });
        await sleep(ttl / 2);
        expect(await store.get('l/node')).toMatchObject({ value: 'alive' });
        await waitFor('lease expiry', async () => (await store.get('l/node')) === undefined, ttl * 4 + 2000);
        await waitFor('delete event', () => events.some((e) => e.type === 'delete'));
        expect(events.map((e) => [e.type, e.key])).toEqual([['put', 'l/node'], ['put', 'l/plain'], ['delete', 'l/node']]);
        expect(await store.get('l/plain')).toMatchObject({ value: 'no lease' });
      });

      it('keeps the key while keepAlive is called within the TTL', async () => {
        const lease = await store.grantLease(ttl);
        await store.put('l/kept', 'v', { lease: lease.id });
        const until = Date.now() + ttl * 2.5;
        while (Date.now() < until) {
          await sleep(ttl / 4);
          await lease.keepAlive();
        }
        expect(await store.get('l/kept')).toMatchObject({ value: 'v', lease: lease.id });
        await waitFor('expiry after keepAlive stops', async () => (await store.get('l/kept')) === undefined, ttl * 4 + 2000);
      });

      it('revoke deletes the lease keys at once and is idempotent', async () => {
        const lease = await store.grantLease(ttl * 20);
        const events = collect('lr/', await store.revision());
        await store.put('lr/1', 'a', { lease: lease.id });
        await store.put('lr/2', 'b', { lease: lease.id });
        await lease.revoke();
        expect(await store.list('lr/')).toEqual([]);
        await lease.revoke();
        await waitFor('2 delete events', () => events.filter((e) => e.type === 'delete').length >= 2);
        expect(events.filter((e) => e.type === 'delete').map((e) => e.key).sort()).toEqual(['lr/1', 'lr/2']);
        await expectCode(store.put('lr/3', 'c', { lease: lease.id }), 'NOT_FOUND');
        expect(await store.get('lr/3')).toBeUndefined();
      });

      it('keepAlive after expiry throws NOT_FOUND', async () => {
        const lease = await store.grantLease(ttl);
        await store.put('l/late', 'v', { lease: lease.id });
        await sleep(ttl + 300);
        await expectCode(lease.keepAlive(), 'NOT_FOUND');
        await waitFor('key gone', async () => (await store.get('l/late')) === undefined);
      });
    });
  });
}
