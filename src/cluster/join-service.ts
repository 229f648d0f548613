import { randomBytes, timingSafeEqual } from 'node:crypto';
import { PrismError } from '../core/errors.js';
import type { Logger } from '../service/logger.js';
import type { Store } from '../store/store.js';
import { memberHealthy, memberServes } from './etcd-member.js';
import { tlsFetch, type MemberTls } from './etcd-http.js';
import type { ClusterMembers, EtcdMemberInfo } from './members.js';

/**
 * The cluster's side of `prismd --join`: a node presenting the join token asks any node to let it in.
 * While the cluster has fewer voting etcd members than `voters`, the newcomer is added as a learner
 * (it replicates, does not vote) and promoted once it has caught up; beyond that it joins as an etcd
 * client only. etcd accepts one learner at a time, so of two nodes joining at once one is told to
 * retry (UNAVAILABLE with retryAfterSec), and its own prismd does.
 */

const JOIN_TOKEN_KEY = '/prism/cluster/join-token';
const CLUSTER_TOKEN_KEY = '/prism/cluster/etcd-cluster-token';

export interface JoinRequest {
  name: string;
  /** The new member's peer and client URLs (http://host:port). */
  peerUrl: string;
  clientUrl: string;
}

export interface JoinAnswer {
  /** `voter`: start a member with `initialCluster`, then ask for promotion; `client`: use `endpoints`. */
  role: 'voter' | 'client';
  memberId?: string;
  initialCluster?: string;
  clusterToken: string;
  /** Client URLs of the voting members: the store endpoints. */
  endpoints: string[];
}

export interface MemberHealth extends EtcdMemberInfo {
  healthy: boolean;
}

export class ClusterJoin {
  constructor(
    private readonly store: Store,
    /** Absent on a cluster on an etcd the user runs (`--store etcd://`): nodes join as clients. */
    private readonly members: ClusterMembers | undefined,
    private readonly opts: {
      voters: number;
      log: Logger;
      externalEndpoints?: string[];
      tls?: MemberTls;
      /** Called (and awaited, its failure ignored) after this node changed the membership. */
      onMembershipChange?: () => Promise<void>;
    },
  ) {
    this.#fetch = tlsFetch(opts.tls);
  }

  readonly #fetch: typeof fetch;

  /** The cluster's join token, made on first use (`prismctl cluster join-token`). */
  async joinToken(): Promise<string> {
    const cur = await this.store.get(JOIN_TOKEN_KEY);
    if (cur) return cur.value;
    const token = `prism_join_${randomBytes(24).toString('base64url')}`;
    try {
      await this.store.put(JOIN_TOKEN_KEY, token, { expectRevision: 0 });
      return token;
    } catch (e) {
      const again = await this.store.get(JOIN_TOKEN_KEY);
      if (again) return again.value; // another node made it first
      throw e;
    }
  }

  /**
   * Replaces the join token: the old one stops opening the cluster at once (nodes that joined keep
   * their place; a restart does not need it).
   */
  async rotateJoinToken(): Promise<string> {
    const token = `prism_join_${randomBytes(24).toString('base64url')}`;
    await this.store.put(JOIN_TOKEN_KEY, token);
    this.opts.log.info({}, 'the join token was replaced');
    return token;
  }

  /** The etcd cluster token of managed members, recorded by `--cluster-init`. */
  async recordClusterToken(token: string): Promise<void> {
    if (!(await this.store.get(CLUSTER_TOKEN_KEY))) await this.store.put(CLUSTER_TOKEN_KEY, token).catch(() => undefined);
  }

  /** UNAUTHENTICATED unless `presented` is the join token (checked before a join request's body is read). */
  async verifyJoinToken(presented: string): Promise<void> {
    return this.#verify(presented);
  }

