import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

/** What `prismctl login` saves (and the quick start writes): the daemon to talk to and its token. */
export interface SavedLogin {
  url: string;
  token: string;
}

/** What a connection needs (a subset of PrismOptions). */
export interface ConnectionOptions {
  url: string;
  token?: string;
  ca?: Uint8Array;
}

export type Env = Record<string, string | undefined>;

export { DEFAULT_API, DEFAULT_URL, normalizeUrl } from './config-url.js';
import { DEFAULT_API, normalizeUrl } from './config-url.js';

/** `$PRISM_CONFIG`, else `$XDG_CONFIG_HOME/prism/config.json`, else `~/.config/prism/config.json`. */
export function configPath(env: Env): string {
  if (env.PRISM_CONFIG) return env.PRISM_CONFIG;
  const base = env.XDG_CONFIG_HOME || join(env.HOME || '/root', '.config');
  return join(base, 'prism', 'config.json');
}

export function readSavedLogin(env: Env): SavedLogin | undefined {
  const file = configPath(env);
  if (!existsSync(file)) return undefined;
  let parsed: Partial<SavedLogin>;
  try {
    parsed = JSON.parse(readFileSync(file, 'utf8')) as Partial<SavedLogin>;
  } catch (e) {
    throw new Error(`${file} is not valid JSON (${(e as Error).message}); fix it or run 'prismctl login' again`);
  }
  if (typeof parsed.url !== 'string' || typeof parsed.token !== 'string') {
    throw new Error(`${file} must hold {"url": "...", "token": "..."}; run 'prismctl login' again`);
  }
  return { url: normalizeUrl(parsed.url), token: parsed.token };
}

/**
 * The connection prismctl and `Prism.fromEnv()` use: explicit values, else PRISM_API / PRISM_TOKEN /
 * PRISM_CA (a PEM file), else the saved login. The saved token is only ever sent to the saved address.
 */
export function connectionFromEnv(env: Env, given: { api?: string; token?: string; caFile?: string } = {}): ConnectionOptions {
  const saved = readSavedLogin(env);
  const api = given.api ?? env.PRISM_API ?? saved?.url ?? DEFAULT_API;
  let token = given.token ?? env.PRISM_TOKEN;
  if (!token && saved && normalizeUrl(api) === saved.url) token = saved.token;
  const caFile = given.caFile ?? env.PRISM_CA;
  let ca: Buffer | undefined;
  if (caFile) {
    try {
      ca = readFileSync(caFile);
    } catch (e) {
      throw new Error(`cannot read the CA file ${caFile}: ${(e as Error).message}`);
    }
  }
  return { url: api, ...(token ? { token } : {}), ...(ca ? { ca } : {}) };
}
