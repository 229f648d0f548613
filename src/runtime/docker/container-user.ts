import { pipeline } from 'node:stream/promises';
import type Docker from 'dockerode';
import { Parser, type ReadEntry } from 'tar';
import { PrismError } from '../../core/errors.js';
import { parseTaskUser, type TaskUser } from '../task-user.js';
import { engineError, engineStatus } from './engine-errors.js';

/** Larger account files are not read (as in the oci driver). */
const MAX_FILE_BYTES = 4 << 20;

/**
 * A numeric `uid[:gid]` needs no image files: the agent's "uid gid groups" with gid = uid when absent.
 * Undefined for a name, which only the image's /etc/passwd and /etc/group can resolve.
 */
export function numericUser(user: string): string | undefined {
  const m = /^(\d+)(?::(\d+))?$/.exec(user);
  if (!m) return undefined;
  const gid = m[2] ?? m[1]!;
  return `${m[1]} ${gid} ${gid}`;
}

/**
 * Resolves a user given by name (`name[:group]`, e.g. an engine image's `USER app`) against the
 * created container's own /etc/passwd and /etc/group, read through the engine's archive API (so the
 * engine need not share this host's filesystem). The engine resolves the path inside the container's
 * root and archives a symlink as a link, which counts as no file: nothing outside the image is read.
 */
export async function resolveContainerUser(docker: Docker, container: string, user: string): Promise<TaskUser> {
  return parseTaskUser(user, await readContainerFile(docker, container, '/etc/passwd'), await readContainerFile(docker, container, '/etc/group'));
}

async function readContainerFile(docker: Docker, container: string, path: string): Promise<string> {
  let archive: NodeJS.ReadableStream;
  try {
    archive = await docker.getContainer(container).getArchive({ path });
  } catch (e) {
    if (engineStatus(e) === 404) return '';
    throw engineError(e, `reading ${path} of ${container}`);
  }
  const chunks: Buffer[] = [];
  let size = 0;
  let first = true;
  const parser = new Parser({
    onReadEntry: (entry: ReadEntry) => {
      const wanted = first && entry.type === 'File' && entry.size <= MAX_FILE_BYTES;
      first = false;
      if (!wanted) return entry.resume();
      entry.on('data', (c: Buffer) => {
        size += c.length;
        chunks.push(c);
      });
    },
  });
  await pipeline(archive, parser).catch((e: unknown) => {
    throw new PrismError('INTERNAL', `reading ${path} of ${container}: ${(e as Error).message}`, { cause: e });
  });
  return size <= MAX_FILE_BYTES ? Buffer.concat(chunks).toString('utf8') : '';
}