  async #verify(presented: string): Promise<void> {
    const cur = await this.store.get(JOIN_TOKEN_KEY);
    const want = Buffer.from(cur?.value ?? '');
    const got = Buffer.from(presented);
    if (!cur || want.length !== got.length || !timingSafeEqual(want, got)) {
      throw new PrismError('UNAUTHENTICATED', 'the join token is wrong (get it with prismctl cluster join-token)');
    }
  }

  async join(token: string, req: JoinRequest): Promise<JoinAnswer> {
    await this.#verify(token);
    const clusterToken = (await this.store.get(CLUSTER_TOKEN_KEY))?.value ?? '';
    if (!this.members) return { role: 'client', clusterToken, endpoints: this.opts.externalEndpoints ?? [] };
    const members = await this.members.list();
    const endpoints = voterEndpoints(members);
    const same = members.find((m) => m.peerUrls.includes(req.peerUrl));
    if (same && same.name && same.name !== req.name) {
      throw new PrismError('ALREADY_EXISTS', `member '${same.name}' already uses the peer URL ${req.peerUrl}: pick another --etcd-peer`);
    }
    const named = members.find((m) => m.name === req.name && !m.peerUrls.includes(req.peerUrl));
    if (named) throw new PrismError('ALREADY_EXISTS', `an etcd member named '${req.name}' is already in the cluster (${named.peerUrls.join(', ')}): remove that node first (prismctl node rm) or pick another --name`);
    if (same) {
      // A retry of a join whose answer was lost: the learner is already there.
      return { role: 'voter', memberId: same.id, initialCluster: initialCluster(members, req), clusterToken, endpoints };
    }
    if (members.length >= this.opts.voters) return { role: 'client', clusterToken, endpoints };
    let added;
    try {
      added = await this.members.addLearner(req.peerUrl);
    } catch (e) {
      if (e instanceof PrismError && e.code === 'UNAVAILABLE') {
        throw new PrismError('UNAVAILABLE', `another node is joining the cluster right now (${e.message}); try again`, { retryAfterSec: 2, cause: e });
      }
      throw e;
    }
    this.opts.log.info({ member: added.member.id, name: req.name, peer: req.peerUrl }, 'added an etcd learner for a joining node');
    return { role: 'voter', memberId: added.member.id, initialCluster: initialCluster(added.members, req), clusterToken, endpoints };
  }

  /** Which cluster this is (its etcd cluster token): a restarting node checks it is still the one it joined. */
  async identity(token: string): Promise<{ clusterToken: string }> {
    await this.#verify(token);
    return { clusterToken: (await this.store.get(CLUSTER_TOKEN_KEY))?.value ?? '' };
  }

  async promote(token: string, memberId: string): Promise<void> {
    await this.#verify(token);
    if (!this.members) throw new PrismError('FAILED_PRECONDITION', 'this cluster runs on an etcd prismd does not manage: nothing to promote');
    await this.members.promote(memberId);
    this.opts.log.info({ member: memberId }, 'promoted a joining etcd member to voter');
    await this.#changed();
  }

  async #changed(): Promise<void> {
    await this.opts.onMembershipChange?.().catch(() => undefined);
  }

  /** Undoes a join that failed half-way: removes the member while it is still a learner. */
  async abort(token: string, memberId: string): Promise<void> {
    await this.#verify(token);
    if (!this.members) return;
    const m = (await this.members.list()).find((x) => x.id === memberId);
    if (!m) return;
    if (!m.learner) throw new PrismError('FAILED_PRECONDITION', `member ${memberId} (${m.name}) already votes: remove its node with prismctl node rm`);
    await this.members.remove(memberId);
    this.opts.log.warn({ member: memberId }, 'removed the etcd learner of a join that failed');
    await this.#changed();
  }

  /** The etcd members as they are now (none on an etcd prismd does not manage); remembered for `outage`. */
  async memberList(): Promise<EtcdMemberInfo[]> {
    if (!this.members) return [];
    return (this.#known = await this.members.list());
  }

  /** Members with their health (`prismctl cluster members`, `prismctl info`). */
  async list(): Promise<MemberHealth[]> {
    const members = await this.memberList();
    return Promise.all(members.map(async (m) => ({ ...m, healthy: m.clientUrls.length > 0 && (await memberHealthy(m.clientUrls[0]!, this.#fetch)) })));
  }

  /**
   * Why the store does not answer, when it is this cluster's own members: which voting members do not
   * answer their health check, against the quorum needed. Undefined when all answer (or none is known).
   */
  async outage(): Promise<string | undefined> {
    if (!this.members) return undefined;
    const now = Date.now();
    if (this.#lastOutage && now - this.#lastOutage.at < 2000) return this.#lastOutage.text;
    let text: string | undefined;
    try {
      // A member answers the member list from its own copy, quorum or not; a frozen one never does,
      // and then the members last seen serve.
      const all = await withTimeout(this.members.list(), 3000).then((l) => (this.#known = l), () => this.#known);
      if (all.length === 0) throw new Error('no member known');
      const voters = all.filter((m) => !m.learner);
      // Without a quorum no member passes /health; the ones missing are those that do not answer at all.
      const down = (await Promise.all(voters.map(async (m) => ((await memberServes(m.clientUrls[0] ?? '', this.#fetch)) ? undefined : m)))).filter((m) => m !== undefined);
      const quorum = Math.floor(voters.length / 2) + 1;
      if (down.length > 0) {
        text = `etcd members not answering: ${down.map((m) => `${m.name || m.id} (${m.clientUrls[0] ?? m.peerUrls[0]})`).join(', ')}; ${voters.length - down.length} of ${voters.length} voting members answer, a quorum needs ${quorum}`;
      }
    } catch {
      text = 'no etcd member of this cluster answers';
    }
    this.#lastOutage = { at: now, text };
    return text;
  }

  #lastOutage: { at: number; text: string | undefined } | undefined;
  /** The members as last listed, for when listing them fails. */
  #known: EtcdMemberInfo[] = [];

  /** Removes the etcd member of a node (by its member name), if it has one: `prismctl node rm`. */
  async removeMemberNamed(name: string): Promise<boolean> {
    if (!this.members) return false;
    const m = (await this.members.list()).find((x) => x.name === name);
    if (!m) return false;
    await this.members.remove(m.id);
    this.opts.log.info({ member: m.id, name }, 'removed the etcd member of a removed node');
    await this.#changed();
    return true;
  }
}

export function voterEndpoints(members: EtcdMemberInfo[]): string[] {
  return members.filter((m) => !m.learner).flatMap((m) => m.clientUrls);
}

function initialCluster(members: EtcdMemberInfo[], req: JoinRequest): string {
  const parts = members.filter((m) => m.name && !m.peerUrls.includes(req.peerUrl)).map((m) => `${m.name}=${m.peerUrls[0]}`);
  return [...parts, `${req.name}=${req.peerUrl}`].join(',');
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('timed out')), ms);
    p.then((v) => (clearTimeout(t), resolve(v)), (e: unknown) => (clearTimeout(t), reject(e)));
  });
}
