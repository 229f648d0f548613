import { describe, expect, it } from 'vitest';
import { PrismError } from '../core/errors.js';
import type { Reservation } from '../core/types.js';
import { SqliteStore } from '../store/sqlite/sqlite-store.js';
import type { CommitOp, Store } from '../store/store.js';
import { ReservationLedger } from './reservation-ledger.js';

const key = (node: string) => `/r/${node}`;
const one: Reservation = { cpus: 1, memoryMb: 256, sandboxes: 1 };
const reserved = async (store: Store, node: string) => JSON.parse((await store.get(key(node)))!.value) as Reservation;
const outcome = (p: Promise<void>) => p.then(() => 'ok', (e: unknown) => (e instanceof PrismError ? e.code : String(e)));

/** A store that counts commits and can move the reservation on just before the first one. */
function counting(store: Store, beforeFirstCommit?: () => Promise<void>) {
  const stats = { commits: 0 };
  const wrapped = Object.create(store) as Store;
  wrapped.commit = async (ops: CommitOp[]) => {
    if (stats.commits++ === 0) await beforeFirstCommit?.();
    return store.commit(ops);
  };
  return { store: wrapped, stats };
}

async function seed(store: Store, sandboxes: number): Promise<void> {
  await store.put(key('a'), JSON.stringify({ cpus: sandboxes, memoryMb: 256 * sandboxes, sandboxes }));
  for (let i = 0; i < sandboxes; i++) await store.put(`/sb/${i}`, 'x');
}

