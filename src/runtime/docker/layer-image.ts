import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { copyFile, mkdir, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type Docker from 'dockerode';
import { c as tarCreate } from 'tar';
import { PrismError } from '../../core/errors.js';
import { TASK_INIT_PATH } from '../driver.js';
import { engineError, engineStatus } from './engine-errors.js';

/** Where the driver puts its own binary in every image it builds (and so in every task). */
export const INIT_PATH = TASK_INIT_PATH;
export const IMAGE_REPO = 'prism.local/layers';
export const MANAGED_LABEL = 'prism.managed';

/**
 * The engine's name for an image made of `layers` (Prism's unpacked layer directories, which the image
 * store names by digest, so the paths identify the content) plus the init binary: the same layers and
 * init give the same tag, so the image is loaded once per engine.
 */
export function layerImageTag(layers: string[], initDigest: string): string {
  const h = createHash('sha256').update(JSON.stringify({ layers, init: initDigest })).digest('hex');
  return `${IMAGE_REPO}:${h.slice(0, 40)}`;
}

export async function fileDigest(path: string): Promise<string> {
  const h = createHash('sha256');
  await pipeline(createReadStream(path), h);
  return h.digest('hex');
}

/**
 * Makes sure the engine has the image for `layers`: when it lacks it, writes a `docker save` archive
 * of the layers and a top layer holding prism-init under `tmpRoot`, POSTs it to /images/load and
 * removes the archive whatever happens. Layer directories are tarred as they are; overlay whiteouts
 * (0/0 character devices) are not translated, so images whose upper layers delete lower files are
 * not yet faithful (docs/runtimes.md).
 */
export async function ensureLayerImage(docker: Docker, tag: string, layers: string[], initBinary: string, tmpRoot: string): Promise<void> {
  try {
    await docker.getImage(tag).inspect();
    return;
  } catch (e) {
    if (engineStatus(e) !== 404) throw engineError(e, `inspecting image ${tag}`);
  }
  await mkdir(tmpRoot, { recursive: true });
  const dir = join(tmpRoot, `load-${randomBytes(6).toString('hex')}`);
  await mkdir(dir);
  try {
    const layerFiles: string[] = [];
    const diffIds: string[] = [];
    for (const [i, layer] of layers.entries()) {
      const file = `${i}.tar`;
      await tarCreate({ cwd: layer, file: join(dir, file), noDirRecurse: false }, await readdir(layer));
      layerFiles.push(file);
      diffIds.push(`sha256:${await fileDigest(join(dir, file))}`);
    }
    const staging = join(dir, 'init-layer');
    await mkdir(join(staging, '.prism'), { recursive: true });
    await copyFile(initBinary, join(staging, INIT_PATH));
    await tarCreate({ cwd: staging, file: join(dir, 'init.tar') }, ['.prism']);
    layerFiles.push('init.tar');
    diffIds.push(`sha256:${await fileDigest(join(dir, 'init.tar'))}`);
    const config = {
      architecture: dockerArch(process.arch),
      os: 'linux',
      config: { Labels: { [MANAGED_LABEL]: 'true' } },
      rootfs: { type: 'layers', diff_ids: diffIds },
      history: diffIds.map(() => ({ created_by: 'prism docker driver' })),
    };
    await writeFile(join(dir, 'config.json'), JSON.stringify(config));
    await writeFile(join(dir, 'manifest.json'), JSON.stringify([{ Config: 'config.json', RepoTags: [tag], Layers: layerFiles }]));
    await loadArchive(docker, Readable.from(tarCreate({ cwd: dir }, ['manifest.json', 'config.json', ...layerFiles])));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function loadArchive(docker: Docker, archive: NodeJS.ReadableStream): Promise<void> {
  let res: NodeJS.ReadableStream;
  try {
    res = await docker.loadImage(archive, { quiet: true });
  } catch (e) {
    throw engineError(e, 'loading the image into the Docker engine');
  }
  // The engine reports a failed load inside a 200 response, as a JSON message with an error.
  await new Promise<void>((resolve, reject) => {
    docker.modem.followProgress(res, (err: Error | null, out: { error?: string; errorDetail?: { message?: string } }[]) => {
      const failed = err?.message ?? out?.find((m) => m.error)?.error;
      if (failed) reject(new PrismError('INTERNAL', `the Docker engine refused the image: ${failed}`, { cause: err ?? undefined }));
      else resolve();
    });
  });
}

function dockerArch(arch: string): string {
  return arch === 'x64' ? 'amd64' : arch === 'ia32' ? '386' : arch;
}

export async function requireLayerDirs(layers: string[]): Promise<void> {
  for (const layer of layers) {
    const st = await stat(layer).catch(() => null);
    if (!st?.isDirectory()) throw new PrismError('FAILED_PRECONDITION', `image layer not found: ${layer}`);
  }
}
