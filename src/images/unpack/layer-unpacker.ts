import { mkdir, readdir } from 'node:fs/promises';
import { isPrismError, PrismError } from '../../core/errors.js';
import type { ImageLayer } from '../image-store.js';
import { bad } from '../oci-types.js';
import { openLayerStream } from './layer-stream.js';
import { LayerWriter, type SkippedEntries } from './layer-writer.js';
import { ByteReader } from './byte-reader.js';
import { readTar } from './tar-reader.js';

export type { SkippedEntries } from './layer-writer.js';

export interface ExtractOptions {
  /**
   * The prism-init binary, whose `layer-fixup` subcommand creates whiteouts and sets xattrs. Needed
   * only by layers that have any; without it such a layer fails with FAILED_PRECONDITION.
   */
  fixupBinary?: string;
  /** Called once, after a successful unpack, with what the layer carried that was not unpacked. */
  onSkipped?: (skipped: SkippedEntries) => void;
}

async function makeEmptyDir(dest: string): Promise<void> {
  try {
    await mkdir(dest, { mode: 0o755 });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST' || (await readdir(dest)).length > 0) throw e;
  }
}

function asLayerError(e: unknown, layer: ImageLayer): PrismError {
  if (isPrismError(e)) return e;
  const errno = (e as NodeJS.ErrnoException).code ?? '';
  if (/^E[A-Z]+$/.test(errno)) return new PrismError('INTERNAL', `unpacking layer ${layer.digest}: ${(e as Error).message}`, { cause: e });
  // zlib's Z_* codes and anything else the decoder says: the blob itself is bad.
  return new PrismError('INVALID_ARGUMENT', `layer ${layer.digest} is not a valid ${layer.mediaType}: ${(e as Error).message}`, { cause: e });
}

/**
 * Unpacks one layer into `dest` (missing or an empty directory) in the format overlayfs reads when
 * `dest` is stacked above `lowerDirs` (the already unpacked layers below it, lowest first):
 *  - `.wh.NAME` becomes a whiteout (character device 0:0) named NAME; `.wh..wh..opq` marks its
 *    directory opaque (trusted.overlay.opaque=y). Both, and xattrs, are applied by `fixupBinary`.
 *  - Names are cleaned as Docker does (a leading '/' is dropped); names climbing out of the layer, NUL
 *    in names, entries beneath one of the layer's own symlinks or files, and hardlinks to anything that
 *    is not a file of this image fail with INVALID_ARGUMENT. A hardlink to a lower layer's file links
 *    to that file (layers are read-only once unpacked), or copies it across file systems.
 *  - Symlinks are kept verbatim and created last. Devices and FIFOs are skipped (runc provides /dev).
 *  - Numeric owners (when running as root), modes including setuid/setgid/sticky, and mtimes are kept.
 *  - Only security.* and user.* xattrs are applied; trusted.* could forge overlayfs' markers.
 * The uncompressed bytes must hash to `layer.diffId` (INVALID_ARGUMENT otherwise). On any failure
 * `dest` may hold a partial layer: the caller removes it. Nothing is ever written outside `dest`.
 */
export async function extractLayer(
  blobPath: string,
  layer: ImageLayer,
  dest: string,
  lowerDirs: string[],
  opts: ExtractOptions = {},
): Promise<void> {
  await makeEmptyDir(dest);
  const writer = new LayerWriter(dest, lowerDirs, process.getuid?.() === 0);
  const stream = openLayerStream(blobPath, layer.mediaType);
  let digest: string;
  try {
    const reader = new ByteReader(stream.chunks);
    for await (const { entry, body } of readTar(reader)) await writer.add(entry, body);
    await reader.drain();
    digest = await stream.finish();
  } catch (e) {
    // A decompressor's own failure explains a truncated or garbled stream better than the tar reader.
    const decompressor = await stream.abort();
    const err = asLayerError(decompressor ?? e, layer);
    throw err === e ? new PrismError(err.code, `layer ${layer.digest}: ${err.message}`, { cause: e }) : err;
  }
  if (digest !== layer.diffId) throw bad(`layer ${layer.digest} does not match its diff_id ${layer.diffId} (got ${digest})`);
  try {
    await writer.fixups.apply(opts.fixupBinary, dest, layer.diffId);
    await writer.finish();
  } catch (e) {
    throw asLayerError(e, layer);
  }
  opts.onSkipped?.({ ...writer.skipped });
}
