import { readFile, stat } from 'node:fs/promises';
import { PrismError } from '../core/errors.js';

export interface RegistryAuths {
  [host: string]: { username: string; password: string };
}

/**
 * Reads `{"auths": {"host[:port]": {"username", "password"}}}`. The file holds secrets, so it must not
 * be readable by others (as ~/.docker/config.json should not be).
 */
export async function loadRegistryAuths(file: string | undefined): Promise<RegistryAuths> {
  if (!file) return {};
  let text: string;
  try {
    const st = await stat(file);
    if ((st.mode & 0o077) !== 0) throw new PrismError('FAILED_PRECONDITION', `${file} holds registry credentials: make it mode 0600`);
    text = await readFile(file, 'utf8');
  } catch (e) {
    if (e instanceof PrismError) throw e;
    throw new PrismError('INVALID_ARGUMENT', `cannot read --registry-auth ${file}: ${(e as Error).message}`, { cause: e });
  }
  const parsed = JSON.parse(text) as { auths?: RegistryAuths };
  const auths = parsed.auths ?? {};
  for (const [host, a] of Object.entries(auths)) {
    if (typeof a?.username !== 'string' || typeof a?.password !== 'string') {
      throw new PrismError('INVALID_ARGUMENT', `${file}: auths["${host}"] needs string username and password`);
    }
  }
  return auths;
}
