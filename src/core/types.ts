/** Domain types shared by every layer. See docs/glossary.md for the words. */

export type RuntimeName = 'oci' | 'microvm' | 'docker';
export const RUNTIME_NAMES: readonly RuntimeName[] = ['oci', 'microvm', 'docker'];

/** Bounds of a sandbox's diskMb (the writable layer is a sparse file: only what is written is used). */
export const DISK_MB_MIN = 64;
export const DISK_MB_MAX = 1 << 20;
/** Highest maxOpenFiles: the hard RLIMIT_NOFILE a task gets can only go up to what prismd itself may set. */
export const MAX_OPEN_FILES_MAX = 20000;

import type { SandboxReason, SandboxStatus } from './lifecycle.js';
/** Statuses and their transitions: src/core/lifecycle.ts (the one table). */
export { SANDBOX_STATUSES, SANDBOX_REASONS, type SandboxStatus, type SandboxReason } from './lifecycle.js';

/** Most ports one sandbox exposes through the API. */
export const MAX_PORTS = 16;

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
  /** Volumes mounted into the sandbox (attached at create, released at delete). */
  volumes?: VolumeMount[];
  /** The node holding the sandbox's volumes (volumes are node-local): placement puts it there. */
  volumeNode?: string;
  /** The node holding the sandbox's image when only one node has it (a snapshot's): placement puts it there. */
  imageNode?: string;
  /** The snapshot the sandbox was created from. */
  snapshot?: string;
  /** The client's own labels (E2B metadata): kept, returned, and matched by `GET /sandboxes?metadata=k=v`. */
  metadata?: Record<string, string>;
  /** What the end of `timeoutSec` does; absent = `stop`. */
  onTimeout?: OnTimeout;
  /** false: exec, files and terminals on a paused sandbox fail (412) instead of resuming it first. */
  autoResume?: boolean;
}

/** What happens when a sandbox's timeoutSec runs out (default stop). */
export const ON_TIMEOUT = ['stop', 'delete', 'pause'] as const;
export type OnTimeout = (typeof ON_TIMEOUT)[number];

export interface Sandbox extends SandboxSpec {
  id: string;
  name: string;
  status: SandboxStatus;
  node: string;
  imageDigest?: string;
  createdAt: string;
  startedAt?: string;
  stoppedAt?: string;
  /** Why the sandbox is `failed`/`lost`, or why the last stop happened (lifecycle.ts SANDBOX_REASONS). */
  error?: { code: SandboxReason; message: string };
  /** When it was paused (while `paused`). */
  pausedAt?: string;
  /**
   * Secrets of sandbox-scoped clients, made at create and never serialised by API v1: `access` for the
   * in-sandbox surface of the E2B gateway (envd), `traffic` for its exposed ports. Absent on records
   * made before they existed (those sandboxes are not reachable that way).
   */
  secrets?: { access: string; traffic: string };
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

export const LIMIT_CODES = ['TIMEOUT', 'OOM_KILLED', 'DISK_FULL'] as const;
export type LimitCode = (typeof LIMIT_CODES)[number];

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
  /**
   * Placement may reserve up to this many times `cpus` / `memoryMb` (prismd --cpu-overcommit,
   * --memory-overcommit): sandboxes' limits stay hard, but idle ones do not use them. Absent (a node of
   * an older version): DEFAULT_CPU_OVERCOMMIT / DEFAULT_MEMORY_OVERCOMMIT.
   */
  cpuOvercommit?: number;
  memoryOvercommit?: number;
}

/** CPU is a quota shared by time: 4x the cores, as container hosts usually allow. */
export const DEFAULT_CPU_OVERCOMMIT = 4;
/** Memory limits are reserved whole unless the operator says otherwise: idle memory cannot be taken back. */
export const DEFAULT_MEMORY_OVERCOMMIT = 1;

/** What placement may reserve on a node: its capacity times its overcommit factors. */
export function allocatable(c: NodeCapacity): { cpus: number; memoryMb: number } {
  return { cpus: c.cpus * (c.cpuOvercommit ?? DEFAULT_CPU_OVERCOMMIT), memoryMb: Math.floor(c.memoryMb * (c.memoryOvercommit ?? DEFAULT_MEMORY_OVERCOMMIT)) };
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
  /**
   * Admin tokens also manage tokens, remove nodes and read the cluster's join token. The first token of
   * a cluster is one; tokens made before roles existed count as admin (they could do all of it).
   */
  admin: boolean;
}

