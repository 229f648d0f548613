import { spawn } from 'node:child_process';
import { lstat, mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, basename, join } from 'node:path';
import * as tar from 'tar';
import { PrismError } from '../core/errors.js';

/** An empty tar: two zero blocks. */
const EMPTY_TAR = Buffer.alloc(1024);

/**
 * Writes an overlay upper directory (a sandbox's writable layer) to `dest` as an uncompressed OCI
 * layer tar: files, directories, links, modes and owners as they are; an overlay whiteout (character
 * device 0:0) becomes `.wh.<name>`, an opaque directory gets `.wh..wh..opq`, as the image spec says
 * and as Prism's unpacker reads them back. Opaque directories are found by `prism-init layer-scan`
 * (Node cannot read xattrs); other extended attributes are not carried over.
 * The caller keeps the directory still while it is read (the task frozen or stopped).
 */
export async function exportUpperLayer(upper: string, dest: string, initBinary: string): Promise<void> {
  const [opaque, entries] = await Promise.all([scanOpaque(initBinary, upper), readdir(upper, { recursive: true, withFileTypes: true })]);
  const markers: string[] = [];
  for (const e of entries) {
    if (!e.isCharacterDevice()) continue;
    const full = join(e.parentPath, e.name);
    if ((await lstat(full)).rdev !== 0) continue;
    const rel = full.slice(upper.length + 1);
    markers.push(join(dirname(rel), `.wh.${basename(rel)}`));
  }
  for (const dir of opaque) markers.push(join(dir, '.wh..wh..opq'));
  const top = (await readdir(upper)).sort();
  if (top.length === 0 && markers.length === 0) {
    await writeFile(dest, EMPTY_TAR);
    return;
  }
  const isWhiteout = (_path: string, st: { isCharacterDevice(): boolean; rdev: number }) => !(st.isCharacterDevice() && st.rdev === 0);
  if (top.length) await tar.c({ file: dest, cwd: upper, filter: isWhiteout as never }, top);
  else await writeFile(dest, EMPTY_TAR);
  if (!markers.length) return;
  const staging = await mkdtemp(join(tmpdir(), 'prism-layer-'));
  try {
    for (const m of markers) {
      await mkdir(join(staging, dirname(m)), { recursive: true });
      await writeFile(join(staging, m), '');
    }
    await tar.r({ file: dest, cwd: staging }, markers.sort());
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
}

/** Directories of `upper` marked opaque, relative to it ("" for `upper` itself). */
function scanOpaque(initBinary: string, upper: string): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const child = spawn(initBinary, ['layer-scan', upper], { stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let err = '';
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => (err += b.toString()));
    child.once('error', (e) => reject(new PrismError('INTERNAL', `cannot run ${initBinary} layer-scan: ${e.message}`, { cause: e })));
    child.once('close', (code) => {
      if (code !== 0) return reject(new PrismError('INTERNAL', `scanning the writable layer failed: ${err.trim() || `exit ${code}`}`));
      const fields = Buffer.concat(out).toString('utf8').split('\0');
      const dirs: string[] = [];
      for (let i = 0; i + 1 < fields.length; i += 2) if (fields[i] === 'o') dirs.push(fields[i + 1]!);
      resolve(dirs);
    });
  });
}
