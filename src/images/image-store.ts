/**
 * The ImageStore seam: images by reference, backed by a content store keyed by digest
 * (src/images/content/). Resolving, pulling and unpacking live behind it.
 *
 * Contract:
 * - References are normalised (`name:tag` or `name@sha256:...`; a missing tag is `latest`).
 * - `rootfs` returns unpacked layer directories, lowest first, that callers must treat as read-only.
 *   Unpacking is done once per layer digest and shared between images and sandboxes.
 * - `remove` refuses (FAILED_PRECONDITION) while `inUse(ref)` says the image is used.
 * Errors: NOT_FOUND (unknown ref), INVALID_ARGUMENT (malformed ref), INTERNAL.
 */

export interface ImageConfig {
  env: string[];
  workingDir?: string;
  user?: string;
  entrypoint?: string[];
  cmd?: string[];
}

export interface ImageLayer {
  /** Digest of the blob as stored (compressed). */
  digest: string;
  /** Digest of the uncompressed tar (the config's rootfs.diff_ids entry). */
  diffId: string;
  size: number;
  mediaType: string;
}

export interface ImageRecord {
  /** Normalised references pointing at this image. */
  refs: string[];
  /** Digest of the manifest. */
  digest: string;
  /** Total compressed size of the layers. */
  size: number;
  createdAt: string;
  os: string;
  architecture: string;
  config: ImageConfig;
  layers: ImageLayer[];
}

export interface Rootfs {
  image: ImageRecord;
  /** Unpacked layer directories, lowest first. */
  layerDirs: string[];
}

export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
}

/** Progress of a pull, reported per phase and per layer (sizes in bytes). */
export interface PullProgress {
  ref: string;
  phase: 'resolving' | 'downloading' | 'unpacking' | 'done';
  /** The layer (blob digest) this event is about, if any. */
  layer?: string;
  current?: number;
  total?: number;
  /** The blob or layer was already present. */
  cached?: boolean;
}

export interface PullOptions {
  platform?: Platform;
  onProgress?: (p: PullProgress) => void;
  signal?: AbortSignal;
}

export interface GcResult {
  blobsRemoved: number;
  layersRemoved: number;
  bytesFreed: number;
}

export interface ImageStore {
  list(): Promise<ImageRecord[]>;
  /** NOT_FOUND when the reference is not in the store. */
  get(ref: string): Promise<ImageRecord>;
  /** Unpacks (once) and returns the image's layers. */
  rootfs(ref: string): Promise<Rootfs>;
  /**
   * Pulls from the image's registry, verifying every blob, and tags `ref`. Concurrent pulls of the same
   * reference share one download. Nothing half-written ever becomes visible.
   * Errors: NOT_FOUND (no such image/tag), UNAUTHENTICATED/PERMISSION_DENIED (registry refused),
   * UNAVAILABLE (registry unreachable after retries), INVALID_ARGUMENT (bad digest, hostile layer).
   */
  pull(ref: string, opts?: PullOptions): Promise<ImageRecord>;
  /** The image if present, else pulled. */
  ensure(ref: string, opts?: PullOptions): Promise<ImageRecord>;
  /** Imports an OCI image layout directory; tags it `ref`. */
  importOciLayout(dir: string, ref: string): Promise<ImageRecord>;
  /**
   * Imports a `docker save` archive or an OCI image layout tar. Images are tagged with the names the
   * archive carries, or `ref` when given (required when the archive names none).
   */
  importArchive(file: string, opts?: { ref?: string }): Promise<ImageRecord[]>;
  /**
   * A new image: the image whose manifest is `baseDigest` plus one layer, the uncompressed OCI layer
   * tar at `layerTar` (moved into the store), tagged `ref`; `comment` goes into the config's history.
   * A snapshot of a sandbox is made this way. Errors: NOT_FOUND (no such base), INVALID_ARGUMENT.
   */
  commitLayer(baseDigest: string, layerTar: string, ref: string, comment: string): Promise<ImageRecord>;
  remove(ref: string, inUse?: (image: ImageRecord) => boolean): Promise<void>;
  /** Removes blobs and unpacked layers no tagged image references. */
  gc(): Promise<GcResult>;
}
