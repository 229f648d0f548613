/** The Prism TypeScript SDK. `new Prism({ url, token })`, then `sandboxes.create()` and `exec()`. */
import { PrismClient, type PrismOptions } from './client.js';
import { connectionFromEnv } from './config.js';
import { nodePlatform } from './node-platform.js';

/** Client for one Prism daemon (any node of a cluster), on Node. The browser build has its own. */
export class Prism extends PrismClient {
  constructor(opts: PrismOptions = {}) {
    super(opts, nodePlatform);
  }

  /**
   * A client configured like prismctl: PRISM_API, PRISM_TOKEN and PRISM_CA (a PEM file) from `env`,
   * else the login saved by `prismctl login` or the quick start (~/.config/prism/config.json).
   */
  static fromEnv(env: Record<string, string | undefined> = process.env, extra: Pick<PrismOptions, 'fetch'> = {}): Prism {
    return new Prism({ ...connectionFromEnv(env), ...extra });
  }
}

export { DEFAULT_URL, normalizeUrl } from './config-url.js';
export type { PrismOptions, HealthInfo, ClusterInfo, EtcdMember, CreateSandboxOptions, LifecycleEvent, LifecycleEventType, EventsOptions } from './client.js';
export { SandboxHandle } from './sandbox-handle.js';
export type { ExecOptions, ExecResult, ExecLogEntry, SandboxMetric } from './sandbox-handle.js';
export type { ExecEvent, ExecExit } from './exec-stream.js';
export { ProcessHandle, ProcessesApi } from './processes.js';
export type { ProcessInfo, ProcessSignal, ProcessEvent, ProcessOutput, Offsets, Since, StartProcessOptions } from './processes.js';
export { PrismApiError } from './errors.js';
export { Pty } from './pty.js';
export type { PtyOptions, PtyExit, PtySignal } from './pty.js';
export type { ErrorCode } from '../core/errors.js';
export type { TokenInfo, NewToken, EgressPolicy, NetworkSpec, Sandbox, SandboxStatus, Snapshot, NodeInfo, NodeResources, NodeCapacity, Reservation, RuntimeName } from '../core/types.js';
export { ImagesApi } from './images.js';
export { SandboxFiles } from './files.js';
export type { FileOptions, FileEntry, FileType } from './files.js';
export type { PullOptions, ImageRecord, PullProgress, Platform, GcResult } from './images.js';
export { VolumesApi } from './volumes.js';
export type { CreateVolumeOptions, Volume } from './volumes.js';
export type { VolumeAttachment, VolumeMount } from '../core/types.js';
