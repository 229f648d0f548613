import { createReadStream } from 'node:fs';
import { lchown, lstat, lutimes, mkdir, open, readdir, readFile, rename, rm, stat, symlink, unlink, chmod } from 'node:fs/promises';
import { join, posix } from 'node:path';
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { Unpack, type ReadEntry } from 'tar';
import { asPrismError, isPrismError, PrismError } from '../core/errors.js';
import { assertDigest, ContentStore, DigestingStream } from './content/content-store.js';
import type { ImageConfig, ImageLayer, ImageRecord, ImageStore, Rootfs } from './image-store.js';
import { formatReference, parseReference, type ImageReference } from './reference.js';

/**
 * ImageStore on one node's disk:
 *   <root>/blobs/sha256/<hex>   content store (manifests, configs, compressed layers)
 *   <root>/index.json           normalised ref -> manifest digest, replaced atomically
 *   <root>/layers/<diffId hex>/ unpacked layers, each appearing by one rename so a crash never leaves half
 *   <root>/tmp/                 temps named by writer pid, swept at start-up when that pid is gone
 * Index writes, imports and garbage collection are serialised in-process; one daemon owns a data dir.
 */

export const MEDIA_TYPES = {
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  ociLayerGzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  ociLayer: 'application/vnd.oci.image.layer.v1.tar',
} as const;

// Docker's v2 schema has the same shape as OCI's, so `docker save` output is accepted as well.
const MANIFEST_TYPES = new Set<string>([MEDIA_TYPES.ociManifest, 'application/vnd.docker.distribution.manifest.v2+json']);
const INDEX_TYPES = new Set<string>([MEDIA_TYPES.ociIndex, 'application/vnd.docker.distribution.manifest.list.v2+json']);
const GZIP_LAYER_TYPES = new Set<string>([MEDIA_TYPES.ociLayerGzip, 'application/vnd.docker.image.rootfs.diff.tar.gzip']);
const TAR_LAYER_TYPES = new Set<string>([MEDIA_TYPES.ociLayer]);

/** The host's architecture in OCI (GOARCH) spelling. */
export function hostArchitecture(): string {
  const map: Record<string, string> = { x64: 'amd64', arm64: 'arm64', arm: 'arm', ia32: '386', ppc64: 'ppc64le', s390x: 's390x', riscv64: 'riscv64' };
  return map[process.arch] ?? process.arch;
}

interface Descriptor {
  mediaType?: string;
  digest: string;
  size: number;
  platform?: { os?: string; architecture?: string };
  annotations?: Record<string, string>;
}

interface OciManifest {
  schemaVersion: number;
  mediaType?: string;
  config: Descriptor;
  layers: Descriptor[];
}

interface OciConfig {
  created?: string;
  os?: string;
  architecture?: string;
  config?: { Env?: string[] | null; WorkingDir?: string; User?: string; Entrypoint?: string[] | null; Cmd?: string[] | null };
  rootfs?: { type?: string; diff_ids?: string[] };
}

interface IndexFile {
  schemaVersion: 1;
  refs: Record<string, string>;
}

function bad(message: string): PrismError {
  return new PrismError('INVALID_ARGUMENT', message);
}

function isStringArray(v: unknown): v is string[] {
  return Array.isArray(v) && v.every((s) => typeof s === 'string');
}

function checkDescriptor(d: unknown, what: string): Descriptor {
  const desc = d as Descriptor;
  if (typeof desc !== 'object' || desc === null || typeof desc.digest !== 'string' || !Number.isSafeInteger(desc.size) || desc.size < 0) {
    throw bad(`${what}: malformed descriptor (needs digest and size)`);
  }
  if (!desc.digest.startsWith('sha256:')) throw bad(`${what}: unsupported digest algorithm in ${desc.digest}`);
  assertDigest(desc.digest);
  return desc;
}

