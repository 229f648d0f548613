import type Docker from 'dockerode';
import { Header } from 'tar';
import { PrismError } from '../../core/errors.js';
import type { RuntimeImage } from '../driver.js';
import { engineError, engineStatus, pullError } from './engine-errors.js';
import { INIT_PATH } from './layer-image.js';

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
 * The registry a reference names, as Docker decides it: the first component when it looks like a
 * host (has '.' or ':', or is `localhost`), else Docker Hub.
 */
export function registryOf(ref: string): string {
  const first = ref.split('/')[0]!;
  return ref.includes('/') && (first.includes('.') || first.includes(':') || first === 'localhost') ? first : 'docker.io';
}

/**
 * Has the engine pull `ref` and returns the pulled image. The engine's registry mirrors and
 * insecure-registries apply; credentials do not live in the engine (the docker CLI sends them with
 * each pull), so those of `auths` for the reference's registry go with the request. Failures are
 * translated by pullError, whether the engine answers with an error status or in its progress stream.
 */
export async function pullEngineImage(docker: Docker, ref: string, auths: Record<string, { username: string; password: string }>): Promise<RuntimeImage> {
  if (IMAGE_ID.test(ref)) throw new PrismError('NOT_FOUND', `the Docker engine has no image with id ${ref} (an image id cannot be pulled)`);
  let progress: NodeJS.ReadableStream;
  try {
    const registry = registryOf(ref);
    const creds = auths[registry] ?? (registry === 'docker.io' ? auths['registry-1.docker.io'] ?? auths['index.docker.io'] : undefined);
    // dockerode sends authconfig as X-Registry-Auth, and a reference without tag or digest as `latest`
    // (as `docker pull` does; the API itself would pull every tag).
    progress = await docker.pull(ref, creds ? { authconfig: { ...creds, serveraddress: registry } } : {});
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

/**
 * A tar of `.prism/` and `.prism/init` (root, 0755) holding `binary`, for the archive API to put at
 * the root of a created container of an engine image: the engine's images are used as they are, so
 * prism-init goes into each task's writable layer (where it stays across stop/start) rather than into
 * a derived image that would keep every rebuilt version of the user's image alive.
 */
export function initArchive(binary: Buffer): Buffer {
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
