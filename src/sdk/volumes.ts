import type { Volume } from '../core/types.js';
import type { ApiTransport } from './sandbox-handle.js';

export type { Volume };

export interface CreateVolumeOptions {
  name: string;
  /** Size in MiB (16 to 1048576); writes past it fail with ENOSPC (DISK_FULL in exec results). */
  sizeMb: number;
  /** Let more than one sandbox mount it read-write at once (containers only; never with a microVM). */
  multiAttach?: boolean;
  /** The node (id or name) to make it on; absent: the node the client talks to. */
  node?: string;
}

/**
 * `prism.volumes`: persistent file systems that outlive sandboxes. A volume lives on the node that
 * created it (`node`, else the one the client talks to); sandboxes that mount it
 * (CreateSandboxOptions.volumes) run on that node.
 */
export class VolumesApi {
  readonly #api: ApiTransport;

  constructor(api: ApiTransport) {
    this.#api = api;
  }

  create(opts: CreateVolumeOptions): Promise<Volume> {
    return this.#api.json<Volume>('POST', '/volumes', opts);
  }

  async list(): Promise<Volume[]> {
    return (await this.#api.json<{ volumes: Volume[] }>('GET', '/volumes')).volumes;
  }

  get(name: string): Promise<Volume> {
    return this.#api.json<Volume>('GET', `/volumes/${encodeURIComponent(name)}`);
  }

  /** Deletes the volume and its data; CONFLICT while a sandbox (running or stopped) has it attached. */
  async delete(name: string): Promise<void> {
    await this.#api.json<void>('DELETE', `/volumes/${encodeURIComponent(name)}`);
  }
}
