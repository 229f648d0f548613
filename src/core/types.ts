/** Domain types shared by every layer. See docs/glossary.md for the words. */

export type RuntimeName = 'oci' | 'microvm' | 'docker';
export const RUNTIME_NAMES: readonly RuntimeName[] = ['oci', 'microvm', 'docker'];

/** Bounds of a sandbox's diskMb (the writable layer is a sparse file: only what is written is used). */
export const DISK_MB_MIN = 64;
export const DISK_MB_MAX = 1 << 20;
/** Highest maxOpenFiles: the hard RLIMIT_NOFILE a task gets can only go up to what prismd itself may set. */
export const MAX_OPEN_FILES_MAX = 20000;

export type SandboxStatus =
  | 'pending'
  | 'scheduled'
  | 'starting'
  | 'running'
  | 'stopping'
  | 'stopped'
  | 'failed'
  | 'lost'
  | 'deleting';

/**
 * Where a sandbox may open connections. `none`: no interface but `lo`. `all`: the internet, but never
 * the host, other sandboxes, link-local/metadata or private ranges. A list: only the given CIDRs and
 * domain names (and what those names resolve to through the sandbox's DNS filter), `deny` winning.
 * See docs/network.md.
 */
export type EgressPolicy = 'none' | 'all' | { allow: string[]; deny: string[] };

export interface NetworkSpec {
  egress: EgressPolicy;
}

/** What a user asked for; defaults already applied. */
export interface SandboxSpec {
  image: string;
  runtime: RuntimeName;
  cpus: number;
  memoryMb: number;
  pidsLimit: number;
  /** Size of the writable layer (files the sandbox writes) in MiB; writes past it fail with ENOSPC. */
  diskMb: number;
  /** RLIMIT_NOFILE (soft and hard) of every process in the sandbox. */
  maxOpenFiles: number;
  env: Record<string, string>;
  workdir: string;
  /** Auto-stop after this many seconds of running; 0 = never. */
  timeoutSec: number;
  /** Commands run as this user (`name|uid[:group|gid]`); absent = the image's User, else root. */
  user?: string;
  /** Only nodes carrying all of these labels may run the sandbox. */
  nodeSelector?: Record<string, string>;
  /** Absent (records older than network policies) means `{ egress: 'none' }`. */
  network?: NetworkSpec;
  /** Sandbox TCP ports reachable through prismd at `/api/v1/sandboxes/:id/ports/:port/`. */
  ports?: number[];
}

export interface Sandbox extends SandboxSpec {
  id: string;
  name: string;
  status: SandboxStatus;
  node: string;
  imageDigest?: string;
  createdAt: string;
  startedAt?: string;
  stoppedAt?: string;
  /** Why the sandbox is `failed`/`lost`, or why the last stop happened. */
  error?: { code: string; message: string };
}

export interface ExecResult {
  exitCode: number;
  /** Signal name when the process was killed by one (e.g. `SIGKILL`). */
  signal?: string;
  timedOut: boolean;
  oomKilled: boolean;
  /** The sandbox's writable layer was full when the command ended (it reached diskMb). */
  diskFull: boolean;
  /**
   * The limit the command ran into, as a stable code: `TIMEOUT` (killed at timeoutSec), `OOM_KILLED`
   * (killed at memoryMb) or `DISK_FULL` (diskMb reached). Absent when no limit was hit.
   */
  limitExceeded?: LimitCode;
  durationMs: number;
}

export type LimitCode = 'TIMEOUT' | 'OOM_KILLED' | 'DISK_FULL';

/** The one limit to report for a command: what killed it first, else a full disk. */
export function limitExceeded(r: { timedOut: boolean; oomKilled: boolean; diskFull: boolean }): LimitCode | undefined {
  if (r.timedOut) return 'TIMEOUT';
  if (r.oomKilled) return 'OOM_KILLED';
  if (r.diskFull) return 'DISK_FULL';
  return undefined;
}

export interface ExecRecord extends ExecResult {
  id: string;
  sandboxId: string;
  cmd: string[];
  startedAt: string;
  /** Output as text (`utf8`) or as base64 of the exact bytes (`base64`); see docs/api.md. */
  stdout: string;
  stderr: string;
  encoding: 'utf8' | 'base64';
  /** True when the stored output was cut at the per-record cap (the live stream was complete). */
  truncated: boolean;
}

export interface NodeResources {
  cpus: number;
  memoryBytes: number;
  memoryUsedBytes: number;
  diskBytes: number;
  diskUsedBytes: number;
  load1: number;
  /** Busy share of all CPUs over the last refresh interval, 0-100. */
  cpuPercent: number;
}

export interface RuntimeProbeInfo {
  name: RuntimeName;
  usable: boolean;
  reason?: string;
  details?: Record<string, string>;
}

/** What a node offers to sandboxes (after `--capacity-*` flags) and what placement has reserved of it. */
export interface NodeCapacity {
  cpus: number;
  memoryMb: number;
  /** Most sandboxes this node takes (0 = no limit but memory and CPU). */
  maxSandboxes: number;
}

export interface Reservation {
  cpus: number;
  memoryMb: number;
  sandboxes: number;
}

export interface NodeInfo {
  id: string;
  name: string;
  /** Base URL of this node's API, as other nodes reach it (proxying). */
  address: string;
  /** `alive` while the node renews its lease; `dead` once it expired. Derived, never stored. */
  status: 'alive' | 'dead';
  labels: Record<string, string>;
  capacity: NodeCapacity;
  reserved: Reservation;
  version: string;
  runtimes: RuntimeName[];
  defaultRuntime: RuntimeName;
  /** What each runtime's probe found on this node: usable or why not, and how it runs (accelerator). */
  runtimeInfo: RuntimeProbeInfo[];
  resources: NodeResources;
  sandboxes: number;
  startedAt: string;
  heartbeatAt: string;
}

/** An API token as listed: never its secret. */
export interface TokenInfo {
  id: string;
  name: string;
  createdAt: string;
}

export interface NewToken extends TokenInfo {
  /** `prism_<id>_<secret>`: shown once, at creation. */
  token: string;
}

export type FileType = 'file' | 'dir' | 'symlink' | 'other';

/** One entry of a sandbox's filesystem, as the files API returns it (docs/api.md, "Files"). */
export interface FileEntry {
  name: string;
  type: FileType;
  /** Bytes for files; 0 for directories and links. */
  size: number;
  /** Permission bits, e.g. 0o644 = 420. */
  mode: number;
  /** ISO 8601, millisecond precision. */
  mtime: string;
  /** Where a symlink points, as stored (never resolved). */
  linkTarget?: string;
}
