import type { Etcd3 } from 'etcd3';
import { PrismError } from '../../core/errors.js';
import type { ClusterMembers, EtcdMemberInfo } from '../../cluster/members.js';

type WireMember = { ID: string; name: string; peerURLs: string[]; clientURLs: string[]; isLearner?: boolean };

const toInfo = (m: WireMember): EtcdMemberInfo => ({ id: String(m.ID), name: m.name, peerUrls: m.peerURLs ?? [], clientUrls: m.clientURLs ?? [], learner: !!m.isLearner });

/** etcd's Cluster API (MemberAdd / Promote / Remove / List) on the store's own client. */
export class EtcdMembers implements ClusterMembers {
  constructor(private readonly client: Etcd3) {}

  async list(): Promise<EtcdMemberInfo[]> {
    const res = await this.#call(() => this.client.cluster.memberList({ linearizable: true } as never));
    return (res.members as WireMember[]).map(toInfo);
  }

  async addLearner(peerUrl: string): Promise<{ member: EtcdMemberInfo; members: EtcdMemberInfo[] }> {
    const res = await this.#call(() => this.client.cluster.memberAdd({ peerURLs: [peerUrl], isLearner: true }));
    return { member: toInfo(res.member as WireMember), members: (res.members as WireMember[]).map(toInfo) };
  }

  async promote(id: string): Promise<void> {
    await this.#call(() => this.client.cluster.memberPromote({ ID: id }));
  }

  async remove(id: string): Promise<void> {
    await this.#call(() => this.client.cluster.memberRemove({ ID: id }));
  }

  async #call<T>(f: () => Promise<T>): Promise<T> {
    // The client picks one endpoint per call: a dead member's fails at once, the next try goes elsewhere.
    for (let attempt = 1; ; attempt++) {
      try {
        return await f();
      } catch (e) {
        if (attempt < 5 && /UNAVAILABLE|DEADLINE_EXCEEDED|ECONNREFUSED|No connection established/i.test((e as Error).message ?? '')) {
          await new Promise((r) => setTimeout(r, 100 * attempt));
          continue;
        }
        throw translate(e);
      }
    }
  }
}

/** etcd's answers as the API's codes: "retry" where a retry helps. */
function translate(e: unknown): PrismError {
  const msg = (e as Error).message ?? String(e);
  if (/not in sync|learner/i.test(msg) && /promote/i.test(msg)) return new PrismError('FAILED_PRECONDITION', `etcd: ${msg}`, { cause: e, retryAfterSec: 1 });
  if (/Peer URLs already exists|peerURL exists/i.test(msg)) return new PrismError('ALREADY_EXISTS', `etcd: ${msg}`, { cause: e });
  if (/member not found|ID not found/i.test(msg)) return new PrismError('NOT_FOUND', `etcd: ${msg}`, { cause: e });
  if (/too many learner|unhealthy|not enough started members|re-configuration failed/i.test(msg)) return new PrismError('UNAVAILABLE', `etcd: ${msg}`, { cause: e, retryAfterSec: 1 });
  return new PrismError('UNAVAILABLE', `etcd membership call failed: ${msg}`, { cause: e });
}
