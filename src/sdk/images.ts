import type { GcResult, ImageRecord, Platform, PullProgress } from '../images/image-store.js';
import { PrismApiError } from './errors.js';
import { readNdjson, type ApiTransport } from './sandbox-handle.js';

export type { GcResult, ImageRecord, Platform, PullProgress };

export interface PullOptions {
  platform?: Platform;
  /** Called for each progress event; with it, the pull streams (NDJSON). */
  onProgress?: (p: PullProgress) => void;
  signal?: AbortSignal;
}

/** `prism.images`: pull, list, inspect, remove and import images on the daemon. */
export class ImagesApi {
  readonly #api: ApiTransport;

  constructor(api: ApiTransport) {
    this.#api = api;
  }

  async list(): Promise<ImageRecord[]> {
    return (await this.#api.json<{ images: ImageRecord[] }>('GET', '/images')).images;
  }

  get(ref: string): Promise<ImageRecord> {
    return this.#api.json<ImageRecord>('GET', `/images/${encodeURIComponent(ref)}`);
  }

  async pull(ref: string, opts: PullOptions = {}): Promise<ImageRecord> {
    const body = opts.platform ? { ref, platform: opts.platform } : { ref };
    if (!opts.onProgress) return this.#api.json<ImageRecord>('POST', '/images', body, opts.signal);
    const res = await this.#api.raw('POST', '/images', body, 'application/x-ndjson', opts.signal);
    for await (const ev of readNdjson(res, opts.signal)) {
      const e = ev as { type: string; image?: ImageRecord; error?: { code: string; message: string } } & PullProgress;
      if (e.type === 'progress') {
        const { type: _t, ...p } = e;
        opts.onProgress(p);
      } else if (e.type === 'done' && e.image) {
        return e.image;
      } else if (e.type === 'error') {
        throw new PrismApiError(e.error?.code ?? 'INTERNAL', e.error?.message ?? 'pull failed', { status: res.status });
      }
    }
    throw new PrismApiError('UNAVAILABLE', 'pull stream ended before it finished', { status: res.status });
  }

  /** Refused with FAILED_PRECONDITION while a sandbox uses the image. */
  async remove(ref: string): Promise<void> {
    await this.#api.json<void>('DELETE', `/images/${encodeURIComponent(ref)}`);
  }

  /** Imports a `docker save` archive or an OCI layout tar; `ref` names an archive that carries no name. */
  async import(archive: Uint8Array | ReadableStream<Uint8Array>, opts: { ref?: string; signal?: AbortSignal } = {}): Promise<ImageRecord[]> {
    const q = opts.ref ? `?ref=${encodeURIComponent(opts.ref)}` : '';
    return (await this.#api.upload<{ images: ImageRecord[] }>('POST', `/images/import${q}`, archive, 'application/x-tar', opts.signal)).images;
  }

  gc(): Promise<GcResult> {
    return this.#api.json<GcResult>('POST', '/images/gc');
  }
}