function checkManifest(m: unknown, digest: string): OciManifest {
  const man = m as OciManifest;
  if (typeof man !== 'object' || man === null || man.schemaVersion !== 2) throw bad(`manifest ${digest}: schemaVersion must be 2`);
  if (man.mediaType !== undefined && !MANIFEST_TYPES.has(man.mediaType)) {
    throw bad(`manifest ${digest}: unsupported media type ${man.mediaType}`);
  }
  checkDescriptor(man.config, `manifest ${digest} config`);
  if (!Array.isArray(man.layers) || man.layers.length === 0) throw bad(`manifest ${digest}: has no layers`);
  man.layers.forEach((l, i) => {
    checkDescriptor(l, `manifest ${digest} layer ${i}`);
    const type = l.mediaType ?? '';
    if (!GZIP_LAYER_TYPES.has(type) && !TAR_LAYER_TYPES.has(type)) {
      throw bad(`manifest ${digest} layer ${i}: unsupported media type ${JSON.stringify(type)} (tar or tar+gzip only)`);
    }
  });
  return man;
}

function checkConfig(c: unknown, man: OciManifest, digest: string): OciConfig {
  const cfg = c as OciConfig;
  if (typeof cfg !== 'object' || cfg === null) throw bad(`config ${digest}: not an object`);
  const diffIds = cfg.rootfs?.diff_ids;
  if (cfg.rootfs?.type !== 'layers' || !isStringArray(diffIds)) throw bad(`config ${digest}: rootfs must be {type: "layers", diff_ids: [...]}`);
  if (diffIds.length !== man.layers.length) {
    throw bad(`config ${digest}: ${diffIds.length} diff_ids for ${man.layers.length} layers`);
  }
  diffIds.forEach((d) => assertDigest(d));
  const inner = cfg.config ?? {};
  for (const key of ['Env', 'Entrypoint', 'Cmd'] as const) {
    if (inner[key] != null && !isStringArray(inner[key])) throw bad(`config ${digest}: config.${key} must be a list of strings`);
  }
  return cfg;
}

function imageConfig(cfg: OciConfig): ImageConfig {
  const c = cfg.config ?? {};
  const out: ImageConfig = { env: c.Env ?? [] };
  if (c.WorkingDir) out.workingDir = c.WorkingDir;
  if (c.User) out.user = c.User;
  if (c.Entrypoint) out.entrypoint = c.Entrypoint;
  if (c.Cmd) out.cmd = c.Cmd;
  return out;
}

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

interface DeferredLink {
  target: string;
  uid?: number;
  gid?: number;
  mtime?: Date;
}

/** Tar paths (`./a/b`, `/a/b`, `a/b/`) as a clean relative path; '' is the layer root. */
function relPath(p: string): string {
  const n = posix.normalize(`/${p}`).slice(1);
  return n.endsWith('/') ? n.slice(0, -1) : n;
}

/**
 * Extracts one layer into the empty directory `dest`, verifying the uncompressed bytes against diffId.
 * Symlinks are held back and created last: node-tar would rewrite absolute or `..` targets (normal in
 * a root file system) to keep them inside `dest`, and creating them last means no entry of this layer
 * can be written through one. Modes are applied after owners, since chown clears setuid bits and the
 * process umask would otherwise strip bits from new files.
 */
async function extractLayer(blobPath: string, layer: ImageLayer, dest: string): Promise<void> {
  await mkdir(dest, { mode: 0o755 });
  const asRoot = process.getuid?.() === 0;
  let failure: Error | undefined;
  const src = createReadStream(blobPath);
  const fail = (e: Error): void => {
    failure ??= e;
    src.destroy(failure);
  };
  const { unpack, modes, links } = layerUnpacker(dest, layer, asRoot, fail);
  const finished = new Promise<void>((resolve, reject) => {
    unpack.on('finish', () => resolve());
    unpack.on('error', (e: Error) => reject(e));
  });
  const hasher = new DigestingStream();
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      if (unpack.write(chunk)) cb();
      else unpack.once('drain', () => cb());
    },
    final(cb) {
      unpack.end();
      cb();
    },
  });
  const stages = GZIP_LAYER_TYPES.has(layer.mediaType) ? [src, createGunzip(), hasher, sink] : [src, hasher, sink];
  try {
    await Promise.all([pipeline(stages as [typeof src, ...Writable[]]), finished]);
  } catch (e) {
    src.destroy();
    if (failure) throw failure;
    if (isPrismError(e)) throw e;
    const errno = (e as NodeJS.ErrnoException).code ?? '';
    if (/^E[A-Z]+$/.test(errno)) throw new PrismError('INTERNAL', `reading layer ${layer.digest}: ${(e as Error).message}`, { cause: e });
    throw bad(`layer ${layer.digest} is not a valid ${layer.mediaType}: ${(e as Error).message}`);
  }
  if (failure) throw failure;
  if (hasher.digest() !== layer.diffId) {
    throw bad(`layer ${layer.digest} does not match its diff_id ${layer.diffId} (got ${hasher.digest()})`);
  }
  await createLinks(dest, links, asRoot);
  for (const [rel, mode] of modes) await chmod(join(dest, rel), mode);
}

