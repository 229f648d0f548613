import { spawn, type ChildProcess } from 'node:child_process';
import { cgroupLeaks, ociCgroups } from '../fixtures/host-cgroups.js';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cp, mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { Agent, fetch as undiciFetch } from 'undici';
import { packageRoot } from '../../src/daemon/package-info.js';
import { isAlive } from '../../src/daemon/pid-lock.js';
import { mountsUnder, unmountAll } from '../../src/runtime/host-mounts.js';

/** Where the shared test image store lives (built once by .ci/run or the global setup). */
export const TEST_IMAGES_DIR = process.env.PRISM_TEST_IMAGES_DIR ?? '/var/lib/prism-test/images';
export const REPO_ROOT = packageRoot();

/** Why integration tests cannot run here, or undefined when they can. */
export function integrationSkipReason(): string | undefined {
  if (process.getuid?.() !== 0) return 'integration tests need root (namespaces, cgroups, mounts)';
  if (!existsSync('/usr/sbin/runc') && !existsSync('/usr/bin/runc')) return 'runc is not installed (run scripts/setup.sh)';
  if (!existsSync(join(REPO_ROOT, 'dist', 'src', 'daemon', 'prismd.js'))) return 'not built (npm run build)';
  if (!existsSync(join(REPO_ROOT, 'guest', 'init', 'prism-init'))) return 'guest/init not built (npm run build)';
  return undefined;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

/** Tokens by daemon URL: `call` and `authHeaders` send the right one automatically. */
const tokens = new Map<string, string>();
/** For https daemons: a fetch that trusts the daemon's CA (`--tls auto` writes it to <data-dir>/tls). */
const fetchers = new Map<string, typeof fetch>();

/** fetch for a daemon URL: over TLS it verifies against that daemon's CA. */
export function fetchFor(url: string): typeof fetch {
  return fetchers.get(new URL(url).origin) ?? fetch;
}

function trustingFetch(caFile: string): typeof fetch {
  const dispatcher = new Agent({ connect: { ca: readFileSync(caFile) } });
  return ((input: string, init?: RequestInit) => undiciFetch(input, { ...(init as object), dispatcher } as Parameters<typeof undiciFetch>[1])) as unknown as typeof fetch;
}

export function authHeaders(url: string): Record<string, string> {
  const t = tokens.get(new URL(url).origin);
  return t ? { authorization: `Bearer ${t}` } : {};
}

/**
 * Removes a test daemon's data dir. Anything still mounted there is a leak of the code under test
 * (a task prismd did not tear down): it is unmounted, so that nothing is left on the host, and
 * reported as an error naming the mounts, so that the test that left it fails.
 */
async function removeDataDir(dataDir: string): Promise<void> {
  const leaked = await mountsUnder(dataDir);
  const msg = `prismd left ${leaked.length} mount(s) in its data dir ${dataDir}: ${leaked.join(', ')}`;
  if (leaked.length) {
    console.error(msg);
    await unmountAll(dataDir);
  }
  await rm(dataDir, { recursive: true, force: true });
  if (leaked.length) throw new Error(msg);
}

export interface Prismd {
  url: string;
  /** The admin API token: read from the data dir (first node) or given (nodes joining a cluster). */
  token: string;
  api: string;
  dataDir: string;
  logFile: string;
  proc: ChildProcess;
  /** Ends the daemon (SIGTERM by default; SIGKILL simulates a crash). */
  stop(signal?: NodeJS.Signals): Promise<void>;
  /** Starts a new daemon on the same data dir and port. */
  restart(signal?: NodeJS.Signals): Promise<Prismd>;
  /** Stops the daemon, destroys every sandbox it still runs, removes the data dir. */
  dispose(): Promise<void>;
  logs(): string;
}

/** Where test daemons claim their sandbox address pools, one directory per pool, across test processes. */
const POOL_CLAIMS = join(tmpdir(), 'prism-test-pools');
const POOLS = 16;

/**
 * A sandbox address pool of its own for one test daemon: a /22 of 10.203.64.0/18 (a daemon on the
 * default pool takes the lowest free addresses of 10.203.0.0/16; the network policy tests use pools of
 * their own above 10.203.128.0). Daemons of one host that share a pool and create sandboxes
 * at the same moment can pick the same addresses (docs/network.md), and test files run in parallel.
 * A claim is a directory naming the daemon (the test process until it is spawned); one whose process
 * is gone is taken over, so a daemon a test never disposes holds its pool no longer than it runs.
 */
interface PoolClaim {
  cidr: string;
  /** Names the daemon now holding it (a start or restart). */
  own(pid: number): void;
  release(): void;
}

function claimPool(): PoolClaim {
  mkdirSync(POOL_CLAIMS, { recursive: true });
  for (let i = 0; i < POOLS; i++) {
    const dir = join(POOL_CLAIMS, String(i));
    const owner = claimOwner(dir);
    if (owner !== undefined && !isAlive(owner)) rmSync(dir, { recursive: true, force: true });
    try {
      mkdirSync(dir);
    } catch {
      continue; // claimed by a live daemon's test, or just now by another
    }
    writeFileSync(join(dir, 'pid'), String(process.pid));
    return {
      cidr: `10.203.${64 + i * 4}.0/22`,
      // Made again when gone: a claim of a stopped daemon may have been taken over as stale, and a
      // restart must not fail for it (daemons overlapping a pool still get distinct addresses: the
      // host-wide subnet claims, docs/network.md).
      own: (pid) => {
        mkdirSync(dir, { recursive: true });
        writeFileSync(join(dir, 'pid'), String(pid));
      },
      release: () => rmSync(dir, { recursive: true, force: true }),
    };
  }
  throw new Error(`all ${POOLS} test address pools under ${POOL_CLAIMS} are claimed`);
}

/** Removes the pool claims of daemons that are gone (at the end of a test run: a test may never dispose one). */
export function dropStalePoolClaims(): void {
  if (!existsSync(POOL_CLAIMS)) return;
  for (const name of readdirSync(POOL_CLAIMS)) {
    const dir = join(POOL_CLAIMS, name);
    const owner = claimOwner(dir);
    if (owner === undefined || !isAlive(owner)) rmSync(dir, { recursive: true, force: true });
  }
  if (readdirSync(POOL_CLAIMS).length === 0) rmSync(POOL_CLAIMS, { recursive: true, force: true });
}

/** The pid a claim names; undefined while it names none (being made, or made by a process that died first). */
function claimOwner(dir: string): number | undefined {
  const pid = Number(existsSync(join(dir, 'pid')) ? readFileSync(join(dir, 'pid'), 'utf8') : NaN);
  return Number.isInteger(pid) ? pid : undefined;
}

export async function startPrismd(opts: { dataDir?: string; port?: number; extraArgs?: string[]; imagesDir?: string; token?: string; pool?: PoolClaim } = {}): Promise<Prismd> {
  const dataDir = opts.dataDir ?? (await mkdtemp(join(tmpdir(), 'prismd-test-')));
  const port = opts.port ?? (await freePort());
  // Its own address pool unless the test gives one; kept across restarts (the data dir's networks are in it).
  const pool = (opts.extraArgs ?? []).includes('--sandbox-cidr') ? undefined : (opts.pool ?? claimPool());
  const poolArgs = pool ? ['--sandbox-cidr', pool.cidr] : [];
  const api = `127.0.0.1:${port}`;
  const tls = (opts.extraArgs ?? []).some((a) => a === '--tls' || a === '--tls-cert');
  const url = `${tls ? 'https' : 'http'}://${api}`;
  const args = opts.extraArgs ?? [];
  const caFile = args.includes('--tls-ca') ? args[args.indexOf('--tls-ca') + 1]! : join(dataDir, 'tls', 'ca.crt');
  const logFile = join(dataDir, 'prismd.log');
  const proc = spawn(
    process.execPath,
    // PRISM_TEST_NODE_FLAGS: node flags for prismd, e.g. `--cpu-prof --cpu-prof-dir=/tmp/prof` to profile a bench.
    [...(process.env.PRISM_TEST_NODE_FLAGS?.split(' ').filter(Boolean) ?? []), join(REPO_ROOT, 'bin', 'prismd.js'), '--api', api, '--data-dir', dataDir, '--images-dir', opts.imagesDir ?? TEST_IMAGES_DIR, '--log-file', logFile, '--log-level', 'debug', ...poolArgs, ...(opts.extraArgs ?? [])],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  // Nothing may throw between the spawn and the wait below: a daemon spawned and not waited for would
  // outlive its test (and write into a data dir the test then removes).
  try {
    if (proc.pid) pool?.own(proc.pid);
  } catch (e) {
    console.warn(`prismd-harness: could not mark pool ${pool?.cidr} as held by pid ${proc.pid}: ${String(e)}`);
  }
  let stderr = '';
  proc.stderr!.on('data', (b: Buffer) => (stderr += b.toString()));
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  // Seconds here; minutes under emulation with the host busy (the host VM in CI). Forming or joining a
  // cluster also starts an etcd member and waits for raft: under CI's load a join took over 30 s.
  const forming = args.includes('--join') || args.includes('--cluster-init');
  const deadline = Date.now() + (process.env.PRISM_IN_HOST_VM === '1' ? 300_000 : forming ? 120_000 : 30_000);
  /** A SIGKILLed prismd cannot stop the etcd member it runs (--cluster-init, --join): its pid file names it. */
  const killMember = () => {
    const pid = Number(existsSync(join(dataDir, 'etcd.pid')) ? readFileSync(join(dataDir, 'etcd.pid'), 'utf8') : '');
    if (Number.isInteger(pid) && pid > 1) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }
  };
  for (;;) {
    if (proc.exitCode !== null) {
      killMember();
      if (!opts.dataDir) await removeDataDir(dataDir);
      if (!opts.pool) pool?.release();
      throw new Error(`prismd exited with ${proc.exitCode}: ${stderr}`);
    }
    try {
      if (tls && !fetchers.has(url) && existsSync(caFile)) fetchers.set(url, trustingFetch(caFile));
      const r = await fetchFor(url)(`${url}/api/v1/health`);
      if (r.ok) break;
    } catch {
      /* not up yet */
    }
    if (Date.now() > deadline) {
      // Not left running behind the failed test (it would hold its port, data dir and store).
      proc.kill('SIGKILL');
      await exited;
      killMember();
      const log = existsSync(logFile) ? readFileSync(logFile, 'utf8').trim().split('\n').slice(-15).join('\n') : '';
      if (!opts.dataDir) await removeDataDir(dataDir);
      if (!opts.pool) pool?.release();
      throw new Error(`prismd did not become healthy in time: ${stderr}\nlast lines of its log:\n${log}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  const tokenFile = join(dataDir, 'admin-token');
  const token = opts.token ?? (existsSync(tokenFile) ? readFileSync(tokenFile, 'utf8').trim() : '');
  if (token) tokens.set(url, token);
  const self: Prismd = {
    url,
    token,
    api,
    dataDir,
    logFile,
    proc,
    logs: () => (existsSync(logFile) ? readFileSync(logFile, 'utf8') : '') + stderr,
    async stop(signal = 'SIGTERM') {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
      await exited;
    },
    async restart(signal = 'SIGTERM') {
      await self.stop(signal);
      return startPrismd({ ...opts, dataDir, port, ...(token ? { token } : {}), ...(pool ? { pool } : {}) });
    },
    async dispose() {
      if (proc.exitCode !== null || proc.signalCode !== null) {
        // Killed by the test (or crashed): its sandboxes still run, and only prismd can tear them down.
        const again = await startPrismd({ ...opts, dataDir, port, ...(token ? { token } : {}), ...(pool ? { pool } : {}) }).catch(() => undefined);
        if (again) return again.dispose();
      }
      if (proc.exitCode === null && proc.signalCode === null) {
        try {
          const r = await fetchFor(url)(`${url}/api/v1/sandboxes`, { headers: authHeaders(url) });
          const body = (await r.json()) as { sandboxes: { id: string }[] };
          for (const sb of body.sandboxes) await fetchFor(url)(`${url}/api/v1/sandboxes/${sb.id}`, { method: 'DELETE', headers: authHeaders(url) });
        } catch {
          /* best effort; the checks below catch leaks */
        }
      }
      await self.stop();
      if (process.env.PRISM_TEST_KEEP_LOGS) await cp(logFile, join(process.env.PRISM_TEST_KEEP_LOGS, `${basename(dataDir)}.log`)).catch(() => undefined);
      await removeDataDir(dataDir);
      pool?.release();
    },
  };
  return self;
}

/** JSON request helper returning status and parsed body. */
export async function call<T = any>(base: string, method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<{ status: number; body: T; headers: Headers }> {
  const init: RequestInit = { method, headers: { ...authHeaders(base), ...headers } };
  if (body !== undefined) {
    init.body = typeof body === 'string' ? body : JSON.stringify(body);
    (init.headers as Record<string, string>)['content-type'] ??= 'application/json';
  }
  const r = await fetchFor(base)(`${base}/api/v1${path}`, init);
  const text = await r.text();
  let parsed: unknown = text;
  try {
    parsed = text ? JSON.parse(text) : undefined;
  } catch {
    /* raw text (e.g. NDJSON) */
  }
  return { status: r.status, body: parsed as T, headers: r.headers };
}

/** What a sandbox may leave on the host: mounts, cgroups, processes, files. Empty when nothing. */
export function leftovers(sandboxId: string, dataDir: string): string[] {
  const out: string[] = [];
  const mounts = readFileSync('/proc/mounts', 'utf8').split('\n').filter((l) => l.includes(sandboxId));
  if (mounts.length) out.push(`mounts: ${mounts.join('; ')}`);
  out.push(...cgroupLeaks(ociCgroups, sandboxId));
  const task = join(dataDir, 'runtime', 'oci', 'tasks', sandboxId);
  if (existsSync(task)) out.push(`task dir: ${task}`);
  if (existsSync(join(dataDir, 'runtime', 'oci', 'runc', sandboxId))) out.push('runc state dir');
  return out;
}

/**
 * The ids of the sandboxes a daemon created while `fn` ran, from its `created` events, and of direct
 * creates that failed (they never wrote a record, so had no event) from its log: how a test names the
 * sandbox of a create that failed (its record is gone by then) to look for what it might have left on
 * the host, without comparing host-wide lists other test files change at the same time.
 */
export async function createdDuring<T>(d: { url: string; token: string; logs?: () => string }, fn: () => Promise<T>): Promise<{ result: T; ids: string[] }> {
  const { Prism } = await import('../../src/sdk/index.js');
  const stop = new AbortController();
  const ids: string[] = [];
  let open!: () => void;
  const opened = new Promise<void>((r) => (open = r));
  const watching = (async () => {
    for await (const e of new Prism({ url: d.url, token: d.token }).events({ types: ['created'], signal: stop.signal, onOpen: open })) ids.push(e.sandboxId!);
  })().catch(() => undefined);
  await opened;
  // A direct create that failed wrote no record, so it has no event: its id is in the daemon's log line.
  const failedInLog = () => {
    const out: string[] = [];
    for (const line of (d.logs?.() ?? '').split('\n')) {
      if (!line.startsWith('{') || !line.includes('"sandbox create failed"')) continue;
      const id = (JSON.parse(line) as { sandbox?: string }).sandbox;
      if (id) out.push(id);
    }
    return out;
  };
  const failedBefore = new Set(failedInLog());
  try {
    const result = await fn();
    const fromLog = () => {
      for (const id of failedInLog()) if (!failedBefore.has(id) && !ids.includes(id)) ids.push(id);
    };
    // The event of a create that answered is sent before its answer; the wait is for the stream to carry
    // it (or for the log, written asynchronously, to hold the line).
    for (const deadline = Date.now() + 5_000; ids.length === 0 && Date.now() < deadline; fromLog()) await new Promise((r) => setTimeout(r, 25));
    return { result, ids };
  } finally {
    stop.abort();
    await watching;
  }
}
