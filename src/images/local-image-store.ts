import { lstat, mkdir, open, readdir, readFile, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { asPrismError, isPrismError, PrismError } from '../core/errors.js';
import { assertDigest, ContentStore } from './content/content-store.js';
import type { ImageLayer, ImageRecord, ImageStore, Rootfs } from './image-store.js';
import {
  checkConfig, checkDescriptor, checkManifest, hostArchitecture, imageConfig, INDEX_TYPES, MANIFEST_TYPES, bad,
  type Descriptor, type IndexFile, type OciManifest,
} from './oci-types.js';
import { extractLayer } from './unpack/layer-unpacker.js';

export { MEDIA_TYPES, hostArchitecture } from './oci-types.js';
import { formatReference, parseReference, type ImageReference } from './reference.js';

/**
 * ImageStore on one node's disk:
 *   <root>/blobs/sha256/<hex>   content store (manifests, configs, compressed layers)
 *   <root>/index.json           normalised ref -> manifest digest, replaced atomically
 *   <root>/layers/<diffId hex>/ unpacked layers, each appearing by one rename so a crash never leaves half
 *   <root>/tmp/                 temps named by writer pid, swept at start-up when that pid is gone
 * Index writes, imports and garbage collection are serialised in-process; one daemon owns a data dir.
 */

async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

export interface LocalImageStoreOptions {
  /** `<data-dir>/images`. */
  root: string;
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

  constructor(opts: LocalImageStoreOptions) {
    this.root = opts.root;
    this.content = new ContentStore(opts.root);
    this.layersDir = join(opts.root, 'layers');
    this.indexPath = join(opts.root, 'index.json');
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
    const layerDirs = await Promise.all(image.layers.map((l) => this.unpackOnce(l)));
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
      await fsyncDir(this.root);
    } finally {
      await rm(tmp, { force: true });
    }
  }

  private unpackOnce(layer: ImageLayer): Promise<string> {
    const hex = assertDigest(layer.diffId).slice('sha256:'.length);
    let p = this.unpacking.get(hex);
    if (p === undefined) {
      p = this.unpack(layer, hex).finally(() => this.unpacking.delete(hex));
      this.unpacking.set(hex, p);
    }
    return p;
  }

  private async unpack(layer: ImageLayer, hex: string): Promise<string> {
    const dest = join(this.layersDir, hex);
    if (await exists(dest)) return dest;
    const tmp = await this.content.newTemp('layer');
    try {
      await extractLayer(this.content.path(layer.digest), layer, tmp);
      try {
        await rename(tmp, dest);
      } catch (e) {
        // Another process won the race; its copy is complete because it also arrived by rename.
        if (!['ENOTEMPTY', 'EEXIST'].includes((e as NodeJS.ErrnoException).code ?? '')) throw e;
      }
      await fsyncDir(this.layersDir);
      return dest;
    } catch (e) {
      throw asPrismError(e, 'INTERNAL', `unpacking layer ${layer.diffId}`);
    } finally {
      // Retries: after a failure node-tar may still be finishing writes into tmp.
      await rm(tmp, { recursive: true, force: true, maxRetries: 3 });
    }
  }

  /** Mark and sweep: keeps what tagged images reference; skips the sweep if any of them is unreadable. */
  private async collectGarbage(index: IndexFile): Promise<void> {
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
      if (isPrismError(e)) return;
      throw e;
    }
    for (const d of await this.content.listDigests()) if (!blobs.has(d)) await this.content.delete(d);
    for (const name of await readdir(this.layersDir)) {
      if (!/^[0-9a-f]{64}$/.test(name) || layers.has(name) || this.unpacking.has(name)) continue;
      // Rename first so an interrupted delete never leaves a partial layer under its real name.
      const trash = await this.content.newTemp('gc');
      await rename(join(this.layersDir, name), trash);
      await rm(trash, { recursive: true, force: true });
    }
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
