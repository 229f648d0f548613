import { Readable } from 'node:stream';
import { PrismError } from '../../core/errors.js';
import { sha256Digest, type ContentStore } from '../content/content-store.js';
import type { Platform } from '../image-store.js';
import { checkDescriptor, INDEX_TYPES, MANIFEST_TYPES, MEDIA_TYPES } from '../oci-types.js';
import { formatReference, parseReference, registryDomain, registryHost, repositoryPath, type ImageReference } from '../reference.js';
import type { Credentials } from './registry-auth.js';
import { checkIndex, defaultPlatform, selectManifest } from './manifest-select.js';
import { discard, RegistryTransport, statusError, type RegistryTarget } from './registry-http.js';
import { IdleTimeout, withRetry } from './retry.js';
import { SharedDownload } from './shared-download.js';

/**
 * A pull client for the OCI distribution API (registry v2), written against the distribution spec.
 * HTTPS by default; plain HTTP only to loopback hosts and hosts listed in `insecure`. Every byte is
 * verified against its digest before it becomes visible, and transient failures (network errors,
 * 5xx, 429, stalls) are retried with backoff.
 *
 * Errors: NOT_FOUND (no such repository, tag, blob or platform), UNAUTHENTICATED (credentials missing
 * or rejected), PERMISSION_DENIED (403), INVALID_ARGUMENT (content not matching its digest or size,
 * unsupported manifest), FAILED_PRECONDITION (plain HTTP to a host not allowed it), UNAVAILABLE
 * (unreachable after retries). A caller's abort rejects with its signal's reason.
 */

export interface RegistryClientOptions {
  /** `host` or `host:port` that may be reached over plain HTTP (loopback always may). */
  insecure?: string[];
  /** Credentials by `host[:port]` (the API host or the domain as written in image names). */
  auths?: Record<string, Credentials>;
  /** Retries after the first attempt for transient failures; default 3. */
  retries?: number;
  /** Base backoff between retries; default 500 ms, doubling per attempt. */
  retryDelayMs?: number;
  /** How long a request may wait for headers or go without receiving data; default 30 s. */
  timeoutMs?: number;
  /** Layers downloaded at once by one pull; default 3. */
  maxConcurrentDownloads?: number;
  userAgent?: string;
}

export interface ResolvedManifest {
  manifestDigest: string;
  /** Exactly the bytes served; the digest is over them. */
  manifestBytes: Buffer;
  mediaType: string;
  /** Set when the reference named an index (or Docker manifest list) and a platform was chosen from it. */
  indexDigest?: string;
  indexBytes?: Buffer;
  indexMediaType?: string;
}

export interface BlobFetchResult {
  digest: string;
  size: number;
  /** The content store already had it; nothing was downloaded. */
  cached: boolean;
}

const ACCEPT = [MEDIA_TYPES.ociManifest, MEDIA_TYPES.ociIndex, 'application/vnd.docker.distribution.manifest.v2+json', 'application/vnd.docker.distribution.manifest.list.v2+json'].join(', ');
const SCHEMA1_TYPES = new Set(['application/vnd.docker.distribution.manifest.v1+json', 'application/vnd.docker.distribution.manifest.v1+prettyjws']);
/** The distribution spec asks registries to accept manifests of at least 4 MiB; nothing real is larger. */
const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;

/** Downloads in progress in this process, by content store and digest, so one blob is fetched once. */
const inFlight = new Map<string, SharedDownload<BlobFetchResult>>();

interface FetchedManifest {
  digest: string;
  bytes: Buffer;
  mediaType: string;
}

export class RegistryClient {
  readonly maxConcurrentDownloads: number;
  private readonly transport: RegistryTransport;
  private readonly retries: number;
  private readonly retryDelayMs: number;
  private readonly timeoutMs: number;

  constructor(opts: RegistryClientOptions = {}) {
    this.transport = new RegistryTransport({ insecure: opts.insecure ?? [], auths: opts.auths ?? {}, userAgent: opts.userAgent ?? 'prism' });
    this.retries = opts.retries ?? 3;
    this.retryDelayMs = opts.retryDelayMs ?? 500;
    this.timeoutMs = opts.timeoutMs ?? 30_000;
    this.maxConcurrentDownloads = Math.max(1, opts.maxConcurrentDownloads ?? 3);
  }

