/** The Prism TypeScript SDK. `new Prism({ url, token })`, then `sandboxes.create()` and `exec()`. */
export { Prism, DEFAULT_URL, normalizeUrl } from './client.js';
export type { PrismOptions, HealthInfo, ClusterInfo, CreateSandboxOptions } from './client.js';
export { SandboxHandle } from './sandbox-handle.js';
export type { ExecOptions, ExecResult, ExecLogEntry } from './sandbox-handle.js';
export type { ExecEvent, ExecExit } from './exec-stream.js';
export { ProcessHandle, ProcessesApi } from './processes.js';
export type { ProcessInfo, ProcessSignal, ProcessEvent, ProcessOutput, Offsets, Since, StartProcessOptions } from './processes.js';
export { PrismApiError } from './errors.js';
export { Pty } from './pty.js';
export type { PtyOptions, PtyExit, PtySignal } from './pty.js';
export type { ErrorCode } from '../core/errors.js';
export type { TokenInfo, NewToken, EgressPolicy, NetworkSpec, Sandbox, SandboxStatus, NodeInfo, NodeResources, NodeCapacity, Reservation, RuntimeName } from '../core/types.js';
export { ImagesApi } from './images.js';
export type { PullOptions, ImageRecord, PullProgress, Platform, GcResult } from './images.js';
export { VolumesApi } from './volumes.js';
export type { CreateVolumeOptions, Volume } from './volumes.js';
export type { VolumeAttachment, VolumeMount } from '../core/types.js';
