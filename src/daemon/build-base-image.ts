import { join, resolve } from 'node:path';
import { CODE_INTERPRETER_IMAGE, CODE_INTERPRETER_RECIPE, buildBaseImage, isCurrentBaseImage } from '../images/base-image.js';
import { LocalImageStore } from '../images/local-image-store.js';
import { DEFAULT_IMAGE, defaultDataDir } from './config.js';
import { initBinaryPath } from './package-info.js';

interface Flags {
  imagesDir?: string;
  dataDir?: string;
  mirror: string;
  force?: boolean;
  codeInterpreter?: boolean;
}

/**
 * `prismd build-base-image`: debootstrap the default image into the image store, unless it is there;
 * `--code-interpreter`: the code-interpreter image (E2B's `code-interpreter-v1`, docs/e2b.md) instead.
 */
export async function buildBaseImageCommand(flags: Flags): Promise<void> {
  const dataDir = resolve(flags.dataDir ?? process.env.PRISM_DATA_DIR ?? defaultDataDir());
  const root = resolve(flags.imagesDir ?? process.env.PRISM_IMAGES_DIR ?? join(dataDir, 'images'));
  const store = new LocalImageStore({ root, fixupBinary: initBinaryPath() });
  const ref = flags.codeInterpreter ? CODE_INTERPRETER_IMAGE : (process.env.PRISM_DEFAULT_IMAGE ?? DEFAULT_IMAGE);
  if (!flags.force) {
    const existing = await store.get(ref).catch(() => undefined);
    if (existing && isCurrentBaseImage(existing)) {
      process.stdout.write(`${ref} is already in ${root} (${existing.digest})\n`);
      return;
    }
    if (existing) process.stdout.write(`${ref} in ${root} predates the sandbox user: rebuilding it\n`);
  }
  const t0 = Date.now();
  process.stdout.write(`building ${ref} with debootstrap from ${flags.mirror} (takes ${flags.codeInterpreter ? 'a few minutes' : 'a minute or two'}, once)\n`);
  const rec = await buildBaseImage({ store, ref, mirror: flags.mirror, log: (l) => process.stdout.write(`  ${l}\n`), ...(flags.codeInterpreter ? { recipe: CODE_INTERPRETER_RECIPE } : {}) });
  await store.rootfs(ref); // unpack now, so the first sandbox starts fast
  process.stdout.write(`built ${ref} (${rec.digest}) in ${Math.round((Date.now() - t0) / 1000)} s\n`);
}
