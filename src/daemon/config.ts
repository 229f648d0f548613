import type { ManagedEtcdConfig } from '../cluster/managed-etcd.js';
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { PrismError } from '../core/errors.js';
import { RUNTIME_NAMES, type RuntimeName } from '../core/types.js';
import type { TlsConfig } from './tls.js';
import { VMM_NAMES, type VmmName } from '../runtime/microvm/vmm.js';

export type LogLevel = 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal' | 'silent';

export interface DaemonConfig {
  apiHost: string;
  apiPort: number;
  dataDir: string;
  imagesDir: string;
  name?: string;
  runtime: RuntimeName | 'auto';
  logLevel: LogLevel;
  logFile?: string;
  defaultImage: string;
  /** What the E2B gateway answers as a sandbox's `domain` (docs/e2b.md); absent: the Host the client called. */
  e2bDomain?: string;
  /** Registries (host[:port]) that may be reached over plain HTTP; loopback always may. */
  insecureRegistries: string[];
  /** Guest kernel + initramfs for the microvm runtime (scripts/prepare-guest.sh); host-wide. */
  guestDir: string;
  kernel?: string;
  /** The Docker engine of the docker runtime (`unix:///path`, `tcp://host:port`); unset: DOCKER_HOST, then /var/run/docker.sock. */
  dockerHost?: string;

  /** The microVM VMM: QEMU, or Firecracker (opt-in: never run against a real Firecracker yet). */
  vmm: VmmName;
  /** Where Firecracker is, with `vmm: 'firecracker'` (default: `firecracker` on PATH). */
  firecrackerBin?: string;
  /** Create microVMs by restoring template snapshots (default; `--no-microvm-snapshots` turns it off). */
  microvmSnapshots: boolean;
  /** microVMs kept restored and ready per image + VM shape (0 = none). */
  warmPool: number;
  /** JSON file `{"auths": {"host[:port]": {"username": "...", "password": "..."}}}` (mode 0600). */
  registryAuthFile?: string;
  /** Where cluster state lives: this node's SQLite file, or an etcd cluster shared by every node. */
  store:
    | { kind: 'sqlite' }
    | { kind: 'etcd'; endpoints: string[]; tls?: { ca?: string; cert?: string; key?: string } }
    /** prismd runs its own etcd member (`--cluster-init`, `--join`): src/cluster/managed-etcd.ts. */
    | ({ kind: 'managed-etcd'; voters: number } & ManagedEtcdConfig);
  /** The URL other nodes use to reach this node's API (default: the bound API address). */
  advertise?: string;
  labels: Record<string, string>;
  capacity: { cpus?: number; memoryMb?: number; maxSandboxes?: number; cpuOvercommit?: number; memoryOvercommit?: number };
  placement: 'spread' | 'binpack';
  /** Creates placement would put on this node are made here in one write (src/service/direct-create.ts); `--direct-create off` turns it off. */
  directCreate: boolean;
  /** Membership lease TTL: a node silent for this long is dead. */
  nodeTtlMs: number;
  /** How long a create waits for placement before failing with UNAVAILABLE. */
  scheduleTimeoutMs: number;
  /** Largest file read or written through the files API in one request (PAYLOAD_TOO_LARGE past it). */
  maxFileBytes: number;
  /** `token`: every route but /health needs an API token; `none` (loopback only) turns that off. */
  auth: 'token' | 'none';
  /** `token`: GET /metrics needs an API token like the API; `none`: Prometheus scrapes it without one. */
  metricsAuth: 'token' | 'none';
  /** Serve the web console at `/` (`--no-console` turns it off). */
  console: boolean;
  /** Commands in images that name no user run as this one (`uid[:gid]` or `root`). */
  defaultUser: string;
  tls: TlsConfig;
  /** IPv4 pool sandbox networks take /30s from. */
  sandboxCidr: string;
  /** Resolver the sandboxes' DNS filters ask (`host` or `host:port`); default the host's first name server. */
  sandboxDns: { host: string; port: number };
  /** Background processes running at once per sandbox. */
  maxProcesses: number;
  /** Output kept per stream of each background process, in bytes. */
  processBufferBytes: number;
  /** A sandbox paused this long is deleted; 0 = paused sandboxes are kept until deleted. */
  pausedTtlMs: number;
  /** Sandbox usage sampling (GET /sandboxes/:id/metrics): every intervalMs (0 = only on request), kept for retentionMs. */
  metrics: { intervalMs: number; retentionMs: number };
}