  /** The image manifest for `ref` on `platform`, choosing from an index when the reference names one. */
  async resolve(ref: ImageReference | string, platform: Platform = defaultPlatform(), signal?: AbortSignal): Promise<ResolvedManifest> {
    const r = typeof ref === 'string' ? parseReference(ref) : ref;
    const what = formatReference(r);
    const t = target(r);
    const top = await this.fetchManifest(t, r.digest ?? r.tag ?? 'latest', r.digest, what, signal);
    if (MANIFEST_TYPES.has(top.mediaType)) return { manifestDigest: top.digest, manifestBytes: top.bytes, mediaType: top.mediaType };
    const index = checkIndex(parseJson(top.bytes, what), top.digest);
    const desc = selectManifest(index, platform, what);
    const m = await this.fetchManifest(t, desc.digest, desc.digest, `${what} (${desc.digest})`, signal);
    if (m.bytes.length !== desc.size) {
      throw new PrismError('INVALID_ARGUMENT', `manifest ${desc.digest} of ${what} is ${m.bytes.length} bytes, but its index says ${desc.size}`);
    }
    if (!MANIFEST_TYPES.has(m.mediaType)) throw unsupported(what, m.mediaType);
    return { manifestDigest: m.digest, manifestBytes: m.bytes, mediaType: m.mediaType, indexDigest: top.digest, indexBytes: top.bytes, indexMediaType: top.mediaType };
  }

  /**
   * Downloads a blob into `content`, verified against `desc` (size and digest); a no-op when the store
   * has it. Concurrent calls for one digest and store share one download. `onBytes` hears the bytes
   * received so far; it restarts from 0 when a failed attempt is retried.
   */
  async fetchBlob(
    ref: ImageReference | string,
    desc: { digest: string; size: number },
    content: ContentStore,
    onBytes?: (received: number) => void,
    signal?: AbortSignal,
  ): Promise<BlobFetchResult> {
    signal?.throwIfAborted();
    const r = typeof ref === 'string' ? parseReference(ref) : ref;
    checkDescriptor(desc, `blob of ${formatReference(r)}`);
    if (await content.has(desc.digest)) return { digest: desc.digest, size: desc.size, cached: true };
    // Aborted while the store was asked: no download may start (join would refuse this caller, and a
    // download nobody waits for is never told to stop).
    signal?.throwIfAborted();
    const key = `${content.root}\0${desc.digest}`;
    let flight = inFlight.get(key);
    if (flight === undefined || flight.abandoned) {
      const started = new SharedDownload<BlobFetchResult>((s, report) => this.download(r, desc, content, report, s));
      inFlight.set(key, started);
      void started.promise.then(
        () => inFlight.get(key) === started && inFlight.delete(key),
        () => inFlight.get(key) === started && inFlight.delete(key),
      );
      flight = started;
    }
    return flight.join(onBytes, signal);
  }

  private async download(
    r: ImageReference,
    desc: { digest: string; size: number },
    content: ContentStore,
    report: (received: number) => void,
    signal: AbortSignal,
  ): Promise<BlobFetchResult> {
    const t = target(r);
    const what = `blob ${desc.digest} of ${formatReference(r)}`;
    return withRetry(
      async () => {
        const idle = new IdleTimeout(this.timeoutMs, signal, `downloading ${what}`);
        try {
          const res = await this.transport.get(t, `/v2/${t.repository}/blobs/${desc.digest}`, { signal: idle.signal });
          if (!res.ok || res.body === null) throw await statusError(res, what);
          const length = res.headers.get('content-length');
          if (length !== null && !res.headers.has('content-encoding') && Number(length) !== desc.size) {
            await discard(res);
            throw corrupted(what, `the registry sent ${length} bytes, its descriptor says ${desc.size}`);
          }
          report(0);
          // Iterating the web stream directly (not via Readable.fromWeb) means an abort before the store
          // starts reading surfaces here, not as an unhandled 'error' event.
          const body = Readable.from(metered(res.body, desc.size, what, (n) => (idle.touch(), report(n))));
          try {
            await content.putStream(body, desc.digest);
          } catch (e) {
            // The store refuses content not matching the digest and keeps nothing of it.
            if (e instanceof PrismError && e.code === 'INVALID_ARGUMENT' && !CORRUPTED.has(e)) throw corrupted(what, e.message, e);
            throw e;
          }
          return { digest: desc.digest, size: desc.size, cached: false };
        } finally {
          idle.clear();
        }
      },
      { retries: this.retries, delayMs: this.retryDelayMs, signal, what: `downloading ${what}` },
    );
  }

