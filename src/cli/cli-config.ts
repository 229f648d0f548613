import { mkdirSync, writeFileSync, chmodSync } from 'node:fs';
import { dirname } from 'node:path';
import { configPath, type SavedLogin } from '../sdk/config.js';
import { normalizeUrl } from '../sdk/index.js';


/** Writes the config readable by its owner only (it holds a credential). */
export function writeConfig(env: Record<string, string | undefined>, cfg: SavedLogin): string {
  const file = configPath(env);
  mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
  writeFileSync(file, `${JSON.stringify({ url: normalizeUrl(cfg.url), token: cfg.token }, null, 2)}\n`, { mode: 0o600 });
  chmodSync(file, 0o600);
  return file;
}
