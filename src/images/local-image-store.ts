import { lstat, mkdir, open, readdir, readFile, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { asPrismError, isPrismError, PrismError } from '../core/errors.js';
import { assertDigest, ContentStore, fsyncPath } from './content/content-store.js';
import type { GcResult, ImageLayer, ImageRecord, ImageStore, PullOptions, Rootfs } from './image-store.js';
import { extractArchive, readArchive } from './archive-import.js';
import {
  checkConfig, checkDescriptor, checkManifest, hostArchitecture, imageConfig, INDEX_TYPES, MANIFEST_TYPES, MEDIA_TYPES, bad,
  type Descriptor, type IndexFile, type OciConfig, type OciManifest,
} from './oci-types.js';
import { extractLayer } from './unpack/layer-unpacker.js';

export { MEDIA_TYPES, hostArchitecture } from './oci-types.js';
import { formatReference, parseReference, registryHost, type ImageReference } from './reference.js';

/** Images under this registry name are built on the node (the base image), never pulled. */
const LOCAL_REGISTRY = 'prism.local';

/**
 * ImageStore on one node's disk:
 *   <root>/blobs/sha256/<hex>   content store (manifests, configs, compressed layers)
 *   <root>/index.json           normalised ref -> manifest digest, replaced atomically
 *   <root>/layers/<diffId hex>/ unpacked layers, each appearing by one rename so a crash never leaves half
 *   <root>/tmp/                 temps named by writer pid, swept at start-up when that pid is gone
 * Index writes, imports and garbage collection are serialised in-process; one daemon owns a data dir.
 */

/** Fetches an image's blobs into the content store (src/images/registry/ implements it). */
export interface ImagePuller {
  pull(ref: ImageReference, content: ContentStore, opts: PullOptions): Promise<{ manifestDigest: string }>;
}

export interface LocalImageStoreOptions {
  /** `<data-dir>/images`. */
  root: string;
  /** Without one, `pull` fails with FAILED_PRECONDITION (offline store). */
  puller?: ImagePuller;
  /** prism-init, which writes overlay whiteouts and xattrs for the unpacker (Node cannot mknod). */
  fixupBinary?: string;
}

export class LocalImageStore implements ImageStore {
  readonly root: string;
  readonly content: ContentStore;
  private readonly layersDir: string;
  private readonly indexPath: string;
  private ready?: Promise<void>;
  private tail: Promise<unknown> = Promise.resolve();
  /** In-flight unpacks by diffId: concurrent rootfs() calls share one, and GC leaves them alone. */
  private readonly unpacking = new Map<string, Promise<string>>();
  /** In-flight pulls by normalised ref; while any runs, GC keeps untagged blobs (they may be its). */
  private readonly pulling = new Map<string, Promise<ImageRecord>>();
  private readonly puller?: ImagePuller;
  private readonly fixupBinary?: string;

  constructor(opts: LocalImageStoreOptions) {
    this.root = opts.root;
    this.content = new ContentStore(opts.root);
    this.layersDir = join(opts.root, 'layers');
    this.indexPath = join(opts.root, 'index.json');
    if (opts.puller) this.puller = opts.puller;
    if (opts.fixupBinary) this.fixupBinary = opts.fixupBinary;
  }

  async ensure(ref: string, opts: PullOptions = {}): Promise<ImageRecord> {
    try {
      return await this.get(ref);
    } catch (e) {
      if (!isPrismError(e, 'NOT_FOUND')) throw e;
    }
    return this.pull(ref, opts);
  }

  /** Downloads (verified, deduplicated), tags, then unpacks, so the first sandbox starts at once. */
  pull(ref: string, opts: PullOptions = {}): Promise<ImageRecord> {
    const parsed = parseReference(ref);
    const key = formatReference(parsed);
    let p = this.pulling.get(key);
    if (!p) {
      p = this.doPull(parsed, key, opts).finally(() => this.pulling.delete(key));
      this.pulling.set(key, p);
    }
    return p;
  }

  private async doPull(parsed: ImageReference, key: string, opts: PullOptions): Promise<ImageRecord> {
    await this.init();
    if (!this.puller) throw new PrismError('FAILED_PRECONDITION', `cannot pull ${key}: this image store has no registry access`);
    if (registryHost(parsed) === LOCAL_REGISTRY) {
      throw new PrismError('NOT_FOUND', `image ${key} is built locally, not pulled: run 'prismd build-base-image'`);
    }
    const progress = opts.onProgress ?? (() => undefined);
    const { manifestDigest } = await this.puller.pull(parsed, this.content, { ...opts, onProgress: progress });
    // Unpacked before it is tagged: an image whose layers cannot be unpacked (hostile, corrupt) never
    // becomes visible, and its first sandbox starts without waiting.
    const untagged = await this.load(manifestDigest, await this.readIndex()); // validates manifest and config
    for (const layer of untagged.layers) {
      progress({ ref: key, phase: 'unpacking', layer: layer.digest, total: layer.size });
      await this.unpackOnce(layer, untagged.layers);
    }
    const image = await this.exclusive(async () => {
      const index = await this.readIndex();
      index.refs[key] = manifestDigest;
      await this.writeIndex(index);
      return this.load(manifestDigest, index);
    });
    progress({ ref: key, phase: 'done' });
    return image;
  }

  async importArchive(file: string, opts: { ref?: string } = {}): Promise<ImageRecord[]> {
    await this.init();
    const tmp = await this.content.newTemp('archive');
    try {
      await mkdir(tmp);
      await extractArchive(file, tmp);
      const found = await readArchive(tmp, this.content);
      if (found.kind === 'oci-layout') {
        const refs = opts.ref ? [opts.ref] : found.names;
        if (refs.length === 0) throw bad('the OCI layout names no image; give a reference to tag it with');
        const out: ImageRecord[] = [];
        for (const r of refs) out.push(await this.importOciLayout(tmp, r));
        return out;
      }
      return await this.exclusive(async () => {
        const index = await this.readIndex();
        const tagged: string[] = [];
        for (const img of found.images) {
          const record = await this.load(img.manifestDigest, index); // validates before tagging
          const refs = opts.ref ? [opts.ref] : img.repoTags;
          if (refs.length === 0) throw bad(`image ${record.digest} in the archive has no name; give a reference to tag it with`);
          for (const r of refs) {
            const k = formatReference(parseReference(r));
            index.refs[k] = img.manifestDigest;
            tagged.push(img.manifestDigest);
          }
        }
        await this.writeIndex(index);
        return Promise.all([...new Set(tagged)].map((d) => this.load(d, index)));
      });
    } finally {
      await rm(tmp, { recursive: true, force: true });
    }
  }

  async gc(): Promise<GcResult> {
    await this.init();
    return this.exclusive(async () => this.collectGarbage(await this.readIndex()));
  }

  async list(): Promise<ImageRecord[]> {
    await this.init();
    const index = await this.readIndex();
    const digests = [...new Set(Object.values(index.refs))];
    const records = await Promise.all(digests.map((d) => this.load(d, index)));
    return records.sort((a, b) => a.refs[0]!.localeCompare(b.refs[0]!));
  }

  async get(ref: string): Promise<ImageRecord> {
    await this.init();
    const parsed = parseReference(ref);
    const index = await this.readIndex();
    const { digest } = this.resolve(parsed, index, ref);
    return this.load(digest, index);
  }

  async rootfs(ref: string): Promise<Rootfs> {
    const image = await this.get(ref);
    // In order: a layer's hardlinks may point into the layers below it.
    const layerDirs: string[] = [];
    for (const l of image.layers) layerDirs.push(await this.unpackOnce(l, image.layers));
    return { image, layerDirs };
  }

  async importOciLayout(dir: string, ref: string): Promise<ImageRecord> {
    await this.init();
    const parsed = parseReference(ref);
    const key = formatReference(parsed);
    return this.exclusive(async () => {
      const desc = await selectManifest(dir, parsed);
      if (parsed.digest !== undefined && parsed.digest !== desc.digest) {
        throw bad(`reference ${ref} pins ${parsed.digest} but the layout's manifest is ${desc.digest}`);
      }
      await this.copyBlob(dir, desc, 'manifest');
      const manifest = checkManifest(await this.content.readJson(desc.digest), desc.digest);
      await this.copyBlob(dir, manifest.config, 'config');
      checkConfig(await this.content.readJson(manifest.config.digest), manifest, manifest.config.digest);
      for (const [i, layer] of manifest.layers.entries()) await this.copyBlob(dir, layer, `layer ${i}`);
      const index = await this.readIndex();
      index.refs[key] = desc.digest;
      await this.writeIndex(index);
      return this.load(desc.digest, index);
    });
  }

  async commitLayer(baseDigest: string, layerTar: string, ref: string, comment: string): Promise<ImageRecord> {
    await this.init();
    assertDigest(baseDigest);
    const key = formatReference(parseReference(ref));
    return this.exclusive(async () => {
      if (!(await this.content.has(baseDigest))) throw new PrismError('NOT_FOUND', `image ${baseDigest} is not in the store`);
      const manifest = checkManifest(await this.content.readJson(baseDigest), baseDigest);
      const config = checkConfig(await this.content.readJson(manifest.config.digest), manifest, manifest.config.digest) as OciConfig & { history?: unknown[] };
      const layer = await this.content.putFile(layerTar);
      await rm(layerTar, { force: true });
      const created = new Date().toISOString();
      const nextConfig = {
        ...config,
        created,
        rootfs: { type: 'layers', diff_ids: [...(config.rootfs?.diff_ids ?? []), layer.digest] },
        history: [...(config.history ?? []), { created, created_by: comment }],
      };
      const cfg = await this.content.putBuffer(Buffer.from(JSON.stringify(nextConfig)));
      const nextManifest: OciManifest = {
        schemaVersion: 2,
        mediaType: MEDIA_TYPES.ociManifest,
        config: { mediaType: MEDIA_TYPES.ociConfig, digest: cfg.digest, size: cfg.size },
        layers: [...manifest.layers, { mediaType: MEDIA_TYPES.ociLayer, digest: layer.digest, size: layer.size }],
      };
      const man = await this.content.putBuffer(Buffer.from(JSON.stringify(nextManifest)));
      const index = await this.readIndex();
      index.refs[key] = man.digest;
      await this.writeIndex(index);
      return this.load(man.digest, index);
    });
  }

  async remove(ref: string, inUse?: (image: ImageRecord) => boolean): Promise<void> {
    await this.init();
    const parsed = parseReference(ref);
    await this.exclusive(async () => {
      const index = await this.readIndex();
      const { digest, keys } = this.resolve(parsed, index, ref);
      const image = await this.load(digest, index);
      if (inUse?.(image)) throw new PrismError('FAILED_PRECONDITION', `image ${ref} is in use by a sandbox; remove the sandbox first`);
      for (const k of keys) delete index.refs[k];
      await this.writeIndex(index);
      await this.collectGarbage(index);
    });
  }

  private init(): Promise<void> {
    this.ready ??= (async () => {
      await mkdir(this.layersDir, { recursive: true });
      await this.content.removeStaleTemps();
    })();
    return this.ready;
  }

  /** Runs `fn` after every earlier exclusive call has settled. */
  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.tail.then(fn, fn);
    this.tail = run.catch(() => undefined);
    return run;
  }

  /** Index keys matching `parsed`: the exact key, or for `name@digest` any tag of `name` on that digest. */
  private resolve(parsed: ImageReference, index: IndexFile, input: string): { digest: string; keys: string[] } {
    const key = formatReference(parsed);
    const exact = index.refs[key];
    if (exact !== undefined) return { digest: exact, keys: [key] };
    if (parsed.digest !== undefined) {
      const keys = Object.keys(index.refs).filter((k) => index.refs[k] === parsed.digest && parseReference(k).name === parsed.name);
      if (keys.length > 0) return { digest: parsed.digest, keys };
    }
    throw new PrismError('NOT_FOUND', `image ${input} not found (looked for ${key})`);
  }

  private async load(digest: string, index: IndexFile): Promise<ImageRecord> {
    const manifest = checkManifest(await this.content.readJson(digest), digest);
    const cfgDigest = manifest.config.digest;
    const cfg = checkConfig(await this.content.readJson(cfgDigest), manifest, cfgDigest);
    const diffIds = cfg.rootfs!.diff_ids!;
    const layers: ImageLayer[] = manifest.layers.map((l, i) => ({
      digest: l.digest,
      diffId: diffIds[i]!,
      size: l.size,
      mediaType: l.mediaType!,
    }));
    const createdAt = cfg.created ?? (await stat(this.content.path(digest))).mtime.toISOString();
    return {
      refs: Object.keys(index.refs).filter((k) => index.refs[k] === digest).sort(),
      digest,
      size: layers.reduce((n, l) => n + l.size, 0),
      createdAt,
      os: cfg.os ?? 'linux',
      architecture: cfg.architecture ?? hostArchitecture(),
      config: imageConfig(cfg),
      layers,
    };
  }

  private async copyBlob(dir: string, desc: Descriptor, what: string): Promise<void> {
    checkDescriptor(desc, what);
    if (await this.content.has(desc.digest)) return;
    const src = join(dir, 'blobs', 'sha256', desc.digest.slice('sha256:'.length));
    try {
      await stat(src);
    } catch (e) {
      throw new PrismError('INVALID_ARGUMENT', `OCI layout ${dir} lacks the ${what} blob ${desc.digest}`, { cause: e });
    }
    const { size } = await this.content.putFile(src, desc.digest);
    if (size !== desc.size) throw bad(`${what} blob ${desc.digest} is ${size} bytes but its descriptor says ${desc.size}`);
  }

  private async readIndex(): Promise<IndexFile> {
    let text: string;
    try {
      text = await readFile(this.indexPath, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { schemaVersion: 1, refs: {} };
      throw e;
    }
    let idx: IndexFile;
    try {
      idx = JSON.parse(text) as IndexFile;
    } catch (e) {
      throw new PrismError('INTERNAL', `image index ${this.indexPath} is not valid JSON`, { cause: e });
    }
    if (idx?.schemaVersion !== 1 || typeof idx.refs !== 'object' || idx.refs === null) {
      throw new PrismError('INTERNAL', `image index ${this.indexPath} is malformed`);
    }
    // Keys written before Docker-style normalisation (`app:1`) read as their full form now.
    const refs: Record<string, string> = {};
    for (const [k, v] of Object.entries(idx.refs)) {
      try {
        refs[formatReference(parseReference(k))] = v;
      } catch {
        refs[k] = v;
      }
    }
    idx.refs = refs;
    return idx;
  }

  private async writeIndex(index: IndexFile): Promise<void> {
    const tmp = await this.content.newTemp('index');
    try {
      const fh = await open(tmp, 'wx', 0o644);
      try {
        await fh.writeFile(`${JSON.stringify(index, null, 2)}\n`);
        await fh.sync();
      } finally {
        await fh.close();
      }
      await rename(tmp, this.indexPath);
      await fsyncPath(this.root);
    } finally {
      await rm(tmp, { force: true });
    }
  }

  /** `stack` is the image's layers, lowest first; those below `layer` are already unpacked. */
  private unpackOnce(layer: ImageLayer, stack: ImageLayer[]): Promise<string> {
    const hex = assertDigest(layer.diffId).slice('sha256:'.length);
    let p = this.unpacking.get(hex);
    if (p === undefined) {
      const lower = stack.slice(0, stack.indexOf(layer)).map((l) => join(this.layersDir, l.diffId.slice('sha256:'.length)));
      p = this.unpack(layer, hex, lower).finally(() => this.unpacking.delete(hex));
      this.unpacking.set(hex, p);
    }
    return p;
  }

  private async unpack(layer: ImageLayer, hex: string, lowerDirs: string[]): Promise<string> {
    const dest = join(this.layersDir, hex);
    if (await exists(dest)) return dest;
    const tmp = await this.content.newTemp('layer');
    try {
      await extractLayer(this.content.path(layer.digest), layer, tmp, lowerDirs, this.fixupBinary ? { fixupBinary: this.fixupBinary } : {});
      try {
        await rename(tmp, dest);
      } catch (e) {
        // Another process won the race; its copy is complete because it also arrived by rename.
        if (!['ENOTEMPTY', 'EEXIST'].includes((e as NodeJS.ErrnoException).code ?? '')) throw e;
      }
      await fsyncPath(this.layersDir);
      return dest;
    } catch (e) {
      throw asPrismError(e, 'INTERNAL', `unpacking layer ${layer.diffId}`);
    } finally {
      // Retries: after a failure node-tar may still be finishing writes into tmp.
      await rm(tmp, { recursive: true, force: true, maxRetries: 3 });
    }
  }

  /**
   * Mark and sweep: keeps what tagged images reference; skips the sweep if any of them is unreadable.
   * Blobs are kept while a pull runs (its blobs are not tagged yet).
   */
  private async collectGarbage(index: IndexFile): Promise<GcResult> {
    const result: GcResult = { blobsRemoved: 0, layersRemoved: 0, bytesFreed: 0 };
    const blobs = new Set<string>();
    const layers = new Set<string>();
    try {
      for (const digest of new Set(Object.values(index.refs))) {
        const image = await this.load(digest, index);
        const manifest = await this.content.readJson<OciManifest>(digest);
        blobs.add(digest).add(manifest.config.digest);
        for (const l of image.layers) {
          blobs.add(l.digest);
          layers.add(l.diffId.slice('sha256:'.length));
        }
      }
    } catch (e) {
      if (isPrismError(e)) return result;
      throw e;
    }
    if (this.pulling.size === 0) {
      for (const d of await this.content.listDigests()) {
        if (blobs.has(d)) continue;
        result.bytesFreed += await this.content.size(d).catch(() => 0);
        if (await this.content.delete(d)) result.blobsRemoved++;
      }
    }
    for (const name of await readdir(this.layersDir)) {
      if (!/^[0-9a-f]{64}$/.test(name) || layers.has(name) || this.unpacking.has(name) || this.pulling.size > 0) continue;
      // Rename first so an interrupted delete never leaves a partial layer under its real name.
      const trash = await this.content.newTemp('gc');
      await rename(join(this.layersDir, name), trash);
      await rm(trash, { recursive: true, force: true });
      result.layersRemoved++;
    }
    return result;
  }
}

async function exists(p: string): Promise<boolean> {
  try {
    await lstat(p);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw e;
  }
}

/** Picks the image manifest from an OCI layout: the only one, the one named like `ref`, or this host's platform. */
async function selectManifest(dir: string, ref: ImageReference): Promise<Descriptor> {
  let index: { schemaVersion?: number; manifests?: unknown[] };
  try {
    const layout = JSON.parse(await readFile(join(dir, 'oci-layout'), 'utf8')) as { imageLayoutVersion?: string };
    if (typeof layout.imageLayoutVersion !== 'string') throw new Error('oci-layout lacks imageLayoutVersion');
    index = JSON.parse(await readFile(join(dir, 'index.json'), 'utf8'));
  } catch (e) {
    throw new PrismError('INVALID_ARGUMENT', `${dir} is not an OCI image layout: ${(e as Error).message}`, { cause: e });
  }
  if (index.schemaVersion !== 2 || !Array.isArray(index.manifests)) throw bad(`${dir}/index.json: needs schemaVersion 2 and manifests`);
  return pickFrom(dir, index.manifests.map((m, i) => checkDescriptor(m, `${dir}/index.json manifests[${i}]`)), ref, 0);
}

async function pickFrom(dir: string, descs: Descriptor[], ref: ImageReference, depth: number): Promise<Descriptor> {
  const arch = hostArchitecture();
  let candidates = descs.filter((d) => !d.platform || (d.platform.os === 'linux' && d.platform.architecture === arch));
  if (candidates.length > 1) {
    const names = new Set([ref.tag, ref.tag && formatReference(ref)]);
    candidates = candidates.filter((d) => names.has(d.annotations?.['org.opencontainers.image.ref.name']));
  }
  if (candidates.length !== 1) {
    throw bad(`${dir}: expected exactly one image for linux/${arch}${ref.tag ? ` or named ${ref.tag}` : ''}, found ${candidates.length}`);
  }
  const desc = candidates[0]!;
  if (desc.mediaType !== undefined && INDEX_TYPES.has(desc.mediaType)) {
    if (depth > 2) throw bad(`${dir}: image indexes nested too deeply`);
    const hex = desc.digest.slice('sha256:'.length);
    const nested = JSON.parse(await readFile(join(dir, 'blobs', 'sha256', hex), 'utf8')) as { manifests?: unknown[] };
    if (!Array.isArray(nested.manifests)) throw bad(`${dir}: index ${desc.digest} has no manifests`);
    return pickFrom(dir, nested.manifests.map((m, i) => checkDescriptor(m, `index ${desc.digest} manifests[${i}]`)), { name: ref.name }, depth + 1);
  }
  if (desc.mediaType !== undefined && !MANIFEST_TYPES.has(desc.mediaType)) throw bad(`${dir}: unsupported media type ${desc.mediaType}`);
  return desc;
}