/** Flags as given on the command line (or their PRISM_* environment equivalents). */
export interface DaemonFlags {
  api?: string;
  dataDir?: string;
  imagesDir?: string;
  name?: string;
  runtime?: string;
  logLevel?: string;
  logFile?: string;
  defaultImage?: string;
  e2bDomain?: string;
  insecureRegistry?: string[];
  registryAuth?: string;
  guestDir?: string;
  kernel?: string;
  dockerHost?: string;
  microvmSnapshots?: boolean;
  store?: string;
  clusterInit?: boolean;
  join?: string;
  joinToken?: string;
  etcdPeer?: string;
  etcdClient?: string;
  etcdVoters?: string;
  etcdCa?: string;
  etcdCert?: string;
  etcdKey?: string;
  advertise?: string;
  label?: string[];
  capacityCpus?: string;
  capacityMemoryMb?: string;
  maxSandboxes?: string;
  cpuOvercommit?: string;
  memoryOvercommit?: string;
  placement?: string;
  directCreate?: string;
  nodeTtl?: string;
  scheduleTimeout?: string;
  maxFileMb?: string;
  auth?: string;
  metricsAuth?: string;
  console?: boolean;
  defaultUser?: string;
  tls?: string;
  tlsCert?: string;
  tlsKey?: string;
  tlsCa?: string;
  tlsCaKey?: string;
  sandboxCidr?: string;
  sandboxDns?: string;
  warmPool?: string;
  vmm?: string;
  firecrackerBin?: string;
  maxProcesses?: string;
  processBufferMb?: string;
  metricsInterval?: string;
  metricsRetention?: string;
  pausedTtl?: string;
}

export const DEFAULT_API = '127.0.0.1:8008';
export const DEFAULT_SANDBOX_CIDR = '10.203.0.0/16';
export const DEFAULT_IMAGE = 'prism.local/base:bookworm';
/** Where scripts/prepare-guest.sh puts the guest kernel and initramfs. */
export const DEFAULT_GUEST_DIR = '/var/lib/prism/guest';
const LEVELS: LogLevel[] = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'];

