import { createHash, randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type Docker from 'dockerode';
import { Header } from 'tar';
import { PrismError } from '../../core/errors.js';
import type { RuntimeImage } from '../driver.js';
import { engineError, engineStatus, pullError } from './engine-errors.js';
import { INIT_PATH, MANAGED_LABEL } from './layer-image.js';

/** The engine's images with prism-init added (one per engine image and init binary). */
export const WITH_INIT_REPO = 'prism.local/with-init';

/** An image id; the engine cannot pull by one, only find it. */
const IMAGE_ID = /^sha256:[0-9a-f]{64}$/;

interface EngineImageInfo {
  Id: string;
  Config?: { Env?: string[] | null; WorkingDir?: string; User?: string } | null;
}

function runtimeImage(info: EngineImageInfo): RuntimeImage {
  const c = info.Config ?? {};
  return { id: info.Id, env: c.Env ?? [], ...(c.WorkingDir ? { workingDir: c.WorkingDir } : {}), ...(c.User ? { user: c.User } : {}) };
}

/**
 * The engine's image for `ref`, resolved as the engine resolves what `docker run` is given (a tag,
 * `name@sha256:...`, a full or short image id), with its config; undefined when the engine has none.
 */
export async function findEngineImage(docker: Docker, ref: string): Promise<RuntimeImage | undefined> {
  try {
    return runtimeImage((await docker.getImage(ref).inspect()) as EngineImageInfo);
  } catch (e) {
    if (engineStatus(e) === 404) return undefined;
    throw engineError(e, `looking up image '${ref}' in the Docker engine`, { 400: 'INVALID_ARGUMENT' });
  }
}

/**
 * Has the engine pull `ref` (its credentials, mirrors and insecure-registry settings apply) and
 * returns the pulled image. Failures are translated by pullError, whether the engine answers with an
 * error status or reports the error in its progress stream.
 */
export async function pullEngineImage(docker: Docker, ref: string): Promise<RuntimeImage> {
  if (IMAGE_ID.test(ref)) throw new PrismError('NOT_FOUND', `the Docker engine has no image with id ${ref} (an image id cannot be pulled)`);
  let progress: NodeJS.ReadableStream;
  try {
    // A reference without tag or digest means `latest`, as for `docker pull` (the API would pull every tag).
    progress = await docker.pull(ref);
  } catch (e) {
    throw pullError(e, ref);
  }
  await new Promise<void>((resolve, reject) => {
    docker.modem.followProgress(progress, (err: Error | null, out: { error?: string; errorDetail?: { message?: string } }[]) => {
      const failed = out?.find((m) => m.error);
      if (failed) reject(pullError(failed.errorDetail?.message ?? failed.error!, ref));
      else if (err) reject(engineError(err, `pulling '${ref}' through the Docker engine`));
      else resolve();
    });
  });
  const pulled = await findEngineImage(docker, ref);
  if (!pulled) throw new PrismError('INTERNAL', `the Docker engine reported pulling '${ref}' but does not have it`);
  return pulled;
}

/** The engine's name for engine image `imageId` with the init binary of `initDigest` added. */
export function withInitTag(imageId: string, initDigest: string): string {
  const h = createHash('sha256').update(JSON.stringify({ image: imageId, init: initDigest })).digest('hex');
  return `${WITH_INIT_REPO}:${h.slice(0, 40)}`;
}

/**
 * Makes sure the engine has `tag`: engine image `imageId` with prism-init at INIT_PATH, which every
 * task needs as PID 1 and exec relay. Through the API only (no shared filesystem, no builder): a
 * container of the image is created (never started), the binary put into it with the archive API, and
 * the container committed as `tag` (labelled prism.managed) and removed whatever happens. The commit
 * keeps the image's config and adds one small layer; the image itself is not changed.
 */
export async function ensureWithInitImage(docker: Docker, tag: string, imageId: string, initBinary: string): Promise<void> {
  try {
    await docker.getImage(tag).inspect();
    return;
  } catch (e) {
    if (engineStatus(e) !== 404) throw engineError(e, `inspecting image ${tag}`);
  }
  const archive = initArchive(await readFile(initBinary));
  const name = `prism-with-init-${randomBytes(6).toString('hex')}`;
  try {
    const container = await docker.createContainer({
      name, Image: imageId, Entrypoint: [INIT_PATH], Cmd: [], NetworkDisabled: true,
      Labels: { [MANAGED_LABEL]: 'true' }, HostConfig: { NetworkMode: 'none' },
    }).catch((e: unknown) => {
      throw engineError(e, `adding prism-init to image ${imageId}`, { 404: 'NOT_FOUND' });
    });
    await container.putArchive(archive, { path: '/' }).catch((e: unknown) => {
      throw engineError(e, `adding prism-init to image ${imageId}`, { 400: 'FAILED_PRECONDITION', 403: 'FAILED_PRECONDITION' });
    });
    const [repo, version] = [tag.slice(0, tag.lastIndexOf(':')), tag.slice(tag.lastIndexOf(':') + 1)];
    await container.commit({ repo, tag: version, comment: 'prism-init added by the Prism docker driver' }).catch((e: unknown) => {
      throw engineError(e, `committing ${tag}`);
    });
  } catch (e) {
    await docker.getContainer(name).remove({ force: true, v: true }).catch(() => undefined);
    throw e;
  }
  await docker.getContainer(name).remove({ force: true, v: true }).catch((e: unknown) => {
    throw engineError(e, `removing the container ${name}`);
  });
}

/** A tar of `.prism/` and `.prism/init` (root, 0755), for the archive API to put at the root. */
function initArchive(binary: Buffer): Buffer {
  const entry = (path: string, type: 'Directory' | 'File', size: number) => {
    const h = new Header({ path, mode: 0o755, size, mtime: new Date(0), type, uid: 0, gid: 0 });
    h.encode();
    return h.block!;
  };
  const file = INIT_PATH.replace(/^\//, '');
  const dir = file.slice(0, file.lastIndexOf('/') + 1);
  const pad = Buffer.alloc((512 - (binary.length % 512)) % 512);
  // Two zero blocks end the archive.
  return Buffer.concat([entry(dir, 'Directory', 0), entry(file, 'File', binary.length), binary, pad, Buffer.alloc(1024)]);
}
