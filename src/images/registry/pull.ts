import type { ContentStore } from '../content/content-store.js';
import type { PullOptions, PullProgress } from '../image-store.js';
import { checkManifest, type Descriptor } from '../oci-types.js';
import { formatReference, parseReference, type ImageReference } from '../reference.js';
import type { RegistryClient } from './registry-client.js';

/**
 * Pulls one image's content into a content store: manifest (and index), config and layers, each
 * verified. The manifest (and index) are written last, so a manifest in the store implies its blobs
 * are there too. Tagging and unpacking are the image store's business, not this function's.
 */

export interface PullImageOptions extends PullOptions {
  /** The reference as the user wrote it, for progress events; default the normalised one. */
  ref?: string;
}

export interface PullImageResult {
  manifestDigest: string;
  indexDigest?: string;
  mediaType: string;
}

/** Per-layer progress is reported at most this often, plus a first and a last event. */
const PROGRESS_INTERVAL_MS = 100;

export async function pullImage(
  client: RegistryClient,
  content: ContentStore,
  ref: ImageReference | string,
  opts: PullImageOptions = {},
): Promise<PullImageResult> {
  const parsed = typeof ref === 'string' ? parseReference(ref) : ref;
  const label = opts.ref ?? formatReference(parsed);
  const emit = (p: Omit<PullProgress, 'ref'>): void => opts.onProgress?.({ ref: label, ...p });
  opts.signal?.throwIfAborted();
  emit({ phase: 'resolving' });
  const resolved = await client.resolve(parsed, opts.platform, opts.signal);
  const manifest = checkManifest(JSON.parse(resolved.manifestBytes.toString('utf8')), resolved.manifestDigest);
  await client.fetchBlob(parsed, manifest.config, content, undefined, opts.signal);

  const layers = [...new Map(manifest.layers.map((l) => [l.digest, l])).values()];
  await forEachLimited(layers, client.maxConcurrentDownloads, opts.signal, (layer, signal) => fetchLayer(client, content, parsed, layer, emit, signal));

  if (resolved.indexBytes !== undefined) await content.putBuffer(resolved.indexBytes, resolved.indexDigest);
  await content.putBuffer(resolved.manifestBytes, resolved.manifestDigest);
  const out: PullImageResult = { manifestDigest: resolved.manifestDigest, mediaType: resolved.mediaType };
  if (resolved.indexDigest !== undefined) out.indexDigest = resolved.indexDigest;
  return out;
}

async function fetchLayer(
  client: RegistryClient,
  content: ContentStore,
  ref: ImageReference,
  layer: Descriptor,
  emit: (p: Omit<PullProgress, 'ref'>) => void,
  signal: AbortSignal,
): Promise<void> {
  const total = layer.size;
  let last = 0;
  let started = false;
  const onBytes = (current: number): void => {
    const now = Date.now();
    if (started && now - last < PROGRESS_INTERVAL_MS) return;
    started = true;
    last = now;
    emit({ phase: 'downloading', layer: layer.digest, current, total });
  };
  const result = await client.fetchBlob(ref, layer, content, onBytes, signal);
  emit({ phase: 'downloading', layer: layer.digest, current: total, total, ...(result.cached ? { cached: true } : {}) });
}

/**
 * Runs `fn` over `items`, at most `limit` at once. The first failure stops the rest (their signal
 * aborts) and is what rejects; a caller's abort rejects with its reason.
 */
async function forEachLimited<T>(
  items: T[],
  limit: number,
  outer: AbortSignal | undefined,
  fn: (item: T, signal: AbortSignal) => Promise<void>,
): Promise<void> {
  const stop = new AbortController();
  const signal = outer ? AbortSignal.any([outer, stop.signal]) : stop.signal;
  let next = 0;
  let failure: { error: unknown } | undefined;
  const worker = async (): Promise<void> => {
    while (next < items.length && !signal.aborted) {
      const item = items[next++]!;
      try {
        await fn(item, signal);
      } catch (e) {
        failure ??= { error: e };
        stop.abort(e);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  if (outer?.aborted) throw outer.reason;
  if (failure !== undefined) throw failure.error;
}

/** {@link pullImage} behind the shape LocalImageStore takes as its `puller`. */
export class RegistryPuller {
  constructor(readonly client: RegistryClient) {}

  pull(ref: ImageReference, content: ContentStore, opts: PullImageOptions = {}): Promise<PullImageResult> {
    return pullImage(this.client, content, ref, opts);
  }
}