/** A node-tar Unpack that refuses whiteouts, holds symlinks back and records modes (see extractLayer). */
function layerUnpacker(dest: string, layer: ImageLayer, asRoot: boolean, fail: (e: Error) => void) {
  const modes = new Map<string, number>();
  const links = new Map<string, DeferredLink>();
  const unpack = new Unpack({
    cwd: dest,
    preserveOwner: asRoot,
    filter: (path: string, entry: unknown) => {
      const e = entry as ReadEntry;
      const rel = relPath(path);
      if (posix.basename(rel).startsWith('.wh.')) {
        fail(bad(`layer ${layer.diffId} contains whiteout ${rel}: whiteouts not supported yet`));
        return false;
      }
      if (e.type === 'SymbolicLink') {
        if (rel === '' || rel.split('/').includes('..')) fail(bad(`layer ${layer.diffId}: symlink path ${path} escapes the layer`));
        links.set(rel, { target: String(e.linkpath), uid: e.uid, gid: e.gid, mtime: e.mtime });
        modes.delete(rel);
        return false;
      }
      links.delete(rel);
      if (e.type === 'Directory' || e.type === 'File' || e.type === 'OldFile' || e.type === 'ContiguousFile') {
        if (typeof e.mode === 'number') modes.set(rel, e.mode & 0o7777);
      }
      return true;
    },
    onwarn: (code: string, message: string | Error, data: unknown) => {
      // Absolute paths made relative, and device nodes/FIFOs (runc provides /dev), are harmless.
      if (code === 'TAR_ENTRY_INFO' || code === 'TAR_ENTRY_UNSUPPORTED') return;
      const errno = (data as { code?: string }).code ?? '';
      const text = message instanceof Error ? message.message : message;
      fail(/^E[A-Z]+$/.test(errno)
        ? new PrismError('INTERNAL', `layer ${layer.diffId}: ${text}`, { cause: message })
        : bad(`layer ${layer.diffId} is not a valid tar: ${code} ${text}`));
    },
  });
  return { unpack, modes, links };
}

async function createLinks(dest: string, links: Map<string, DeferredLink>, asRoot: boolean): Promise<void> {
  const safeDirs = new Set<string>(['']);
  for (const [rel, link] of [...links].sort(([a], [b]) => a.localeCompare(b))) {
    await ensureRealDir(dest, posix.dirname(rel) === '.' ? '' : posix.dirname(rel), safeDirs);
    const abs = join(dest, rel);
    try {
      await symlink(link.target, abs);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      if ((await lstat(abs)).isDirectory()) throw bad(`layer has entries beneath symlink ${rel}`);
      await unlink(abs);
      await symlink(link.target, abs);
    }
    if (asRoot && link.uid !== undefined && link.gid !== undefined) await lchown(abs, link.uid, link.gid);
    if (link.mtime) await lutimes(abs, link.mtime, link.mtime);
  }
}

/** Makes sure every component of `rel` under `dest` is a real directory (never a symlink), creating missing ones. */
async function ensureRealDir(dest: string, rel: string, safe: Set<string>): Promise<void> {
  if (safe.has(rel)) return;
  await ensureRealDir(dest, posix.dirname(rel) === '.' ? '' : posix.dirname(rel), safe);
  const abs = join(dest, rel);
  try {
    const st = await lstat(abs);
    if (!st.isDirectory()) throw bad(`layer places a symlink beneath ${rel}, which is not a directory`);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    await mkdir(abs, { mode: 0o755 });
  }
  safe.add(rel);
}
