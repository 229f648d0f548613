import { PrismError, isPrismError } from '../core/errors.js';
import type { ExecRecord, NodeInfo, Sandbox } from '../core/types.js';
import type { TaskHandle } from '../runtime/driver.js';
import type { CommitOp, KeyValue, Store } from '../store/store.js';

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
  handle: (node: string, id: string) => `/prism/handles/${node}/${id}`,
  handles: (node: string) => `/prism/handles/${node}/`,
  exec: (sb: string, seq: number) => `/prism/execs/${sb}/${String(seq).padStart(12, '0')}`,
  execs: (sb: string) => `/prism/execs/${sb}/`,
};

export interface Versioned<T> {
  value: T;
  revision: number;
}

function parse<T>(kv: KeyValue): Versioned<T> {
  return { value: JSON.parse(kv.value) as T, revision: kv.modRevision };
}

export class SandboxRepo {
  constructor(private readonly store: Store) {}

  async getSandbox(id: string): Promise<Versioned<Sandbox> | undefined> {
    const kv = await this.store.get(K.sandbox(id));
    return kv && parse<Sandbox>(kv);
  }

  async idForName(name: string): Promise<string | undefined> {
    return (await this.store.get(K.name(name)))?.value;
  }

  async listSandboxes(): Promise<Sandbox[]> {
    return (await this.store.list(K.sandboxes)).map((kv) => parse<Sandbox>(kv).value);
  }

  /** Creates the record and claims its name atomically; ALREADY_EXISTS when the name is taken. */
  async createSandbox(sb: Sandbox): Promise<Versioned<Sandbox>> {
    try {
      const rev = await this.store.commit([
        { op: 'put', key: K.name(sb.name), value: sb.id, expectRevision: 0 },
        { op: 'put', key: K.sandbox(sb.id), value: JSON.stringify(sb), expectRevision: 0 },
      ]);
      return { value: sb, revision: rev };
    } catch (e) {
      if (isPrismError(e, 'CONFLICT')) {
        throw new PrismError('ALREADY_EXISTS', `a sandbox named '${sb.name}' already exists`);
      }
      throw e;
    }
  }

  /**
   * Read-modify-write with compare-and-swap, retried on conflict. `change` returns the new record,
   * or undefined to leave it as it is.
   */
  async update(id: string, change: (sb: Sandbox) => Sandbox | undefined): Promise<Sandbox> {
    for (let attempt = 0; attempt < 20; attempt++) {
      const cur = await this.getSandbox(id);
      if (!cur) throw new PrismError('NOT_FOUND', `sandbox '${id}' not found`);
      const next = change(structuredClone(cur.value));
      if (!next) return cur.value;
      try {
        await this.store.put(K.sandbox(id), JSON.stringify(next), { expectRevision: cur.revision });
        return next;
      } catch (e) {
        if (!isPrismError(e, 'CONFLICT')) throw e;
      }
    }
    throw new PrismError('CONFLICT', `sandbox '${id}' is being changed concurrently; try again`, { retryable: true });
  }

  /** Removes the record, its name, its handle and its exec records. */
  async deleteSandbox(sb: Sandbox): Promise<void> {
    const ops: CommitOp[] = [
      { op: 'delete', key: K.sandbox(sb.id) },
      { op: 'delete', key: K.name(sb.name) },
      { op: 'delete', key: K.handle(sb.node, sb.id) },
    ];
    for (const kv of await this.store.list(K.execs(sb.id))) ops.push({ op: 'delete', key: kv.key });
    await this.store.commit(ops);
  }

  async putHandle(node: string, handle: TaskHandle): Promise<void> {
    await this.store.put(K.handle(node, handle.id), JSON.stringify(handle));
  }

  async deleteHandle(node: string, id: string): Promise<void> {
    await this.store.delete(K.handle(node, id));
  }

  async getHandle(node: string, id: string): Promise<TaskHandle | undefined> {
    const kv = await this.store.get(K.handle(node, id));
    return kv && (JSON.parse(kv.value) as TaskHandle);
  }

  async listHandles(node: string): Promise<TaskHandle[]> {
    return (await this.store.list(K.handles(node))).map((kv) => JSON.parse(kv.value) as TaskHandle);
  }

  async putNode(node: NodeInfo, lease?: string): Promise<void> {
    await this.store.put(K.node(node.id), JSON.stringify(node), lease ? { lease } : undefined);
  }

  async listNodes(): Promise<NodeInfo[]> {
    return (await this.store.list(K.nodes)).map((kv) => parse<NodeInfo>(kv).value);
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
