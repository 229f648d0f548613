import { PrismError, isPrismError } from '../core/errors.js';
import { canTransition } from '../core/lifecycle.js';
import type { ExecRecord, NodeInfo, Reservation, Sandbox, SandboxStatus, Snapshot } from '../core/types.js';
import type { TaskHandle } from '../runtime/driver.js';
import { GroupCommit } from '../store/group-commit.js';
import type { CommitOp, KeyValue, Lease, Store, Watch } from '../store/store.js';
import { ReservationLedger } from './reservation-ledger.js';
import { VolumeRepo } from './volume-repo.js';

/**
 * Key layout of Prism's state in the Store, and typed access to it. Every sandbox transition is a
 * compare-and-swap on the record's revision (see `update`), so two writers cannot both win.
 */
const K = {
  sandbox: (id: string) => `/prism/sandboxes/${id}`,
  sandboxes: '/prism/sandboxes/',
  name: (name: string) => `/prism/names/${name}`,
  node: (id: string) => `/prism/nodes/${id}`,
  nodes: '/prism/nodes/',
  /** Held under the node's lease: present while the node is alive. */
  member: (id: string) => `/prism/members/${id}`,
  members: '/prism/members/',
  /** Held under the leader's lease; its modRevision is the leader's term. */
  leader: '/prism/leader',
  /** What placement reserved on a node; only placement adds to it, only deletes take from it. */
  reservation: (node: string) => `/prism/reservations/${node}`,
  reservations: '/prism/reservations/',
  /** Task handles as keys of their own: the layout before they moved into the record; read once, to migrate them. */
  legacyHandle: (node: string, id: string) => `/prism/handles/${node}/${id}`,
  legacyHandles: (node: string) => `/prism/handles/${node}/`,
  exec: (sb: string, seq: number) => `/prism/execs/${sb}/${String(seq).padStart(12, '0')}`,
  execs: (sb: string) => `/prism/execs/${sb}/`,
  snapshot: (id: string) => `/prism/snapshots/${id}`,
  snapshots: '/prism/snapshots/',
};

/**
 * A write that failed with UNAVAILABLE or DEADLINE_EXCEEDED may or may not have been applied (the
 * Store contract): callers re-read and retry instead of giving up, e.g. while etcd elects a leader.
 */
function outcomeUnknown(e: unknown): boolean {
  return isPrismError(e, 'UNAVAILABLE') || isPrismError(e, 'DEADLINE_EXCEEDED');
}

const pause = (attempt: number) => new Promise((r) => setTimeout(r, Math.min(1000, 100 * (attempt + 1))));

/** What a direct create's one commit holds to (SandboxRepo.commitDirect). */
export interface DirectTerms {
  /** Whether the node's reservation with the sandbox added has room for it (ReservationLedger.claim). */
  fits(after: Reservation): boolean;
  /** The revision of the node's member key as the node last wrote it; undefined when not known (then read). */
  memberRevision(): number | undefined;
}

export interface Versioned<T> {
  value: T;
  revision: number;
}

function parse<T>(kv: KeyValue): Versioned<T> {
  return { value: JSON.parse(kv.value) as T, revision: kv.modRevision };
}

/**
 * A sandbox record as stored: once its node made its task, the task handle rides with the record, so a
 * create's last step is one key and the handle goes with the record. The value is the record's JSON,
 * then, once there is a task, a newline and the handle's JSON (JSON.stringify never writes a raw
 * newline): readers that want the record alone, every node's watch of every change, parse up to the
 * newline. The handle never leaves this module inside a Sandbox, and every rewrite of the record keeps
 * the handle it was read with.
 */
interface StoredSandbox extends Versioned<Sandbox> {
  task?: TaskHandle;
}

/** A stored sandbox value (see StoredSandbox) taken apart: the record, and its task handle if it has one. */
export function readSandboxValue(stored: string): { sandbox: Sandbox; task?: TaskHandle } {
  const nl = stored.indexOf('\n');
  if (nl < 0) return { sandbox: JSON.parse(stored) as Sandbox };
  return { sandbox: JSON.parse(stored.slice(0, nl)) as Sandbox, task: JSON.parse(stored.slice(nl + 1)) as TaskHandle };
}