  private fetchManifest(t: RegistryTarget, reference: string, expected: string | undefined, what: string, signal?: AbortSignal): Promise<FetchedManifest> {
    return withRetry(
      async () => {
        const idle = new IdleTimeout(this.timeoutMs, signal, `fetching the manifest of ${what}`);
        try {
          const res = await this.transport.get(t, `/v2/${t.repository}/manifests/${reference}`, { accept: ACCEPT, signal: idle.signal });
          if (!res.ok) throw await statusError(res, res.status === 404 ? `image ${what}` : `manifest of ${what}`);
          const bytes = await readCapped(res, MAX_MANIFEST_BYTES, what, () => idle.touch());
          const digest = sha256Digest(bytes);
          if (expected !== undefined && digest !== expected) {
            throw new PrismError('INVALID_ARGUMENT', `manifest of ${what} does not match its digest: expected ${expected}, got ${digest}`);
          }
          const claimed = res.headers.get('docker-content-digest');
          if (claimed !== null && claimed.startsWith('sha256:') && claimed !== digest) {
            throw new PrismError('INVALID_ARGUMENT', `manifest of ${what} does not match the registry's Docker-Content-Digest ${claimed} (got ${digest})`);
          }
          return { digest, bytes, mediaType: manifestMediaType(res.headers.get('content-type'), bytes, what) };
        } finally {
          idle.clear();
        }
      },
      { retries: this.retries, delayMs: this.retryDelayMs, signal, what: `fetching the manifest of ${what}` },
    );
  }
}

function target(r: ImageReference): RegistryTarget {
  return { host: registryHost(r), domain: registryDomain(r), repository: repositoryPath(r) };
}

/** Errors `corrupted` made, told apart by identity (not by their message) when they come back through the store. */
const CORRUPTED = new WeakSet<PrismError>();

function corrupted(what: string, why: string, cause?: unknown): PrismError {
  const e = new PrismError('INVALID_ARGUMENT', `corrupted blob: ${what}: ${why}`, { cause });
  CORRUPTED.add(e);
  return e;
}

function unsupported(what: string, mediaType: string): PrismError {
  return new PrismError('INVALID_ARGUMENT', `${what} has an unsupported manifest type ${JSON.stringify(mediaType)}`);
}

/** Passes chunks through, failing as soon as more than `size` bytes arrive, or fewer by the end. */
async function* metered(source: AsyncIterable<Uint8Array>, size: number, what: string, onChunk: (received: number) => void): AsyncGenerator<Buffer> {
  let received = 0;
  for await (const chunk of source) {
    received += chunk.length;
    if (received > size) throw corrupted(what, `more than the ${size} bytes its descriptor says`);
    onChunk(received);
    yield Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
  }
  if (received !== size) throw corrupted(what, `ended after ${received} of ${size} bytes`);
}

async function readCapped(res: Response, max: number, what: string, onChunk: () => void): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of res.body ?? []) {
    total += chunk.length;
    if (total > max) {
      await discard(res);
      throw new PrismError('INVALID_ARGUMENT', `manifest of ${what} is larger than ${max} bytes`);
    }
    onChunk();
    chunks.push(Buffer.from(chunk));
  }
  return Buffer.concat(chunks);
}

function parseJson(bytes: Buffer, what: string): unknown {
  try {
    return JSON.parse(bytes.toString('utf8'));
  } catch (e) {
    throw new PrismError('INVALID_ARGUMENT', `manifest of ${what} is not valid JSON`, { cause: e });
  }
}

/** The manifest's own mediaType wins; then the Content-Type; then its shape. Schema 1 is refused. */
function manifestMediaType(contentType: string | null, bytes: Buffer, what: string): string {
  const header = (contentType ?? '').split(';')[0]!.trim();
  const body = parseJson(bytes, what) as { schemaVersion?: unknown; mediaType?: unknown; manifests?: unknown };
  if (SCHEMA1_TYPES.has(header) || body?.schemaVersion === 1) {
    throw new PrismError('INVALID_ARGUMENT', `${what} is a Docker schema 1 manifest, which is unsupported; push it again with a current Docker or skopeo`);
  }
  if (typeof body?.mediaType === 'string') {
    if (!MANIFEST_TYPES.has(body.mediaType) && !INDEX_TYPES.has(body.mediaType)) throw unsupported(what, body.mediaType);
    return body.mediaType;
  }
  if (MANIFEST_TYPES.has(header) || INDEX_TYPES.has(header)) return header;
  return Array.isArray(body?.manifests) ? MEDIA_TYPES.ociIndex : MEDIA_TYPES.ociManifest;
}
