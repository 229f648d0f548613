import { PrismError } from '../core/errors.js';

/**
 * The environment file systemd reads with `EnvironmentFile=` (/etc/prism/prismd.env): `KEY=VALUE`
 * lines, `#` and `;` comments. systemd parses values like a shell without expansion: double quotes
 * with `\"`, `\\`, `` \` ``, `\$` escapes, single quotes literal, bare words with backslash escapes.
 * The file belongs to the user: we only ever set the keys we are given and keep every other line.
 */

const KEY_RE = /^[A-Za-z_][A-Za-z0-9_]*$/;
const BARE_RE = /^[A-Za-z0-9_.,:/@%+=-]*$/;

/** `KEY=VALUE` from the command line (`--env`), checked so that it can be written to the file. */
export function parseAssignment(s: string): [string, string] {
  const i = s.indexOf('=');
  const key = i > 0 ? s.slice(0, i) : '';
  const value = s.slice(i + 1);
  if (!KEY_RE.test(key)) throw new PrismError('INVALID_ARGUMENT', `--env must be KEY=VALUE with a variable name as KEY, got '${s}'`);
  if (/[\n\r\0]/.test(value)) throw new PrismError('INVALID_ARGUMENT', `--env ${key}: the value must be one line`);
  return [key, value];
}

export function formatAssignment(key: string, value: string): string {
  return BARE_RE.test(value) ? `${key}=${value}` : `${key}="${value.replace(/[\\"`$]/g, (c) => `\\${c}`)}"`;
}

function unquote(raw: string): string {
  const v = raw.trim();
  if (v.startsWith("'") && v.endsWith("'") && v.length >= 2) return v.slice(1, -1);
  if (v.startsWith('"') && v.endsWith('"') && v.length >= 2) return v.slice(1, -1).replace(/\\([\\"`$])/g, '$1');
  return v.replace(/\\(.)/g, '$1');
}

function assignmentKey(line: string): string | undefined {
  const t = line.trimStart();
  if (t.startsWith('#') || t.startsWith(';')) return undefined;
  const i = t.indexOf('=');
  const key = i > 0 ? t.slice(0, i).trim() : '';
  return KEY_RE.test(key) ? key : undefined;
}

/** The variables the file sets; a later assignment of a key wins, as in systemd. */
export function parseEnvFile(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const key = assignmentKey(line);
    if (key) out[key] = unquote(line.slice(line.indexOf('=') + 1));
  }
  return out;
}

/**
 * `text` with each of `values` set: its first assignment replaced in place (later ones dropped, so
 * the file says one thing), or a line appended. Comments and other keys are kept as they are.
 */
export function setEnvValues(text: string, values: Record<string, string>): string {
  const pending = new Map(Object.entries(values));
  const seen = new Set<string>();
  const lines: string[] = [];
  const body = text.replace(/\n$/, '');
  for (const line of body ? body.split('\n') : []) {
    const key = assignmentKey(line);
    if (key && pending.has(key)) {
      if (!seen.has(key)) lines.push(formatAssignment(key, pending.get(key)!));
      seen.add(key);
      continue;
    }
    lines.push(line);
  }
  for (const [key, value] of pending) if (!seen.has(key)) lines.push(formatAssignment(key, value));
  return `${lines.join('\n')}\n`;
}
