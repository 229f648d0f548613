import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PrismError } from '../core/errors.js';
import type { Logger } from '../service/logger.js';
import { tlsFetch, type MemberTls } from './etcd-http.js';

/**
 * An etcd member run by prismd (`--cluster-init`, `--join`): Debian's etcd binary as a child process,
 * its data in `<data-dir>/etcd`, restarted when it dies, stopped when prismd stops. A member left
 * running by a prismd that was killed (-9) is found by its pid file and stopped before a new one
 * starts on the same data.
 */

export interface MemberSpec {
  /** The member's etcd name: the node's name. */
  name: string;
  /** URLs other members and clients reach it at (http://host:port). */
  peerUrl: string;
  clientUrl: string;
  /** `name=peerUrl,...` of every member including this one, for a first start. */
  initialCluster: string;
  /** `new` for the first member of a cluster, `existing` for one joining. */
  initialState: 'new' | 'existing';
  /** Distinguishes this cluster's members from another's at first contact. */
  clusterToken: string;
  /** With `--tls`: peers and clients speak TLS, with certificates of the cluster CA on both sides. */
  tls?: MemberTls;
}

export interface EtcdMemberOptions {
  dataDir: string;
  spec: MemberSpec;
  log: Logger;
  /** The etcd binary; default `etcd` on PATH. */
  binary?: string;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** History a managed member keeps (etcd's periodic auto-compaction); docs/cluster.md. */
export const AUTO_COMPACTION_RETENTION = '5m';

/** Does this data dir hold a member's data (it has joined a cluster before)? */
export function hasMemberData(etcdDir: string): boolean {
  return existsSync(join(etcdDir, 'member', 'wal'));
}

export class EtcdMember {
  readonly #o: EtcdMemberOptions;
  #proc: ChildProcess | undefined;
  #stopping = false;
  #restarts = 0;
  #lastStderr = '';

  readonly #fetch: typeof fetch;

  constructor(o: EtcdMemberOptions) {
    this.#o = o;
    this.#fetch = tlsFetch(o.spec.tls);
  }

  get clientUrl(): string {
    return this.#o.spec.clientUrl;
  }

  /** Beside the member's data dir, not in it: etcd warns at every start about files of others there. */
  get #pidFile(): string {
    return `${this.#o.dataDir}.pid`;
  }

  /**
   * Starts the member and resolves once it serves its client URL (`/version`); `healthy` then waits
   * for `/health` too, which a learner (not yet promoted) never passes.
   */
  async start(opts: { healthy: boolean; timeoutMs?: number }): Promise<void> {
    mkdirSync(this.#o.dataDir, { recursive: true, mode: 0o700 });
    await this.#stopStale();
    this.#stopping = false;
    this.#restarts = 0;
    this.#spawn();
    const timeoutMs = opts.timeoutMs ?? 30_000;
    try {
      await this.#waitFor('serve its client URL', () => memberServes(this.#o.spec.clientUrl, this.#fetch), timeoutMs);
      if (opts.healthy) await this.waitHealthy(timeoutMs);
    } catch (e) {
      await this.stop(); // a failed start leaves no process behind
      throw e;
    }
  }

  #args(): string[] {
    const s = this.#o.spec;
    return [
      '--name', s.name, '--data-dir', this.#o.dataDir,
      '--listen-client-urls', s.clientUrl, '--advertise-client-urls', s.clientUrl,
      '--listen-peer-urls', s.peerUrl, '--initial-advertise-peer-urls', s.peerUrl,
      // Ignored by etcd once the data dir holds a member: a restart rejoins with what it has.
      '--initial-cluster', s.initialCluster, '--initial-cluster-state', s.initialState, '--initial-cluster-token', s.clusterToken,
      '--log-level', 'warn', '--logger', 'zap',
      // Every create and delete adds revisions; without compaction etcd keeps them all and, at its
      // backend quota (2 GiB), refuses every write ("database space exceeded"). Keep 5 minutes of
      // history: a watch that falls further behind is told so and lists again (EtcdWatch).
      '--auto-compaction-mode', 'periodic', '--auto-compaction-retention', AUTO_COMPACTION_RETENTION,
      ...(s.tls
        ? ['--cert-file', s.tls.certFile, '--key-file', s.tls.keyFile, '--trusted-ca-file', s.tls.caFile, '--client-cert-auth',
           '--peer-cert-file', s.tls.certFile, '--peer-key-file', s.tls.keyFile, '--peer-trusted-ca-file', s.tls.caFile, '--peer-client-cert-auth']
        : []),
    ];
  }

  #spawn(): void {
    const proc = spawn(this.#o.binary ?? 'etcd', this.#args(), { stdio: ['ignore', 'ignore', 'pipe'] });
    this.#proc = proc;
    proc.stderr!.on('data', (b: Buffer) => {
      this.#lastStderr = (this.#lastStderr + b.toString()).slice(-4000);
    });
    proc.once('error', (e) => {
      this.#lastStderr += `\n${e.message}`;
    });
    if (proc.pid) writeFileSync(this.#pidFile, `${proc.pid}\n`);
    proc.once('exit', (code, signal) => {
      if (this.#proc !== proc) return;
      this.#proc = undefined;
      if (this.#stopping) return;
      if (/permanently removed|has already been removed/i.test(this.#lastStderr)) {
        // Its node was removed from the cluster (prismctl node rm): restarting cannot help.
        this.#o.log.error({ stderr: this.#lastStderr.slice(-600) }, 'this etcd member was removed from its cluster: not restarting it; start this node afresh with a new --data-dir to join again');
        this.#restarts = Infinity;
        return;
      }
      this.#restarts++;
      const delay = Math.min(10_000, 250 * 2 ** Math.min(this.#restarts, 6));
      this.#o.log.error({ code, signal, restarts: this.#restarts, stderr: this.#lastStderr.slice(-600) }, `etcd member exited; restarting in ${delay} ms`);
      setTimeout(() => {
        if (!this.#stopping && !this.#proc) this.#spawn();
      }, delay).unref();
    });
  }

  /** Until the member's /health says true (it has a leader and a quorum). */
  waitHealthy(timeoutMs: number): Promise<void> {
    return this.#waitFor('become healthy', () => memberHealthy(this.#o.spec.clientUrl, this.#fetch), timeoutMs);
  }

  async #waitFor(what: string, ok: () => Promise<boolean>, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (await ok()) return;
      // Dying at once again and again (a taken port, a data dir of another cluster): say why now.
      if (this.#restarts >= 3 || Date.now() > deadline) break;
      await sleep(100);
    }
    throw new PrismError('UNAVAILABLE', `the etcd member ${this.#o.spec.name} (${this.#o.spec.clientUrl}) did not ${what}: ${etcdSaid(this.#lastStderr)}`);
  }

  /** Stops the member (SIGTERM, then SIGKILL after 10 s). */
  async stop(): Promise<void> {
    this.#stopping = true;
    const proc = this.#proc;
    if (proc && proc.exitCode === null && proc.signalCode === null) {
      const exited = new Promise<void>((r) => proc.once('exit', () => r()));
      proc.kill('SIGTERM');
      const timer = setTimeout(() => proc.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(timer);
    }
    rmSync(this.#pidFile, { force: true });
  }

  /** Stops and forgets the member's data (after it was removed from its cluster). */
  async destroy(): Promise<void> {
    await this.stop();
    rmSync(this.#o.dataDir, { recursive: true, force: true });
  }

  /** A member of an earlier prismd of this data dir (killed with -9) still runs: stop it first. */
  async #stopStale(): Promise<void> {
    // Where earlier versions kept it, inside the data dir, too.
    for (const file of [this.#pidFile, join(this.#o.dataDir, 'etcd.pid')]) {
      if (!existsSync(file)) continue;
      const pid = Number(readFileSync(file, 'utf8').trim());
      rmSync(file, { force: true });
      await this.#stopIfOurs(pid);
    }
  }

  async #stopIfOurs(pid: number): Promise<void> {
    if (!Number.isInteger(pid) || pid <= 1) return;
    let cmdline = '';
    try {
      cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    } catch {
      return; // gone
    }
    if (!cmdline.includes(this.#o.dataDir)) return; // the pid was reused by something else
    this.#o.log.warn({ pid }, 'an etcd member of an earlier prismd still runs on this data dir: stopping it');
    process.kill(pid, 'SIGTERM');
    for (let i = 0; i < 100 && existsSync(`/proc/${pid}`); i++) await sleep(100);
    if (existsSync(`/proc/${pid}`)) process.kill(pid, 'SIGKILL');
  }
}

/**
 * What etcd's log (zap JSON lines, --logger zap) says went wrong, for a person: the error of its last
 * error or fatal line (`listen tcp 127.0.0.1:2379: bind: address already in use`), else its last lines.
 */
export function etcdSaid(stderr: string): string {
  const lines = stderr.trim().split('\n').filter(Boolean);
  for (const line of [...lines].reverse()) {
    let entry: { level?: string; msg?: string; error?: string };
    try {
      entry = JSON.parse(line) as typeof entry;
    } catch {
      continue; // not etcd's JSON (a spawn error of ours, or a line cut by the tail)
    }
    if ((entry.level === 'fatal' || entry.level === 'panic' || entry.level === 'error') && (entry.error || entry.msg)) {
      return entry.error ? `${entry.msg ? `${entry.msg}: ` : ''}${entry.error}` : entry.msg!;
    }
  }
  return lines.slice(-3).join(' | ') || 'no output';
}

/** Does the member answer on its client URL at all? */
export async function memberServes(clientUrl: string, f: typeof fetch = fetch): Promise<boolean> {
  try {
    return (await f(`${clientUrl}/version`, { signal: AbortSignal.timeout(1000) })).ok;
  } catch {
    return false;
  }
}

/** etcd's own health endpoint on the client URL (no etcdctl needed). */
export async function memberHealthy(clientUrl: string, f: typeof fetch = fetch): Promise<boolean> {
  try {
    const r = await f(`${clientUrl}/health`, { signal: AbortSignal.timeout(1000) });
    if (!r.ok) return false;
    return ((await r.json()) as { health?: string }).health === 'true';
  } catch {
    return false;
  }
}
