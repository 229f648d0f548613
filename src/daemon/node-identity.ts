import { randomBytes } from 'node:crypto';
import { readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { readableName } from '../core/ids.js';

/** A node keeps its id (and generated name) across restarts: they live in `<data-dir>/node.json`. */
export async function loadNodeIdentity(dataDir: string, wantedName?: string): Promise<{ id: string; name: string }> {
  const file = join(dataDir, 'node.json');
  let saved: { id: string; name: string } | undefined;
  try {
    saved = JSON.parse(await readFile(file, 'utf8')) as { id: string; name: string };
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
  const ident = { id: saved?.id ?? `node-${randomBytes(6).toString('hex')}`, name: wantedName ?? saved?.name ?? readableName() };
  if (!saved || saved.name !== ident.name) {
    await writeFile(`${file}.tmp`, JSON.stringify(ident));
    await rename(`${file}.tmp`, file);
  }
  return ident;
}
