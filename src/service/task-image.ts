import { PrismError, isPrismError } from '../core/errors.js';
import type { ImageStore } from '../images/image-store.js';
import type { RuntimeDriver, RuntimeImage } from '../runtime/driver.js';
import { NO_TELEMETRY, timedPull, type Telemetry } from './telemetry.js';

/** The image a new task is made from, whichever store it came from. */
export interface TaskImage {
  /** The sandbox's imageDigest: the manifest digest in Prism's store, or the runtime's own image id. */
  digest: string;
  /** The image config's environment (`KEY=value`), working directory and user. */
  env: string[];
  workingDir?: string;
  user?: string;
  /** Prism's unpacked layers (TaskSpec.layers); empty for a runtime's own image. */
  layers: string[];
  /** The runtime's own image (TaskSpec.image), when it came from there. */
  runtimeImage?: string;
}

/**
 * Where the image of a new task comes from. `ref` is the sandbox's image as the user wrote it.
 *
 * A runtime with images of its own (capabilities().ownImages: the docker engine) is asked first, so
 * that a name means there what it means to `docker run`:
 *   1. the runtime has `ref` (a tag, an id, a digest reference): that image, as it is;
 *   2. else Prism's image store has it (an imported image, the default base image, an earlier
 *      `prismctl image pull`): its layers, which the driver loads into the runtime as before;
 *   3. else the runtime pulls it, with its own credentials and registry mirrors.
 * Every other runtime: Prism's store, which pulls the image when it lacks it.
 *
 * `beforePull` runs once before a pull of either kind (the agent marks the sandbox `starting`, since a
 * pull takes a while). Each pull's duration goes to `telemetry`. NOT_FOUND when no source has the
 * image, naming `ref`.
 */
export async function resolveTaskImage(
  ref: string,
  driver: RuntimeDriver,
  images: ImageStore,
  beforePull: () => Promise<void>,
  telemetry: Pick<Telemetry, 'observePull'> = NO_TELEMETRY,
): Promise<TaskImage> {
  const own = driver.capabilities().ownImages ? driver : undefined;
  if (own?.findImage && own.pullImage) {
    const found = await own.findImage(ref);
    if (found) return fromRuntime(found);
    const stored = await fromStoreIfThere(images, ref);
    if (stored) return stored;
    await beforePull();
    const pulled = await timedPull(telemetry, driver.name, () => own.pullImage!(ref)).catch((e: unknown) => {
      if (!isPrismError(e, 'NOT_FOUND')) throw e;
      throw new PrismError('NOT_FOUND', `image '${ref}' not found: neither the ${driver.name} runtime nor Prism's image store has it, and the ${driver.name} runtime could not pull it (${e.message})`, { cause: e });
    });
    return fromRuntime(pulled);
  }
  const stored = await fromStoreIfThere(images, ref);
  if (stored) return stored;
  await beforePull();
  await timedPull(telemetry, 'prism', () => images.ensure(ref));
  return fromStore(images, ref);
}

/** The image from the store, or undefined when the store has no such image (one read of its index, not two). */
async function fromStoreIfThere(images: ImageStore, ref: string): Promise<TaskImage | undefined> {
  return fromStore(images, ref).catch((e: unknown) => (isPrismError(e, 'NOT_FOUND') ? undefined : Promise.reject(e)));
}

async function fromStore(images: ImageStore, ref: string): Promise<TaskImage> {
  const { image, layerDirs } = await images.rootfs(ref);
  const { env, workingDir, user } = image.config;
  return { digest: image.digest, env, layers: layerDirs, ...(workingDir ? { workingDir } : {}), ...(user ? { user } : {}) };
}

function fromRuntime(image: RuntimeImage): TaskImage {
  const { id, env, workingDir, user } = image;
  return { digest: id, env, layers: [], runtimeImage: id, ...(workingDir ? { workingDir } : {}), ...(user ? { user } : {}) };
}