export function parseHostPort(s: string, flag = '--api'): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(s.replace(/^https?:\/\//, ''));
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw new PrismError('INVALID_ARGUMENT', `${flag} must be HOST:PORT, got '${s}'`);
  return { host: m[1] ?? (m[2] || '127.0.0.1'), port };
}

/**
 * `--cluster-init` / `--join URL` (prismd runs its own etcd member) or `--store`. The member listens on
 * `--etcd-peer` and `--etcd-client` (default: the API's host, ports 2380 and 2379).
 */
function parseClusterStore(flags: DaemonFlags, env: NodeJS.ProcessEnv, store: () => DaemonConfig['store']): DaemonConfig['store'] {
  const init = flags.clusterInit ?? env.PRISM_CLUSTER_INIT === '1';
  const joinUrl = flags.join ?? env.PRISM_JOIN;
  if (!init && !joinUrl) return store();
  if (init && joinUrl) throw new PrismError('INVALID_ARGUMENT', '--cluster-init starts a new cluster and --join joins one: give one of them');
  if (flags.store ?? env.PRISM_STORE) throw new PrismError('INVALID_ARGUMENT', `--store and --${init ? 'cluster-init' : 'join'} both say where the cluster state lives: give one of them`);
  const apiHost = parseHostPort(flags.api ?? env.PRISM_API ?? '127.0.0.1:8008').host;
  const host = apiHost === '0.0.0.0' || apiHost === '::' ? '127.0.0.1' : apiHost;
  const peer = parseHostPort(flags.etcdPeer ?? env.PRISM_ETCD_PEER ?? `${host}:2380`, '--etcd-peer');
  const client = parseHostPort(flags.etcdClient ?? env.PRISM_ETCD_CLIENT ?? `${host}:2379`, '--etcd-client');
  const voters = Number(flags.etcdVoters ?? env.PRISM_ETCD_VOTERS ?? 3);
  if (voters !== 1 && voters !== 3 && voters !== 5) throw new PrismError('INVALID_ARGUMENT', `--etcd-voters must be 1, 3 or 5, got '${flags.etcdVoters ?? env.PRISM_ETCD_VOTERS}'`);
  if (joinUrl) {
    if (!/^https?:\/\//.test(joinUrl)) throw new PrismError('INVALID_ARGUMENT', `--join must be the URL of a node of the cluster (http://host:port), got '${joinUrl}'`);
    const joinToken = flags.joinToken ?? env.PRISM_JOIN_TOKEN;
    if (!joinToken) throw new PrismError('INVALID_ARGUMENT', '--join needs --join-token (or PRISM_JOIN_TOKEN): get it with prismctl cluster join-token on a node of the cluster');
    return { kind: 'managed-etcd', mode: 'join', joinUrl, joinToken, peer, client, voters };
  }
  return { kind: 'managed-etcd', mode: 'init', peer, client, voters };
}

/** `sqlite` (the default) or `etcd://host:port[,host:port...]` (`etcd+https://` for TLS). */
export function parseStore(url: string, tls: { ca?: string; cert?: string; key?: string }): DaemonConfig['store'] {
  if (url === '' || url === 'sqlite') return { kind: 'sqlite' };
  const m = /^etcd(\+https)?:\/\/(.+)$/.exec(url);
  if (!m) throw new PrismError('INVALID_ARGUMENT', `--store must be 'sqlite' or etcd://host:port[,host:port...], got '${url}'`);
  const scheme = m[1] || tls.ca || tls.cert ? 'https' : 'http';
  const endpoints = m[2]!.split(',').filter(Boolean).map((hp) => {
    const { host, port } = parseHostPort(hp, '--store');
    return `${scheme}://${host.includes(':') ? `[${host}]` : host}:${port}`;
  });
  if (endpoints.length === 0) throw new PrismError('INVALID_ARGUMENT', '--store names no etcd endpoint');
  const files = Object.fromEntries(Object.entries(tls).filter(([, v]) => v).map(([k, v]) => [k, resolve(v!)]));
  return Object.keys(files).length ? { kind: 'etcd', endpoints, tls: files } : { kind: 'etcd', endpoints };
}

function positive(name: string, v: string | undefined, integer = true): number | undefined {
  if (v === undefined || v === '') return undefined;
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0 || (integer && !Number.isInteger(n))) {
    throw new PrismError('INVALID_ARGUMENT', `${name} must be a positive ${integer ? 'integer' : 'number'}, got '${v}'`);
  }
  return n;
}

function nonNegative(name: string, v: string | undefined): number | undefined {
  if (v === undefined || v === '') return undefined;
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0) throw new PrismError('INVALID_ARGUMENT', `${name} must be a number >= 0, got '${v}'`);
  return n;
}

const LABEL_KEY_RE = /^[a-z0-9]([a-z0-9._/-]{0,62}[a-z0-9])?$/i;

export function parseLabels(items: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const item of items) {
    const i = item.indexOf('=');
    const k = i > 0 ? item.slice(0, i) : '';
    if (!LABEL_KEY_RE.test(k) || item.length > 256) throw new PrismError('INVALID_ARGUMENT', `--label must be key=value with a simple key, got '${item}'`);
    out[k] = item.slice(i + 1);
  }
  return out;
}