/** The record alone, without parsing the task handle. */
function recordOf(stored: string): Sandbox {
  const nl = stored.indexOf('\n');
  return JSON.parse(nl < 0 ? stored : stored.slice(0, nl)) as Sandbox;
}

function parseStored(stored: string, revision: number): StoredSandbox {
  const { sandbox: value, task } = readSandboxValue(stored);
  return task ? { value, revision, task } : { value, revision };
}

function storedJson(sb: Sandbox, task: TaskHandle | undefined): string {
  return task ? `${JSON.stringify(sb)}\n${JSON.stringify(task)}` : JSON.stringify(sb);
}

const withoutTask = (s: StoredSandbox): Versioned<Sandbox> => ({ value: s.value, revision: s.revision });

/**
 * What placement knows of a node, key by key: its record, its member key (present while it is alive)
 * and its reservation. `value` is absent when the key was deleted; `revision` is the key's modRevision
 * (for a listing) or the change's revision (for a watch).
 */
export type NodeStateChange =
  | { kind: 'node'; node: string; value?: NodeInfo; revision: number }
  | { kind: 'member'; node: string; value?: true; revision: number }
  | { kind: 'reservation'; node: string; value?: Reservation; revision: number };

const NODE_STATE = ['node', 'member', 'reservation'] as const;
const NODE_STATE_PREFIX = { node: K.nodes, member: K.members, reservation: K.reservations };

function nodeStateChange(kind: NodeStateChange['kind'], key: string, value: string | undefined, revision: number): NodeStateChange {
  const node = key.slice(NODE_STATE_PREFIX[kind].length);
  if (value === undefined) return { kind, node, revision };
  if (kind === 'member') return { kind, node, value: true, revision };
  return kind === 'node' ? { kind, node, value: JSON.parse(value) as NodeInfo, revision } : { kind, node, value: JSON.parse(value) as Reservation, revision };
}

export class SandboxRepo {
  /** Volume records: a sandbox's attachments go in and out in the same commits as its own record. */
  readonly volumes: VolumeRepo;
  /**
   * The writes of a sandbox's own lifecycle (its record created, moved on, running), which concurrent
   * creates and deletes issue by the dozen: grouped into shared commits, each keeping its own comparisons.
   */
  private readonly group: GroupCommit;
  /** Deletes giving capacity back to one node, merged into one commit on its reservation key. */
  private readonly ledger: ReservationLedger;

  constructor(private readonly store: Store) {
    this.volumes = new VolumeRepo(store);
    this.group = new GroupCommit(store);
    this.ledger = new ReservationLedger(store, K.reservation);
  }

  async getSandbox(id: string): Promise<Versioned<Sandbox> | undefined> {
    const s = await this.getStored(id);
    return s && withoutTask(s);
  }

  private async getStored(id: string): Promise<StoredSandbox | undefined> {
    const kv = await this.store.get(K.sandbox(id));
    return kv && parseStored(kv.value, kv.modRevision);
  }

  private async listStored(): Promise<StoredSandbox[]> {
    return (await this.store.list(K.sandboxes)).map((kv) => parseStored(kv.value, kv.modRevision));
  }

  async idForName(name: string): Promise<string | undefined> {
    return (await this.store.get(K.name(name)))?.value;
  }

  async listSandboxesVersioned(): Promise<Versioned<Sandbox>[]> {
    return (await this.listStored()).map(withoutTask);
  }

  async listSandboxes(): Promise<Sandbox[]> {
    return (await this.listStored()).map((s) => s.value);
  }

  /** The records placed on `node`, each with its task handle once the node made the task. */
  async listOwn(node: string): Promise<{ sandbox: Sandbox; task?: TaskHandle }[]> {
    return (await this.listStored()).filter((s) => s.value.node === node).map((s) => (s.task ? { sandbox: s.value, task: s.task } : { sandbox: s.value }));
  }

