import { existsSync, mkdirSync, readFileSync, writeFileSync, chmodSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { normalizeUrl } from '../sdk/index.js';

/** What `prismctl login` saves: the daemon to talk to and the token for it. */
export interface CliConfig {
  url: string;
  token: string;
}

/** `$PRISM_CONFIG`, else `$XDG_CONFIG_HOME/prism/config.json`, else `~/.config/prism/config.json`. */
export function configPath(env: Record<string, string | undefined>): string {
  if (env.PRISM_CONFIG) return env.PRISM_CONFIG;
  const base = env.XDG_CONFIG_HOME || join(env.HOME || '/root', '.config');
  return join(base, 'prism', 'config.json');
}

export function readConfig(env: Record<string, string | undefined>): CliConfig | undefined {
  const file = configPath(env);
  if (!existsSync(file)) return undefined;
  let parsed: Partial<CliConfig>;
  try {
    parsed = JSON.parse(readFileSync(file, 'utf8')) as Partial<CliConfig>;
  } catch (e) {
    throw new Error(`${file} is not valid JSON (${(e as Error).message}); fix it or run 'prismctl login' again`);
  }
  if (typeof parsed.url !== 'string' || typeof parsed.token !== 'string') {
    throw new Error(`${file} must hold {"url": "...", "token": "..."}; run 'prismctl login' again`);
  }
  return { url: normalizeUrl(parsed.url), token: parsed.token };
}

/** Writes the config readable by its owner only (it holds a credential). */
export function writeConfig(env: Record<string, string | undefined>, cfg: CliConfig): string {
  const file = configPath(env);
  mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
  writeFileSync(file, `${JSON.stringify({ url: normalizeUrl(cfg.url), token: cfg.token }, null, 2)}\n`, { mode: 0o600 });
  chmodSync(file, 0o600);
  return file;
}