function parseTls(flags: DaemonFlags, env: NodeJS.ProcessEnv): TlsConfig {
  const mode = flags.tls ?? env.PRISM_TLS ?? '';
  const cert = flags.tlsCert ?? env.PRISM_TLS_CERT;
  const key = flags.tlsKey ?? env.PRISM_TLS_KEY;
  const ca = flags.tlsCa ?? env.PRISM_TLS_CA;
  const caKey = flags.tlsCaKey ?? env.PRISM_TLS_CA_KEY;
  if (!['', 'off', 'auto'].includes(mode)) throw new PrismError('INVALID_ARGUMENT', `--tls must be off or auto, got '${mode}'`);
  if (cert || key) {
    if (!cert || !key) throw new PrismError('INVALID_ARGUMENT', '--tls-cert and --tls-key go together');
    if (mode === 'auto') throw new PrismError('INVALID_ARGUMENT', '--tls auto generates a certificate: do not also give --tls-cert/--tls-key');
    return { mode: 'files', cert: resolve(cert), key: resolve(key), ...(ca ? { ca: resolve(ca) } : {}) };
  }
  if (mode === 'auto') return { mode: 'auto', ...(ca ? { ca: resolve(ca) } : {}), ...(caKey ? { caKey: resolve(caKey) } : {}) };
  if (ca || caKey) throw new PrismError('INVALID_ARGUMENT', '--tls-ca/--tls-ca-key need --tls auto or --tls-cert/--tls-key');
  return { mode: 'off' };
}

export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}

/** `--sandbox-dns`: `ip` or `ip:port`; default the first IPv4 name server of /etc/resolv.conf. */
export function parseSandboxDns(v: string | undefined, resolvConf: string): { host: string; port: number } {
  const text = v ?? /^\s*nameserver\s+(\d+\.\d+\.\d+\.\d+)\s*$/m.exec(resolvConf)?.[1] ?? '127.0.0.53';
  const m = /^(\d+\.\d+\.\d+\.\d+)(?::(\d{1,5}))?$/.exec(text);
  const port = m?.[2] ? Number(m[2]) : 53;
  if (!m || port < 1 || port > 65535) throw new PrismError('INVALID_ARGUMENT', `--sandbox-dns must be an IPv4 address with an optional :port, got '${text}'`);
  return { host: m[1]!, port };
}

export function defaultDataDir(now = new Date()): string {
  if (process.getuid?.() === 0) return '/var/lib/prism';
  return resolve('data', now.toISOString().replace(/[:.]/g, '-'));
}

function parseVmm(s: string): VmmName {
  if (!(VMM_NAMES as readonly string[]).includes(s)) throw new PrismError('INVALID_ARGUMENT', `--vmm must be one of ${VMM_NAMES.join(', ')}, got '${s}'`);
  return s as VmmName;
}

function parseWarmPool(s: string): number {
  const n = Number(s);
  if (!/^\d+$/.test(s) || n > 64) throw new PrismError('INVALID_ARGUMENT', `--warm-pool must be a whole number from 0 to 64, got '${s}'`);
  return n;
}

