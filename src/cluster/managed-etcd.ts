import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PrismError } from '../core/errors.js';
import type { Logger } from '../service/logger.js';
import { EtcdMember, hasMemberData } from './etcd-member.js';
import { tlsFetch, type MemberTls } from './etcd-http.js';
import type { JoinAnswer, JoinRequest } from './join-service.js';

/**
 * prismd's own etcd member (`--cluster-init` / `--join`): what it starts before it opens the store,
 * and the endpoints the store then uses. What a node learnt when it joined is kept in
 * `<data-dir>/cluster.json`, so a restart rejoins with its data and without the join token.
 */

export interface ManagedEtcdConfig {
  mode: 'init' | 'join';
  /** A node of the cluster to join (`--join`). */
  joinUrl?: string;
  joinToken?: string;
  /** Where this node's member listens and is reached (`--etcd-peer`, `--etcd-client`). */
  peer: { host: string; port: number };
  client: { host: string; port: number };
}

interface SavedCluster {
  role: 'voter' | 'client';
  name: string;
  peerUrl: string;
  clientUrl: string;
  clusterToken: string;
  initialCluster: string;
  /** Store endpoints last seen (voting members' client URLs). */
  endpoints: string[];
  memberId?: string;
}

export interface ManagedEtcd {
  /** Absent when this node joined as an etcd client only. */
  member?: EtcdMember;
  endpoints: string[];
  /** The etcd cluster token (for `--cluster-init`, to record in the store). */
  clusterToken: string;
  /** Remembers the current voting members' client URLs for the next start. */
  saveEndpoints(endpoints: string[]): void;
  stop(): Promise<void>;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export async function startManagedEtcd(dataDir: string, name: string, cfg: ManagedEtcdConfig, log: Logger, tls?: MemberTls): Promise<ManagedEtcd> {
  const scheme = tls ? 'https' : 'http';
  const clusterFetch = tlsFetch(tls);
  const url = (hp: { host: string; port: number }) => `${scheme}://${hp.host.includes(':') ? `[${hp.host}]` : hp.host}:${hp.port}`;
  const stateFile = join(dataDir, 'cluster.json');
  const etcdDir = join(dataDir, 'etcd');
  const saved = existsSync(stateFile) ? (JSON.parse(readFileSync(stateFile, 'utf8')) as SavedCluster) : undefined;
  const save = (s: SavedCluster) => writeFileSync(stateFile, `${JSON.stringify(s, null, 2)}\n`, { mode: 0o600 });
  const handle = (s: SavedCluster, member?: EtcdMember): ManagedEtcd => ({
    ...(member ? { member } : {}),
    endpoints: member ? [...new Set([member.clientUrl, ...s.endpoints])] : s.endpoints,
    clusterToken: s.clusterToken,
    saveEndpoints: (endpoints) => {
      if (endpoints.length > 0 && [...endpoints].sort().join() !== [...s.endpoints].sort().join()) save({ ...(s = { ...s, endpoints }) });
    },
    stop: async () => member?.stop(),
  });
  const memberOf = (s: SavedCluster, initialState: 'new' | 'existing') =>
    new EtcdMember({ dataDir: etcdDir, log, spec: { name: s.name, peerUrl: s.peerUrl, clientUrl: s.clientUrl, initialCluster: s.initialCluster, initialState, clusterToken: s.clusterToken, ...(tls ? { tls } : {}) } });

  // A restart: rejoin with what this node has.
  if (saved) {
    if (saved.name !== name) throw new PrismError('FAILED_PRECONDITION', `${stateFile} belongs to node '${saved.name}', not '${name}': use that --name, or another --data-dir`);
    if (cfg.mode === 'join' && cfg.joinUrl && cfg.joinToken) {
      // Told to join a cluster while holding another's data: refuse rather than mix them. When the
      // node named by --join is down, the restart goes on with what this node has.
      const theirs = await callCluster<{ clusterToken: string }>(clusterFetch, cfg.joinUrl, cfg.joinToken, 'GET', '/cluster/join', undefined, 0).catch((e: PrismError) => {
        if (e.code === 'UNAUTHENTICATED') throw new PrismError('UNAUTHENTICATED', `the node at ${cfg.joinUrl} refused the join token: ${e.message}`);
        return undefined;
      });
      if (theirs && theirs.clusterToken && theirs.clusterToken !== saved.clusterToken) {
        throw new PrismError('FAILED_PRECONDITION', `${dataDir} belongs to another cluster (${saved.clusterToken}) than the one at ${cfg.joinUrl} (${theirs.clusterToken}): use another --data-dir, or join the cluster it belongs to`);
      }
    }
    if (saved.role === 'client') return handle(saved);
    const member = memberOf(saved, 'existing');
    await member.start({ healthy: false });
    return handle(saved, member);
  }
  if (hasMemberData(etcdDir)) {
    throw new PrismError('FAILED_PRECONDITION', `${etcdDir} holds etcd data of a cluster this node has no record of (${stateFile} is missing): move it away to start afresh`);
  }
  const me = { name, peerUrl: url(cfg.peer), clientUrl: url(cfg.client) };

  if (cfg.mode === 'init') {
    const s: SavedCluster = { role: 'voter', ...me, clusterToken: `prism-${randomBytes(8).toString('hex')}`, initialCluster: `${name}=${me.peerUrl}`, endpoints: [me.clientUrl] };
    const member = memberOf(s, 'new');
    try {
      await member.start({ healthy: true });
    } catch (e) {
      await member.destroy();
      throw e;
    }
    save(s);
    log.info({ client: me.clientUrl, peer: me.peerUrl }, 'started the first etcd member of a new cluster');
    return handle(s, member);
  }

  // --join: ask the cluster (retrying while another node joins), then start a learner and get promoted.
  if (!cfg.joinUrl || !cfg.joinToken) throw new PrismError('INVALID_ARGUMENT', '--join needs --join-token (or PRISM_JOIN_TOKEN): get it with prismctl cluster join-token');
  const req: JoinRequest = me;
  const answer = await callCluster<JoinAnswer>(clusterFetch, cfg.joinUrl, cfg.joinToken, 'POST', '/cluster/join', req, 120_000);
  if (answer.role === 'client') {
    const s: SavedCluster = { role: 'client', ...me, clusterToken: answer.clusterToken, initialCluster: '', endpoints: answer.endpoints };
    save(s);
    log.info({ endpoints: answer.endpoints }, 'joined the cluster as an etcd client (it has all its voting members)');
    return handle(s);
  }
  const s: SavedCluster = { role: 'voter', ...me, clusterToken: answer.clusterToken, initialCluster: answer.initialCluster!, endpoints: answer.endpoints, memberId: answer.memberId! };
  const member = memberOf(s, 'existing');
  try {
    await member.start({ healthy: false });
    await callCluster(clusterFetch, cfg.joinUrl, cfg.joinToken, 'POST', `/cluster/join/${answer.memberId}/promote`, undefined, 60_000);
    await member.waitHealthy(30_000);
  } catch (e) {
    // Leave no half-added member behind: the learner goes, and so does its data.
    await member.destroy().catch(() => undefined);
    const undone = await callCluster(clusterFetch, cfg.joinUrl, cfg.joinToken, 'DELETE', `/cluster/join/${answer.memberId}`, undefined, 10_000).then(
      () => 'the join was undone (its etcd learner removed from the cluster, its etcd data deleted): fix that and start this node again',
      (err: Error) => {
        log.error({ err, member: answer.memberId }, 'could not remove the learner of this failed join');
        // etcd takes one learner at a time: until this one goes, no other node can join.
        return `its etcd learner ${answer.memberId} could not be removed (${err.message}): remove it with etcdctl member remove ${BigInt(answer.memberId!).toString(16)} before any node joins`;
      });
    const cause = e instanceof PrismError ? e : new PrismError('UNAVAILABLE', String(e), { cause: e });
    throw new PrismError(cause.code, `joining the cluster at ${cfg.joinUrl} failed after this node was added as a learner: ${cause.message}; ${undone}`, { cause: e });
  }
  save(s);
  log.info({ member: answer.memberId, client: me.clientUrl }, 'joined the cluster as a voting etcd member');
  return handle(s, member);
}

/** A call to the cluster's join API with the join token; retries what the cluster says to retry. */
async function callCluster<T>(f: typeof fetch, base: string, token: string, method: string, path: string, body: unknown, budgetMs: number): Promise<T> {
  const deadline = Date.now() + budgetMs;
  const target = `${base.replace(/\/+$/, '')}/api/v1${path}`;
  for (;;) {
    let res: Response;
    try {
      res = await f(target, {
        method,
        headers: { authorization: `Bearer ${token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
        signal: AbortSignal.timeout(15_000),
      });
    } catch (e) {
      const cause = (e as Error & { cause?: Error }).cause?.message ?? (e as Error).message;
      throw new PrismError('UNAVAILABLE', `cannot reach the cluster at ${base} to join it: ${cause}`, { cause: e });
    }
    const text = await res.text();
    if (res.ok) return (text ? JSON.parse(text) : undefined) as T;
    let err: { code?: string; message?: string } = {};
    try {
      err = (JSON.parse(text) as { error?: typeof err }).error ?? {};
    } catch {
      /* not the API's envelope */
    }
    const retry = res.status === 503 || (res.status === 412 && /sync|learner/i.test(err.message ?? ''));
    if (retry && Date.now() < deadline) {
      await sleep(1000);
      continue;
    }
    const code = (err.code as PrismError['code']) ?? (res.status === 401 ? 'UNAUTHENTICATED' : 'UNAVAILABLE');
    throw new PrismError(code, `joining the cluster at ${base}: ${err.message ?? `HTTP ${res.status}`}`);
  }
}
