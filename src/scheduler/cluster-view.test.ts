import { describe, expect, it } from 'vitest';
import type { NodeInfo } from '../core/types.js';
import type { NodeStateChange, SandboxRepo } from '../service/sandbox-repo.js';
import { ClusterView } from './cluster-view.js';

function info(id: string, memoryMb = 4096): NodeInfo {
  return {
    id, name: id, address: '', status: 'alive', labels: {}, capacity: { cpus: 4, memoryMb, maxSandboxes: 0 },
    reserved: { cpus: 0, memoryMb: 0, sandboxes: 0 }, version: 't', runtimes: ['oci'], defaultRuntime: 'oci',
    resources: { diskBytes: 0, diskUsedBytes: 0 }, startedAt: '', heartbeatAt: '',
  } as unknown as NodeInfo;
}

/** A repo whose listing answers when the test says, and whose watch the test drives. */
function fakeRepo() {
  let emit: (c: NodeStateChange) => void = () => undefined;
  let answer: (all: NodeStateChange[]) => void = () => undefined;
  const repo = {
    watchNodeState: (_from: number, onChange: (c: NodeStateChange) => void) => {
      emit = onChange;
      return { close: () => undefined };
    },
    listNodeState: () => new Promise<NodeStateChange[]>((resolve) => (answer = resolve)),
  } as unknown as SandboxRepo;
  return { repo, emit: (c: NodeStateChange) => emit(c), answer: (all: NodeStateChange[]) => answer(all) };
}

const node = (id: string, revision: number, value?: NodeInfo): NodeStateChange => ({ kind: 'node', node: id, value, revision });
const member = (id: string, revision: number, alive = true): NodeStateChange => ({ kind: 'member', node: id, value: alive ? true : undefined, revision });
const reservation = (id: string, revision: number, sandboxes?: number): NodeStateChange =>
  ({ kind: 'reservation', node: id, value: sandboxes === undefined ? undefined : { cpus: sandboxes, memoryMb: 256 * sandboxes, sandboxes }, revision });

describe('ClusterView', () => {
  it('places nothing until its first listing is in', async () => {
    const f = fakeRepo();
    const view = new ClusterView(f.repo, () => undefined, () => undefined);
    const started = view.start(10);
    let alive: unknown;
    void view.alive().then((a) => (alive = a));
    await new Promise((r) => setTimeout(r, 10));
    expect(alive).toBeUndefined();
    f.answer([node('a', 3, info('a')), member('a', 4), reservation('a', 5, 2)]);
    await started;
    expect((await view.alive()).map((n) => [n.id, n.reserved.sandboxes, n.reservationRevision])).toEqual([['a', 2, 5]]);
  });

  it('keeps watch news newer than a listing that answers late, deletes included', async () => {
    const f = fakeRepo();
    const view = new ClusterView(f.repo, () => undefined, () => undefined);
    const started = view.start(10);
    // The watch delivers changes made after the listing was served but before its answer arrived.
    f.emit(reservation('a', 12, 3));
    f.emit(member('b', 13, false));
    f.answer([node('a', 3, info('a')), member('a', 4), reservation('a', 11, 2), node('b', 6, info('b')), member('b', 7)]);
    await started;
    const alive = await view.alive();
    expect(alive.map((n) => n.id)).toEqual(['a']);
    expect(alive[0]!.reserved.sandboxes).toBe(3);
    expect(alive[0]!.reservationRevision).toBe(12);
    expect(view.deadNodes()).toEqual(['b']);
  });

  it('holds the leader’s own commit at once and drops the watch’s older news of it', async () => {
    const f = fakeRepo();
    const view = new ClusterView(f.repo, () => undefined, () => undefined);
    const started = view.start(1);
    f.answer([node('a', 2, info('a')), member('a', 3)]);
    await started;
    view.committed([{ node: 'a', value: { cpus: 5, memoryMb: 1280, sandboxes: 5 } }], 20);
    f.emit(reservation('a', 18, 4));
    f.emit(reservation('a', 20, 5));
    const [a] = await view.alive();
    expect([a!.reserved.sandboxes, a!.reservationRevision]).toEqual([5, 20]);
    // A delete after it gave capacity back.
    f.emit(reservation('a', 21, 4));
    expect((await view.alive())[0]!.reservationRevision).toBe(21);
  });

  it('tells when a node’s member key goes, once', async () => {
    const f = fakeRepo();
    const gone: string[] = [];
    const view = new ClusterView(f.repo, (n) => gone.push(n), () => undefined);
    const started = view.start(1);
    f.answer([node('a', 2, info('a')), member('a', 3)]);
    await started;
    f.emit(member('a', 9, false));
    f.emit(member('a', 9, false));
    expect(gone).toEqual(['a']);
    expect(await view.alive()).toEqual([]);
  });

  it('refuses placement once closed, even before its listing answered', async () => {
    const f = fakeRepo();
    const view = new ClusterView(f.repo, () => undefined, () => undefined);
    void view.start(1);
    const pending = view.alive();
    view.close();
    await expect(pending).rejects.toMatchObject({ code: 'UNAVAILABLE' });
  });
});