  /**
   * Creates the record, claims its name and attaches its volumes atomically; ALREADY_EXISTS when the
   * name is taken, NOT_FOUND or CONFLICT from the volumes (see VolumeRepo.attachOps).
   */
  async createSandbox(sb: Sandbox): Promise<Versioned<Sandbox>> {
    for (let attempt = 0; ; attempt++) {
      const attach = await this.volumes.attachOps(sb);
      try {
        const rev = await this.group.commit([
          { op: 'put', key: K.name(sb.name), value: sb.id, expectRevision: 0 },
          { op: 'put', key: K.sandbox(sb.id), value: JSON.stringify(sb), expectRevision: 0 },
          ...attach,
        ]);
        return { value: sb, revision: rev };
      } catch (e) {
        if (isPrismError(e, 'CONFLICT')) {
          // An earlier attempt whose answer was lost may have written it: the id is ours alone.
          const mine = await this.getSandbox(sb.id);
          if (mine) return mine;
          // Not the name: one of the volumes changed since it was read; check the rules again.
          if (attach.length > 0 && (await this.idForName(sb.name)) === undefined && attempt < 20) continue;
          throw new PrismError('ALREADY_EXISTS', `a sandbox named '${sb.name}' already exists`);
        }
        if (!outcomeUnknown(e) || attempt >= 5) throw e;
        await pause(attempt);
      }
    }
  }

  /**
   * Read-modify-write with compare-and-swap, retried on conflict. `change` returns the new record,
   * or undefined to leave it as it is.
   */
  async update(id: string, change: (sb: Sandbox) => Sandbox | undefined): Promise<Sandbox> {
    const done = await this.rewrite(id, (cur) => {
      const next = change(structuredClone(cur.value));
      return next && { value: next, task: cur.task };
    });
    if (!done) throw new PrismError('NOT_FOUND', `sandbox '${id}' not found`);
    return done.value;
  }

  /**
   * Read-modify-write of the stored record (its task handle included), compare-and-swap, retried on
   * conflict. `change` returns what to store, or undefined to leave it; the answer is the record as it
   * now stands, undefined when it is gone.
   */
  private async rewrite(id: string, change: (cur: StoredSandbox) => { value: Sandbox; task?: TaskHandle } | undefined): Promise<{ value: Sandbox; task?: TaskHandle } | undefined> {
    for (let attempt = 0; attempt < 20; attempt++) {
      const cur = await this.getStored(id);
      if (!cur) return undefined;
      const next = change(cur);
      if (!next) return cur;
      try {
        await this.group.commit([{ op: 'put', key: K.sandbox(id), value: storedJson(next.value, next.task), expectRevision: cur.revision }]);
        return next;
      } catch (e) {
        // Unknown outcome: the next round re-reads, and a change that already applied applies as a no-op.
        if (outcomeUnknown(e)) await pause(attempt);
        else if (!isPrismError(e, 'CONFLICT')) throw e;
      }
    }
    throw new PrismError('CONFLICT', `sandbox '${id}' is being changed concurrently; try again`, { retryable: true });
  }

  /**
   * One lifecycle step (src/core/lifecycle.ts) as a compare-and-swap on the record as read in the same
   * loop: the status must be one of `from` when the write lands, and `from -> to` an edge of the table.
   * A status outside `from` is FAILED_PRECONDITION naming it (`quiet`: undefined instead, for writers
   * that only act when the record is still where they left it); NOT_FOUND when the record is gone.
   * Returns the record written with its revision.
   */
  async transition(
    id: string,
    from: readonly SandboxStatus[],
    to: SandboxStatus,
    patch: (sb: Sandbox) => Sandbox = (sb) => sb,
    opts: { quiet?: boolean } = {},
  ): Promise<Versioned<Sandbox> | undefined> {
    for (let attempt = 0; attempt < 20; attempt++) {
      const cur = await this.getStored(id);
      if (!cur) throw new PrismError('NOT_FOUND', `sandbox '${id}' not found`);
      const status = cur.value.status;
      if (!from.includes(status)) {
        if (opts.quiet) return undefined;
        throw new PrismError('FAILED_PRECONDITION', `sandbox '${cur.value.name}' is ${status}; this needs it ${from.join(' or ')}`);
      }
      if (!canTransition(status, to)) throw new PrismError('INTERNAL', `lifecycle: ${status} -> ${to} is not a transition`);
      const next: Sandbox = { ...patch(structuredClone(cur.value)), status: to };
      try {
        const revision = await this.group.commit([{ op: 'put', key: K.sandbox(id), value: storedJson(next, cur.task), expectRevision: cur.revision }]);
        return { value: next, revision };
      } catch (e) {
        // Unknown outcome: the next round re-reads; a step that already applied then fails `from`.
        if (outcomeUnknown(e)) {
          await pause(attempt);
          const again = await this.getSandbox(id);
          if (again && again.value.status === to && JSON.stringify(again.value) === JSON.stringify(next)) return again;
        } else if (!isPrismError(e, 'CONFLICT')) throw e;
      }
    }
    throw new PrismError('CONFLICT', `sandbox '${id}' is being changed concurrently; try again`, { retryable: true });
  }

