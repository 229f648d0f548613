import { PrismError, isPrismError } from '../core/errors.js';
import type { Sandbox, Volume } from '../core/types.js';
import type { CommitOp, KeyValue, Store } from '../store/store.js';
import { checkAttach, detached } from './volume-rules.js';

/**
 * Volume records in the Store, `/prism/volumes/<name>`. A sandbox's attachments are written in the
 * same commit as its own record (create) and its removal (delete), each a compare-and-swap on the
 * volume's revision, so two sandboxes can never both take a volume the rules give to one, and no
 * attachment outlives its sandbox.
 */
const PREFIX = '/prism/volumes/';
const key = (name: string) => `${PREFIX}${name}`;

export interface VersionedVolume {
  value: Volume;
  revision: number;
}

function parse(kv: KeyValue): VersionedVolume {
  return { value: JSON.parse(kv.value) as Volume, revision: kv.modRevision };
}

export class VolumeRepo {
  constructor(private readonly store: Store) {}

  async get(name: string): Promise<VersionedVolume | undefined> {
    const kv = await this.store.get(key(name));
    return kv && parse(kv);
  }

  async list(): Promise<Volume[]> {
    return (await this.store.list(PREFIX)).map((kv) => parse(kv).value);
  }

  /** ALREADY_EXISTS when a volume of that name exists anywhere in the cluster. */
  async create(v: Volume): Promise<void> {
    try {
      await this.store.put(key(v.name), JSON.stringify(v), { expectRevision: 0 });
    } catch (e) {
      if (isPrismError(e, 'CONFLICT')) throw new PrismError('ALREADY_EXISTS', `a volume named '${v.name}' already exists`);
      throw e;
    }
  }

  /** Removes the record if it is still at `revision`; CONFLICT otherwise (an attach came first). */
  async delete(name: string, revision: number): Promise<void> {
    await this.store.delete(key(name), { expectRevision: revision });
  }

  /**
   * The writes that attach `sb` to its volumes, each checked against the volume's current record:
   * NOT_FOUND for a missing volume, CONFLICT when the attach rules refuse (volume-rules.ts).
   */
  async attachOps(sb: Sandbox): Promise<CommitOp[]> {
    const ops: CommitOp[] = [];
    for (const m of sb.volumes ?? []) {
      const cur = await this.get(m.name);
      if (!cur) throw new PrismError('NOT_FOUND', `volume '${m.name}' not found`);
      const att = { sandboxId: sb.id, mountPath: m.mountPath, readOnly: m.readOnly, runtime: sb.runtime };
      checkAttach(cur.value, att);
      const next: Volume = { ...cur.value, attachments: [...detached(cur.value, sb.id).attachments, att] };
      if (sb.runtime === 'microvm' && !m.readOnly) next.needsCheck = true;
      ops.push({ op: 'put', key: key(m.name), value: JSON.stringify(next), expectRevision: cur.revision });
    }
    return ops;
  }

  /** Clears `needsCheck` if the record is still at `revision`; CONFLICT otherwise. */
  async markChecked(v: VersionedVolume): Promise<void> {
    const next: Volume = { ...v.value };
    delete next.needsCheck;
    await this.store.put(key(v.value.name), JSON.stringify(next), { expectRevision: v.revision });
  }

  /** The writes that release `sb`'s attachments (volumes already gone or not holding it need none). */
  async detachOps(sb: Sandbox): Promise<CommitOp[]> {
    const ops: CommitOp[] = [];
    for (const m of sb.volumes ?? []) {
      const cur = await this.get(m.name);
      if (!cur || !cur.value.attachments.some((a) => a.sandboxId === sb.id)) continue;
      ops.push({ op: 'put', key: key(m.name), value: JSON.stringify(detached(cur.value, sb.id)), expectRevision: cur.revision });
    }
    return ops;
  }
}
