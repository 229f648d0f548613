/** The Prism TypeScript SDK. `new Prism({ url, token })`, then `sandboxes.create()` and `exec()`. */
export { Prism, DEFAULT_URL, normalizeUrl } from './client.js';
export type { PrismOptions, HealthInfo, ClusterInfo, CreateSandboxOptions } from './client.js';
export { SandboxHandle } from './sandbox-handle.js';
export type { ExecOptions, ExecResult, ExecLogEntry } from './sandbox-handle.js';
export { PrismApiError } from './errors.js';
export type { ErrorCode } from '../core/errors.js';
export type { TokenInfo, NewToken, EgressPolicy, NetworkSpec, Sandbox, SandboxStatus, NodeInfo, NodeResources, NodeCapacity, Reservation, RuntimeName } from '../core/types.js';
export { ImagesApi } from './images.js';
export { SandboxFiles } from './files.js';
export type { FileOptions, FileEntry, FileType } from './files.js';
export type { PullOptions, ImageRecord, PullProgress, Platform, GcResult } from './images.js';