  /**
   * Removes the record (its task handle with it), its name and its exec records, releases its volumes, and returns
   * the capacity placement reserved for it to its node, all in one commit (retried when the record or
   * a volume changed meanwhile). Concurrent deletes of one node's sandboxes share that commit
   * (ReservationLedger). `known`: the record as the caller just wrote it, saving the first read.
   */
  async deleteSandbox(sb: Sandbox, onlyIf: (cur: Sandbox) => boolean = () => true, known?: Versioned<Sandbox>): Promise<boolean> {
    const execs = await this.store.list(K.execs(sb.id));
    for (let attempt = 0; ; attempt++) {
      const cur = attempt === 0 && known?.value.id === sb.id ? known : await this.getSandbox(sb.id);
      if (!cur || !onlyIf(cur.value)) return false;
      const rec = cur.value;
      const ops: CommitOp[] = [
        { op: 'delete', key: K.sandbox(rec.id), expectRevision: cur.revision },
        { op: 'delete', key: K.name(rec.name) },
        ...execs.map((kv): CommitOp => ({ op: 'delete', key: kv.key })),
        ...(await this.volumes.detachOps(rec)),
      ];
      try {
        if (rec.node) await this.ledger.release(rec.node, ops, { cpus: rec.cpus, memoryMb: rec.memoryMb, sandboxes: 1 });
        else await this.store.commit(ops);
        return true;
      } catch (e) {
        if (attempt >= 50 || !(isPrismError(e, 'CONFLICT') || outcomeUnknown(e))) throw e;
        // The record or a volume changed meanwhile (or the answer was lost): read again and retry.
        await (outcomeUnknown(e) ? pause(attempt) : new Promise((r) => setTimeout(r, Math.random() * Math.min(200, 10 * (attempt + 1)))));
      }
    }
  }

  async putSnapshot(snap: Snapshot): Promise<void> {
    await this.store.put(K.snapshot(snap.id), JSON.stringify(snap));
  }

  async getSnapshot(id: string): Promise<Snapshot | undefined> {
    const kv = await this.store.get(K.snapshot(id));
    return kv ? (JSON.parse(kv.value) as Snapshot) : undefined;
  }

  async listSnapshots(): Promise<Snapshot[]> {
    return (await this.store.list(K.snapshots)).map((kv) => JSON.parse(kv.value) as Snapshot);
  }

  async deleteSnapshot(id: string): Promise<void> {
    await this.store.delete(K.snapshot(id));
  }

  async getReservation(node: string): Promise<Versioned<Reservation>> {
    const kv = await this.store.get(K.reservation(node));
    return kv ? parse<Reservation>(kv) : { value: { cpus: 0, memoryMb: 0, sandboxes: 0 }, revision: 0 };
  }

  /**
   * The scheduler's one transaction per batch: every placed (or refused) sandbox moves on from the
   * revision the scheduler read, every touched node's reservation grows from the revision it read, and
   * the leader key must still be the one this leader wrote. CONFLICT when any of it changed. Placement
   * only writes records no node has made a task for (`pending`, new), so there is no handle to keep. Returns the
   * revision it landed at (every key it wrote now has that modRevision).
   */
  async commitPlacement(
    leaderRevision: number,
    sandboxes: Versioned<Sandbox>[],
    reservations: { node: string; value: Reservation; revision: number }[],
    /** New sandboxes among `sandboxes` (revision 0): their names are claimed in the same commit. */
    named: Sandbox[] = [],
  ): Promise<number> {
    const ops: CommitOp[] = [{ op: 'check', key: K.leader, expectRevision: leaderRevision }];
    for (const sb of named) ops.push({ op: 'put', key: K.name(sb.name), value: sb.id, expectRevision: 0 });
    for (const s of sandboxes) ops.push({ op: 'put', key: K.sandbox(s.value.id), value: JSON.stringify(s.value), expectRevision: s.revision });
    for (const r of reservations) ops.push({ op: 'put', key: K.reservation(r.node), value: JSON.stringify(r.value), expectRevision: r.revision });
    return this.store.commit(ops);
  }

