import { join, resolve } from 'node:path';
import { PrismError } from '../core/errors.js';
import { RUNTIME_NAMES, type RuntimeName } from '../core/types.js';

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
  /** Registries (host[:port]) that may be reached over plain HTTP; loopback always may. */
  insecureRegistries: string[];
  /** Guest kernel + initramfs for the microvm runtime (scripts/prepare-guest.sh); host-wide. */
  guestDir: string;
  kernel?: string;
  /** Run microVMs on Firecracker from this binary (else Firecracker only if `firecracker` is on PATH). */
  firecrackerBin?: string;
  /** Create microVMs by restoring template snapshots (default; `--no-microvm-snapshots` turns it off). */
  microvmSnapshots: boolean;
  /** microVMs kept restored and ready per image + VM shape (0 = none). */
  warmPool: number;
  /** JSON file `{"auths": {"host[:port]": {"username": "...", "password": "..."}}}` (mode 0600). */
  registryAuthFile?: string;
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
  insecureRegistry?: string[];
  registryAuth?: string;
  guestDir?: string;
  kernel?: string;
  microvmSnapshots?: boolean;
  warmPool?: string;
  firecrackerBin?: string;
}

export const DEFAULT_API = '127.0.0.1:8008';
export const DEFAULT_IMAGE = 'prism.local/base:bookworm';
/** Where scripts/prepare-guest.sh puts the guest kernel and initramfs. */
export const DEFAULT_GUEST_DIR = '/var/lib/prism/guest';
const LEVELS: LogLevel[] = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'];

export function parseHostPort(s: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(s.replace(/^https?:\/\//, ''));
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw new PrismError('INVALID_ARGUMENT', `--api must be HOST:PORT, got '${s}'`);
  return { host: m[1] ?? (m[2] || '127.0.0.1'), port };
}

export function defaultDataDir(now = new Date()): string {
  if (process.getuid?.() === 0) return '/var/lib/prism';
  return resolve('data', now.toISOString().replace(/[:.]/g, '-'));
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
    insecureRegistries: flags.insecureRegistry ?? (env.PRISM_INSECURE_REGISTRIES ?? '').split(',').filter(Boolean),
    guestDir: resolve(flags.guestDir ?? env.PRISM_GUEST_DIR ?? DEFAULT_GUEST_DIR),
    microvmSnapshots: flags.microvmSnapshots ?? env.PRISM_MICROVM_SNAPSHOTS !== '0',
    warmPool: parseWarmPool(flags.warmPool ?? env.PRISM_WARM_POOL ?? '0'),
  };
  const kernel = flags.kernel ?? env.PRISM_KERNEL;
  if (kernel) cfg.kernel = resolve(kernel);
  const firecrackerBin = flags.firecrackerBin ?? env.PRISM_FIRECRACKER_BIN;
  if (firecrackerBin) cfg.firecrackerBin = resolve(firecrackerBin);
  const authFile = flags.registryAuth ?? env.PRISM_REGISTRY_AUTH;
  if (authFile) cfg.registryAuthFile = resolve(authFile);
  const name = flags.name ?? env.PRISM_NAME;
  if (name) cfg.name = name;
  const logFile = flags.logFile ?? env.PRISM_LOG_FILE;
  if (logFile) cfg.logFile = resolve(logFile);
  return cfg;
}