describe('ReservationLedger', () => {
  it('merges concurrent deletes of one node into one commit that frees all of them', async () => {
    const base = SqliteStore.open(':memory:');
    await seed(base, 10);
    const { store, stats } = counting(base);
    const release = new ReservationLedger(store, key);
    const revs = await Promise.all(Array.from({ length: 10 }, async (_, i) => (await base.get(`/sb/${i}`))!.modRevision));
    await Promise.all(revs.map((rev, i) => release.release('a', [{ op: 'delete', key: `/sb/${i}`, expectRevision: rev }], one)));
    expect(await base.list('/sb/')).toEqual([]);
    expect(await reserved(base, 'a')).toEqual({ cpus: 0, memoryMb: 0, sandboxes: 0 });
    // The first goes alone; the nine queued behind it go together.
    expect(stats.commits).toBe(2);
    await base.close();
  });

  it('sends the round again when only the reservation moved on, and loses nothing of that change', async () => {
    const base = SqliteStore.open(':memory:');
    await seed(base, 2);
    // A placement grows the reservation between the round's read and its commit.
    const { store } = counting(base, async () => {
      await base.put(key('a'), JSON.stringify({ cpus: 5, memoryMb: 1280, sandboxes: 5 }));
    });
    const release = new ReservationLedger(store, key);
    await release.release('a', [{ op: 'delete', key: '/sb/0' }], one);
    expect(await reserved(base, 'a')).toEqual({ cpus: 4, memoryMb: 1024, sandboxes: 4 });
    await base.close();
  });

  it('fails every delete of a round whose own comparison failed, and leaves everything as it was', async () => {
    const base = SqliteStore.open(':memory:');
    await seed(base, 3);
    const { store } = counting(base);
    const release = new ReservationLedger(store, key);
    const first = release.release('a', [{ op: 'delete', key: '/sb/0' }], one);
    const round = [
      release.release('a', [{ op: 'delete', key: '/sb/1' }], one),
      release.release('a', [{ op: 'delete', key: '/sb/2', expectRevision: 1 }], one), // stale
    ];
    expect(await outcome(first)).toBe('ok');
    expect(await Promise.all(round.map(outcome))).toEqual(['CONFLICT', 'CONFLICT']);
    expect((await base.list('/sb/')).map((kv) => kv.key)).toEqual(['/sb/1', '/sb/2']);
    expect(await reserved(base, 'a')).toEqual({ cpus: 2, memoryMb: 512, sandboxes: 2 });
    await base.close();
  });

  it('keeps deletes touching one key (a shared volume) in separate rounds', async () => {
    const base = SqliteStore.open(':memory:');
    await seed(base, 3);
    await base.put('/vol', '2');
    const { store, stats } = counting(base);
    const release = new ReservationLedger(store, key);
    await Promise.all([
      release.release('a', [{ op: 'delete', key: '/sb/0' }], one),
      release.release('a', [{ op: 'delete', key: '/sb/1' }, { op: 'put', key: '/vol', value: '1' }], one),
      release.release('a', [{ op: 'delete', key: '/sb/2' }, { op: 'put', key: '/vol', value: '0' }], one),
    ]);
    expect(stats.commits).toBe(3);
    expect((await base.get('/vol'))!.value).toBe('0');
    expect(await reserved(base, 'a')).toEqual({ cpus: 0, memoryMb: 0, sandboxes: 0 });
    await base.close();
  });

  it('claims add to the reservation in merged rounds, and a claim without room is refused alone, writing nothing', async () => {
    const base = SqliteStore.open(':memory:');
    await seed(base, 2);
    const { store, stats } = counting(base);
    const release = new ReservationLedger(store, key);
    // Room for 4 sandboxes: 2 are there, so of 4 claims the first 2 land and the last 2 are refused.
    const fits = (after: Reservation) => after.sandboxes <= 4;
    const results = await Promise.all(Array.from({ length: 4 }, (_, i) => outcome(release.claim('a', [{ op: 'put', key: `/new/${i}`, value: 'x', expectRevision: 0 }], one, fits))));
    expect(results).toEqual(['ok', 'ok', 'RESOURCE_EXHAUSTED', 'RESOURCE_EXHAUSTED']);
    expect((await base.list('/new/')).map((kv) => kv.key)).toEqual(['/new/0', '/new/1']);
    expect(await reserved(base, 'a')).toEqual({ cpus: 4, memoryMb: 1024, sandboxes: 4 });
    expect(stats.commits).toBe(2);
  });

  it('a claim counts the deletes of its round: capacity freed in the same commit is room', async () => {
    const base = SqliteStore.open(':memory:');
    await seed(base, 4);
    const release = new ReservationLedger(base, key);
    const rev = (await base.get('/sb/0'))!.modRevision;
    const fits = (after: Reservation) => after.sandboxes <= 4;
    // Queued behind a first claim (refused: the node is full), a delete and a claim share a round.
    const first = outcome(release.claim('a', [{ op: 'put', key: '/new/0', value: 'x', expectRevision: 0 }], one, fits));
    const freed = outcome(release.release('a', [{ op: 'delete', key: '/sb/0', expectRevision: rev }], one));
    const second = outcome(release.claim('a', [{ op: 'put', key: '/new/1', value: 'x', expectRevision: 0 }], one, fits));
    expect(await Promise.all([first, freed, second])).toEqual(['RESOURCE_EXHAUSTED', 'ok', 'ok']);
    expect(await reserved(base, 'a')).toEqual({ cpus: 4, memoryMb: 1024, sandboxes: 4 });
    expect((await base.list('/new/')).map((kv) => kv.key)).toEqual(['/new/1']);
  });

  it('a claim re-checks its room when the reservation moved on before its commit', async () => {
    const base = SqliteStore.open(':memory:');
    await seed(base, 3);
    // Another writer (the scheduler placing a sandbox here) takes the last slot just before the commit.
    const { store } = counting(base, () => base.put(key('a'), JSON.stringify({ cpus: 4, memoryMb: 1024, sandboxes: 4 })).then(() => undefined));
    const release = new ReservationLedger(store, key);
    const got = await outcome(release.claim('a', [{ op: 'put', key: '/new/0', value: 'x', expectRevision: 0 }], one, (after) => after.sandboxes <= 4));
    expect(got).toBe('RESOURCE_EXHAUSTED');
    expect(await base.list('/new/')).toEqual([]);
    expect(await reserved(base, 'a')).toEqual({ cpus: 4, memoryMb: 1024, sandboxes: 4 });
  });

  it('claims that check one key (the node\'s member key) share a round, the check sent once; a failed check writes nothing', async () => {
    const base = SqliteStore.open(':memory:');
    await seed(base, 0);
    const member = await base.put('/members/a', 'alive');
    const sent: CommitOp[][] = [];
    const wrapped = Object.create(base) as Store;
    wrapped.commit = (ops: CommitOp[]) => {
      sent.push(ops);
      return base.commit(ops);
    };
    const ledger = new ReservationLedger(wrapped, key);
    const fits = () => true;
    const claim = (i: number, rev: number) =>
      outcome(ledger.claim('a', [{ op: 'put', key: `/new/${i}`, value: 'x', expectRevision: 0 }, { op: 'check', key: '/members/a', expectRevision: rev }], one, fits));
    expect(await Promise.all([0, 1, 2, 3].map((i) => claim(i, member)))).toEqual(['ok', 'ok', 'ok', 'ok']);
    // The first goes alone, the three queued behind it together, their one check sent once.
    expect(sent.map((ops) => ops.filter((op) => op.op === 'check').length)).toEqual([1, 1]);
    expect(sent[1]!.filter((op) => op.op === 'put' && op.key.startsWith('/new/'))).toHaveLength(3);
    // The member key gone (the node declared dead): the claim's round is refused whole.
    await base.delete('/members/a');
    expect(await claim(4, member)).toBe('CONFLICT');
    expect((await base.list('/new/')).map((kv) => kv.key)).toEqual(['/new/0', '/new/1', '/new/2', '/new/3']);
    expect(await reserved(base, 'a')).toEqual({ cpus: 4, memoryMb: 1024, sandboxes: 4 });
    await base.close();
  });
});