export interface NewToken extends TokenInfo {
  /** `prism_<id>_<secret>`: shown once, at creation. */
  token: string;
}

/** Bounds of a volume's sizeMb (a sparse file: only what is written uses host disk). */
export const VOLUME_MB_MIN = 16;
export const VOLUME_MB_MAX = 1 << 20;
/** Most volumes one sandbox mounts (a microVM has 8 virtio-mmio slots, 3-4 of them taken by Prism). */
export const MAX_VOLUMES_PER_SANDBOX = 4;

/** A volume as a sandbox asks for it: which one, where, and whether writes are refused. */
export interface VolumeMount {
  name: string;
  /** Absolute path in the sandbox; not `/` and not under /proc, /sys, /dev or /.prism. */
  mountPath: string;
  readOnly: boolean;
}

/** A sandbox holding a volume: from its create until its delete, running or stopped. */
export interface VolumeAttachment {
  sandboxId: string;
  mountPath: string;
  readOnly: boolean;
  /** Who mounts the file system: each microVM is a kernel of its own, containers share the host's. */
  runtime: RuntimeName;
}

/**
 * Persistent storage that outlives sandboxes: an ext4 file system of `sizeMb` on one node (volumes
 * are node-local; sandboxes that mount one are placed on that node).
 */
export interface Volume {
  name: string;
  sizeMb: number;
  node: string;
  /** Read-write attachments by more than one sandbox allowed (containers only: one kernel). */
  multiAttach: boolean;
  createdAt: string;
  attachments: VolumeAttachment[];
  /**
   * A microVM's kernel had write access since the last check: the guest could have written any bytes
   * to the image, so the host checks the file system (e2fsck) before its own kernel mounts it.
   */
  needsCheck?: boolean;
}

/** Signals a background process may be sent through the API. */
export const PROCESS_SIGNALS = ['SIGHUP', 'SIGINT', 'SIGQUIT', 'SIGKILL', 'SIGUSR1', 'SIGUSR2', 'SIGTERM', 'SIGCONT', 'SIGSTOP', 'SIGTSTP', 'SIGWINCH', 'SIGALRM'] as const;
export type ProcessSignal = (typeof PROCESS_SIGNALS)[number];

/**
 * A command started with `background: true`: it runs on the sandbox's node, apart from the request that
 * started it. The result fields are set once it exited; `error` says why when it ended because its
 * sandbox was stopped, deleted or failed (code `INTERRUPTED`).
 */
export interface ProcessInfo extends Partial<ExecResult> {
  id: string;
  sandboxId: string;
  cmd: string[];
  status: 'running' | 'exited';
  startedAt: string;
  endedAt?: string;
  /** Whether `POST .../stdin` still reaches the command. */
  stdinOpen: boolean;
  /** Bytes the command wrote so far to each stream (the next offset). */
  stdoutBytes: number;
  stderrBytes: number;
  error?: { code: string; message: string };
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

/**
 * A sandbox's filesystem at one moment, kept as an image in the image store of the node that made it
 * (`image`, `prism.local/snapshots/<id>`: the sandbox's image plus one layer of what it changed).
 * New sandboxes are created from it (`POST /sandboxes {snapshot}`) on that node. `memory`: whether
 * running processes come back too (not yet on any runtime: filesystem only).
 */
export interface Snapshot {
  id: string;
  name: string;
  sandboxId: string;
  sandboxName: string;
  node: string;
  runtime: RuntimeName;
  image: string;
  imageDigest: string;
  /** Bytes the snapshot takes: the layer it added, or its memory and disk. */
  size: number;
  memory: boolean;
  /**
   * With `memory`: what a sandbox made from it must have, as its VM's shape is the snapshotted one
   * (creates take these; a request asking otherwise is refused).
   */
  shape?: { cpus: number; memoryMb: number; diskMb: number; pidsLimit: number; maxOpenFiles: number; network: NetworkSpec; ports: number[] };
  createdAt: string;
}