export function resolveConfig(flags: DaemonFlags, env: NodeJS.ProcessEnv = process.env): DaemonConfig {
  const api = parseHostPort(flags.api ?? env.PRISM_API ?? DEFAULT_API);
  const dataDir = resolve(flags.dataDir ?? env.PRISM_DATA_DIR ?? defaultDataDir());
  const runtime = flags.runtime ?? env.PRISM_RUNTIME ?? 'auto';
  if (runtime !== 'auto' && !RUNTIME_NAMES.includes(runtime as RuntimeName)) {
    throw new PrismError('INVALID_ARGUMENT', `--runtime must be one of auto, ${RUNTIME_NAMES.join(', ')}; got '${runtime}'`);
  }
  const logLevel = (flags.logLevel ?? env.PRISM_LOG_LEVEL ?? 'info') as LogLevel;
  if (!LEVELS.includes(logLevel)) throw new PrismError('INVALID_ARGUMENT', `--log-level must be one of ${LEVELS.join(', ')}`);
  const cfg: DaemonConfig = {
    apiHost: api.host,
    apiPort: api.port,
    dataDir,
    imagesDir: resolve(flags.imagesDir ?? env.PRISM_IMAGES_DIR ?? join(dataDir, 'images')),
    runtime: runtime as DaemonConfig['runtime'],
    logLevel,
    defaultImage: flags.defaultImage ?? env.PRISM_DEFAULT_IMAGE ?? DEFAULT_IMAGE,
    ...((flags.e2bDomain ?? env.PRISM_E2B_DOMAIN) ? { e2bDomain: flags.e2bDomain ?? env.PRISM_E2B_DOMAIN } : {}),
    insecureRegistries: flags.insecureRegistry ?? (env.PRISM_INSECURE_REGISTRIES ?? '').split(',').filter(Boolean),
    guestDir: resolve(flags.guestDir ?? env.PRISM_GUEST_DIR ?? DEFAULT_GUEST_DIR),
    microvmSnapshots: flags.microvmSnapshots ?? env.PRISM_MICROVM_SNAPSHOTS !== '0',
    warmPool: parseWarmPool(flags.warmPool ?? env.PRISM_WARM_POOL ?? '0'),
    vmm: parseVmm(flags.vmm ?? env.PRISM_VMM ?? 'qemu'),
    store: parseClusterStore(flags, env, () =>
  parseStore(flags.store ?? env.PRISM_STORE ?? 'sqlite', {
      ca: flags.etcdCa ?? env.PRISM_ETCD_CA,
      cert: flags.etcdCert ?? env.PRISM_ETCD_CERT,
      key: flags.etcdKey ?? env.PRISM_ETCD_KEY,
    })),
    labels: parseLabels(flags.label ?? (env.PRISM_LABELS ?? '').split(',').filter(Boolean)),
    capacity: {},
    placement: 'spread',
    directCreate: true,
    nodeTtlMs: (positive('--node-ttl', flags.nodeTtl ?? env.PRISM_NODE_TTL, false) ?? 5) * 1000,
    auth: 'token',
    metricsAuth: 'token',
    console: flags.console ?? env.PRISM_CONSOLE !== '0',
    defaultUser: flags.defaultUser ?? env.PRISM_DEFAULT_USER ?? '65534:65534',
    tls: { mode: 'off' },
    sandboxCidr: flags.sandboxCidr ?? env.PRISM_SANDBOX_CIDR ?? DEFAULT_SANDBOX_CIDR,
    sandboxDns: parseSandboxDns(flags.sandboxDns ?? env.PRISM_SANDBOX_DNS, readResolvConf()),
    scheduleTimeoutMs: (positive('--schedule-timeout', flags.scheduleTimeout ?? env.PRISM_SCHEDULE_TIMEOUT, false) ?? 30) * 1000,
    maxProcesses: positive('--max-processes', flags.maxProcesses ?? env.PRISM_MAX_PROCESSES) ?? 64,
    processBufferBytes: Math.round((positive('--process-buffer-mb', flags.processBufferMb ?? env.PRISM_PROCESS_BUFFER_MB, false) ?? 4) * (1 << 20)),
    maxFileBytes: (positive('--max-file-mb', flags.maxFileMb ?? env.PRISM_MAX_FILE_MB) ?? 1024) * 1024 * 1024,
    pausedTtlMs: Math.round((nonNegative('--paused-ttl', flags.pausedTtl ?? env.PRISM_PAUSED_TTL) ?? 0) * 1000),
    metrics: {
      intervalMs: Math.round((nonNegative('--metrics-interval', flags.metricsInterval ?? env.PRISM_METRICS_INTERVAL) ?? 5) * 1000),
      retentionMs: Math.round((positive('--metrics-retention', flags.metricsRetention ?? env.PRISM_METRICS_RETENTION, false) ?? 60) * 60_000),
    },
  };
  const auth = flags.auth ?? env.PRISM_AUTH ?? 'token';
  if (auth !== 'token' && auth !== 'none') throw new PrismError('INVALID_ARGUMENT', `--auth must be token or none, got '${auth}'`);
  if (auth === 'none' && !isLoopback(cfg.apiHost)) {
    throw new PrismError('INVALID_ARGUMENT', `--auth none is only allowed with a loopback --api address (got ${cfg.apiHost}): anyone who reaches the API could run code`);
  }
  cfg.auth = auth;
  const metricsAuth = flags.metricsAuth ?? env.PRISM_METRICS_AUTH ?? 'token';
  if (metricsAuth !== 'token' && metricsAuth !== 'none') throw new PrismError('INVALID_ARGUMENT', `--metrics-auth must be token or none, got '${metricsAuth}'`);
  cfg.metricsAuth = metricsAuth;
  cfg.tls = parseTls(flags, env);
  if (!/^(root|\d{1,10}(:\d{1,10})?)$/.test(cfg.defaultUser)) {
    throw new PrismError('INVALID_ARGUMENT', `--default-user must be uid[:gid] or root, got '${cfg.defaultUser}'`);
  }
  const placement = flags.placement ?? env.PRISM_PLACEMENT ?? 'spread';
  if (placement !== 'spread' && placement !== 'binpack') throw new PrismError('INVALID_ARGUMENT', `--placement must be spread or binpack, got '${placement}'`);
  cfg.placement = placement;
  const direct = flags.directCreate ?? env.PRISM_DIRECT_CREATE ?? 'on';
  if (direct !== 'on' && direct !== 'off') throw new PrismError('INVALID_ARGUMENT', `--direct-create must be on or off, got '${direct}'`);
  cfg.directCreate = direct === 'on';
  const cpus = positive('--capacity-cpus', flags.capacityCpus ?? env.PRISM_CAPACITY_CPUS, false);
  const memoryMb = positive('--capacity-memory-mb', flags.capacityMemoryMb ?? env.PRISM_CAPACITY_MEMORY_MB);
  const maxSandboxes = positive('--max-sandboxes', flags.maxSandboxes ?? env.PRISM_MAX_SANDBOXES);
  if (cpus !== undefined) cfg.capacity.cpus = cpus;
  if (memoryMb !== undefined) cfg.capacity.memoryMb = memoryMb;
  if (maxSandboxes !== undefined) cfg.capacity.maxSandboxes = maxSandboxes;
  for (const [flag, v, key] of [
    ['--cpu-overcommit', flags.cpuOvercommit ?? env.PRISM_CPU_OVERCOMMIT, 'cpuOvercommit'],
    ['--memory-overcommit', flags.memoryOvercommit ?? env.PRISM_MEMORY_OVERCOMMIT, 'memoryOvercommit'],
  ] as const) {
    const n = positive(flag, v, false);
    if (n === undefined) continue;
    if (n < 1 || n > 1000) throw new PrismError('INVALID_ARGUMENT', `${flag} must be between 1 and 1000 (a factor on the capacity), got '${v}'`);
    cfg.capacity[key] = n;
  }
  const advertise = flags.advertise ?? env.PRISM_ADVERTISE;
  if (advertise) {
    if (!/^https?:\/\/[^/]+$/.test(advertise.replace(/\/+$/, ''))) throw new PrismError('INVALID_ARGUMENT', `--advertise must be a URL like http://10.0.0.5:8008, got '${advertise}'`);
    cfg.advertise = advertise.replace(/\/+$/, '');
  }
  const kernel = flags.kernel ?? env.PRISM_KERNEL;
  if (kernel) cfg.kernel = resolve(kernel);
  const dockerHost = flags.dockerHost ?? env.PRISM_DOCKER_HOST;
  if (dockerHost) {
    if (!/^(unix|tcp):\/\/./.test(dockerHost)) throw new PrismError('INVALID_ARGUMENT', `--docker-host must be unix:///path or tcp://host:port, got '${dockerHost}'`);
    cfg.dockerHost = dockerHost;
  }
  const firecrackerBin = flags.firecrackerBin ?? env.PRISM_FIRECRACKER_BIN;
  if (firecrackerBin) {
    // It used to select Firecracker; now it only locates it, so a forgotten setting must not pass silently.
    if (cfg.vmm !== 'firecracker') {
      throw new PrismError('INVALID_ARGUMENT', '--firecracker-bin (PRISM_FIRECRACKER_BIN) only says where Firecracker is; choose it with --vmm firecracker (untested), or unset it to use QEMU');
    }
    cfg.firecrackerBin = resolve(firecrackerBin);
  }
  const authFile = flags.registryAuth ?? env.PRISM_REGISTRY_AUTH;
  if (authFile) cfg.registryAuthFile = resolve(authFile);
  const name = flags.name ?? env.PRISM_NAME;
  if (name) cfg.name = name;
  const logFile = flags.logFile ?? env.PRISM_LOG_FILE;
  if (logFile) cfg.logFile = resolve(logFile);
  return cfg;
}

function readResolvConf(): string {
  try {
    return readFileSync('/etc/resolv.conf', 'utf8');
  } catch {
    return '';
  }
}