  /**
   * A finished create: the `running` record with its task handle in it, one key, provided the record is
   * still at `expectRevision` (CONFLICT when it changed, e.g. a delete meanwhile; NOT_FOUND when gone).
   */
  async commitRunning(handle: TaskHandle, sb: Sandbox, expectRevision: number): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      try {
        await this.group.commit([{ op: 'put', key: K.sandbox(sb.id), value: storedJson(sb, handle), expectRevision }]);
        return;
      } catch (e) {
        if (isPrismError(e, 'CONFLICT')) {
          const cur = await this.getSandbox(sb.id);
          if (!cur) throw new PrismError('NOT_FOUND', `sandbox '${sb.id}' was deleted while it was being created`);
          // An earlier attempt whose answer was lost may have applied it.
          if (cur.value.status === 'running' && cur.value.startedAt === sb.startedAt) return;
          throw e;
        }
        if (!outcomeUnknown(e) || attempt >= 5) throw e;
        await pause(attempt);
      }
    }
  }

  /**
   * A direct create's only write (direct-create.ts): the `running` record with its handle, its name,
   * and `sb`'s share added to its node's reservation, in one commit merged with the node's other claims
   * and releases. The commit also compares the node's member key: a node the cluster has declared dead
   * (its lease ran out, the scheduler marks its sandboxes `lost`) cannot add a `running` sandbox.
   * RESOURCE_EXHAUSTED when `terms.fits` refuses the reservation with it added, ALREADY_EXISTS when the
   * name is taken, UNAVAILABLE when the node is not a live member; nothing is written then.
   */
  async commitDirect(handle: TaskHandle, sb: Sandbox, terms: DirectTerms): Promise<void> {
    let member = terms.memberRevision();
    for (let attempt = 0; ; attempt++) {
      member ??= await this.memberRevision(sb.node);
      const ops: CommitOp[] = [
        { op: 'put', key: K.name(sb.name), value: sb.id, expectRevision: 0 },
        { op: 'put', key: K.sandbox(sb.id), value: storedJson(sb, handle), expectRevision: 0 },
        { op: 'check', key: K.member(sb.node), expectRevision: member },
      ];
      try {
        await this.ledger.claim(sb.node, ops, { cpus: sb.cpus, memoryMb: sb.memoryMb, sandboxes: 1 }, terms.fits);
        return;
      } catch (e) {
        if (isPrismError(e, 'CONFLICT')) {
          // The round was refused for one of its commits' comparisons: ours if the name is taken, if an
          // earlier attempt whose answer was lost wrote the record already, or if the member key changed
          // (gone: the node is dead to the cluster; written again: re-announced or rejoined, still alive).
          if ((await this.getStored(sb.id))?.value.startedAt === sb.startedAt) return;
          const owner = await this.idForName(sb.name);
          if (owner !== undefined && owner !== sb.id) throw new PrismError('ALREADY_EXISTS', `a sandbox named '${sb.name}' already exists`);
          member = await this.memberRevision(sb.node);
          if (attempt >= 20) throw e;
          continue;
        }
        if (!outcomeUnknown(e) || attempt >= 5) throw e;
        await pause(attempt);
      }
    }
  }

  /** The revision of `node`'s member key; UNAVAILABLE when there is none (the node is not a live member). */
  private async memberRevision(node: string): Promise<number> {
    const kv = await this.store.get(K.member(node));
    if (!kv) {
      throw new PrismError('UNAVAILABLE', `node ${node} is not a live member of the cluster (its lease ran out); the sandbox was not created, try again`, { retryable: true });
    }
    return kv.modRevision;
  }

  /** The task handle of a sandbox placed on `node`, once the node made its task. */
  async getHandle(node: string, id: string): Promise<TaskHandle | undefined> {
    const s = await this.getStored(id);
    return s?.value.node === node ? s.task : undefined;
  }

  /**
   * Takes the task handle out of the record (its task is gone), keeping the rest; false when the
   * record is gone or belongs to another node.
   */
  async clearTask(node: string, id: string): Promise<boolean> {
    const done = await this.rewrite(id, (cur) => (cur.value.node === node && cur.task ? { value: cur.value } : undefined));
    return done?.value.node === node;
  }

  /**
   * Task handles this node stored under keys of their own (before they moved into the record). Each
   * is moved into its record when the record is this node's and holds none; the ones left (no such
   * record) are returned for the caller to destroy their tasks and then `dropLegacyHandle`.
   */
  async migrateLegacyHandles(node: string): Promise<TaskHandle[]> {
    const orphans: TaskHandle[] = [];
    for (const kv of await this.store.list(K.legacyHandles(node))) {
      const h = JSON.parse(kv.value) as TaskHandle;
      for (let attempt = 0; ; attempt++) {
        const cur = await this.getStored(h.id);
        if (cur?.task) {
          // The record holds its handle already: the old key is stale.
          await this.store.delete(kv.key);
          break;
        }
        if (!cur || cur.value.node !== node) {
          orphans.push(h);
          break;
        }
        try {
          await this.store.commit([
            { op: 'put', key: K.sandbox(h.id), value: storedJson(cur.value, h), expectRevision: cur.revision },
            { op: 'delete', key: kv.key, expectRevision: kv.modRevision },
          ]);
          break;
        } catch (e) {
          if (attempt >= 20 || !(isPrismError(e, 'CONFLICT') || outcomeUnknown(e))) throw e;
          await pause(attempt);
        }
      }
    }
    return orphans;
  }

  async dropLegacyHandle(node: string, id: string): Promise<void> {
    await this.store.delete(K.legacyHandle(node, id));
  }

  async putNode(node: NodeInfo): Promise<void> {
    await this.store.put(K.node(node.id), JSON.stringify(node));
  }

  async deleteNode(id: string): Promise<void> {
    await this.store.commit([{ op: 'delete', key: K.node(id) }, { op: 'delete', key: K.reservation(id) }]);
  }

  /** Node records with their liveness (a member key under a live lease) and reservations joined in. */
  async listNodes(): Promise<NodeInfo[]> {
    return (await this.listNodesWithReservations()).map((n) => n.node);
  }

  /** listNodes, with the revision each node's reservation was read at (0: none yet), for placement's CAS. */
  async listNodesWithReservations(): Promise<{ node: NodeInfo; reservationRevision: number }[]> {
    const records: Versioned<NodeInfo>[] = [];
    const alive = new Set<string>();
    const reserved = new Map<string, Versioned<Reservation>>();
    for (const c of await this.listNodeState()) {
      if (c.kind === 'node') records.push({ value: c.value!, revision: c.revision });
      else if (c.kind === 'member') alive.add(c.node);
      else reserved.set(c.node, { value: c.value!, revision: c.revision });
    }
    return records.map(({ value: n }) => {
      const r = reserved.get(n.id);
      return {
        // A sandbox's record holds its reservation from its placement to its delete, so the count of
        // sandboxes on the node is the reservation's.
        node: { ...n, status: alive.has(n.id) ? 'alive' : 'dead', reserved: r?.value ?? { cpus: 0, memoryMb: 0, sandboxes: 0 }, sandboxes: r?.value.sandboxes ?? 0 },
        reservationRevision: r?.revision ?? 0,
      };
    });
  }

  /** Every node record, member key and reservation as it is now, each with its modRevision. */
  async listNodeState(): Promise<NodeStateChange[]> {
    const lists = await Promise.all(NODE_STATE.map(async (kind) => ({ kind, kvs: await this.store.list(NODE_STATE_PREFIX[kind]) })));
    return lists.flatMap(({ kind, kvs }) => kvs.map((kv) => nodeStateChange(kind, kv.key, kv.value, kv.modRevision)));
  }

  /**
   * Every change to node records, member keys and reservations after `fromRevision` (one Store watch
   * each; closing the returned watch closes all three). `onError` as for Store.watch.
   */
  watchNodeState(fromRevision: number, onChange: (c: NodeStateChange) => void, onError?: (e: PrismError) => void): Watch {
    const watches = NODE_STATE.map((kind) =>
      this.store.watch(NODE_STATE_PREFIX[kind], fromRevision, (e) => onChange(nodeStateChange(kind, e.key, e.value, e.revision)), onError));
    return { close: () => watches.forEach((w) => w.close()) };
  }

  /** Announces the node alive for as long as `lease` lives; returns the member key's revision. */
  async putMember(id: string, address: string, lease: Lease): Promise<number> {
    return this.store.put(K.member(id), JSON.stringify({ address, at: new Date().toISOString() }), { lease: lease.id });
  }

  async isMember(id: string): Promise<boolean> {
    return (await this.store.get(K.member(id))) !== undefined;
  }

  /** Takes leadership if nobody holds it; returns the term (the leader key's revision) or undefined. */
  async campaign(nodeId: string, lease: Lease): Promise<number | undefined> {
    try {
      return await this.store.put(K.leader, nodeId, { expectRevision: 0, lease: lease.id });
    } catch (e) {
      if (isPrismError(e, 'CONFLICT')) return undefined;
      throw e;
    }
  }

  /** Moves the leader key from a dead incarnation of `nodeId` to its new lease. */
  async takeOverLeadership(nodeId: string, lease: Lease, revision: number): Promise<number | undefined> {
    try {
      return await this.store.put(K.leader, nodeId, { expectRevision: revision, lease: lease.id });
    } catch (e) {
      if (isPrismError(e, 'CONFLICT')) return undefined;
      throw e;
    }
  }

  grantLease(ttlMs: number): Promise<Lease> {
    return this.store.grantLease(ttlMs);
  }

  async leader(): Promise<{ node: string; revision: number } | undefined> {
    const kv = await this.store.get(K.leader);
    return kv && { node: kv.value, revision: kv.modRevision };
  }

  /** Gives up leadership if `term` is still the current one. */
  async resign(term: number): Promise<void> {
    await this.store.delete(K.leader, { expectRevision: term }).catch(() => undefined);
  }

  async revision(): Promise<number> {
    return this.store.revision();
  }

  /** Every change to sandbox records after `fromRevision`; `sb` is absent for deletes. */
  watchSandboxes(
    fromRevision: number,
    onChange: (id: string, sb: Sandbox | undefined, revision: number) => void,
    onError?: (e: PrismError) => void,
  ): Watch {
    return this.store.watch(K.sandboxes, fromRevision, (e) => {
      const id = e.key.slice(K.sandboxes.length);
      onChange(id, e.type === 'put' ? recordOf(e.value!) : undefined, e.revision);
    }, onError);
  }

  /** Liveness changes: `alive` false when a node's lease ran out or it left; `revision` of the change. */
  watchMembers(fromRevision: number, onChange: (node: string, alive: boolean, revision: number) => void, onError?: (e: PrismError) => void): Watch {
    return this.store.watch(K.members, fromRevision, (e) => onChange(e.key.slice(K.members.length), e.type === 'put', e.revision), onError);
  }

  watchLeader(fromRevision: number, onChange: (leader: string | undefined) => void, onError?: (e: PrismError) => void): Watch {
    return this.store.watch(K.leader, fromRevision, (e) => {
      if (e.key === K.leader) onChange(e.type === 'put' ? e.value : undefined);
    }, onError);
  }

  /**
   * Appends an exec record, keeping at most `keep` per sandbox (oldest dropped). Sequence numbers are
   * claimed with create-only puts, so concurrent execs never overwrite each other's records.
   */
  async appendExec(rec: ExecRecord, keep: number): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      const existing = await this.store.list(K.execs(rec.sandboxId));
      const last = existing.at(-1);
      const seq = last ? Number(last.key.slice(last.key.lastIndexOf('/') + 1)) + 1 : 1;
      const ops: CommitOp[] = [
        { op: 'put', key: K.exec(rec.sandboxId, seq), value: JSON.stringify(rec), expectRevision: 0 },
      ];
      for (const old of existing.slice(0, Math.max(0, existing.length + 1 - keep))) {
        ops.push({ op: 'delete', key: old.key, expectRevision: old.modRevision });
      }
      try {
        await this.store.commit(ops);
        return;
      } catch (e) {
        if (!isPrismError(e, 'CONFLICT') || attempt >= 100) throw e;
        // Concurrent execs of one sandbox race for the next sequence number: back off a little.
        await new Promise((r) => setTimeout(r, Math.random() * Math.min(50, 2 + attempt * 2)));
      }
    }
  }

  async listExecs(sandboxId: string): Promise<ExecRecord[]> {
    return (await this.store.list(K.execs(sandboxId))).map((kv) => parse<ExecRecord>(kv).value);
  }
}
