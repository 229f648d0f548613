/** Formatting for people: aligned tables, key/value blocks, sizes and ages. `-o json` bypasses all of it. */

/** Columns separated by three spaces, each as wide as its widest cell; the last column is not padded. */
export function renderTable(headers: string[], rows: string[][]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]): string =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i] ?? 0)))
      .join('   ')
      .trimEnd();
  return [line(headers), ...rows.map(line)].join('\n') + '\n';
}

/** `Label:  value` lines with the values aligned; entries whose value is undefined are left out. */
export function renderFields(fields: Array<[string, string | undefined]>): string {
  const shown = fields.filter((f): f is [string, string] => f[1] !== undefined);
  const width = Math.max(0, ...shown.map(([k]) => k.length + 1));
  return shown.map(([k, v]) => `${`${k}:`.padEnd(width)}  ${v}`).join('\n') + '\n';
}

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

/** 1536 -> `1.5 KiB`; one decimal below 10 of a unit, none above. */
export function humanBytes(n: number): string {
  if (!Number.isFinite(n) || n < 0) return '-';
  let v = n;
  let u = 0;
  while (v >= 1024 && u < UNITS.length - 1) {
    v /= 1024;
    u++;
  }
  if (u === 0) return `${v} B`;
  return `${v < 10 ? v.toFixed(1).replace(/\.0$/, '') : Math.round(v)} ${UNITS[u]}`;
}

/** Seconds as `45s`, `12m`, `3h`, `5d` (kubectl's AGE style). */
export function humanDuration(sec: number): string {
  if (!Number.isFinite(sec)) return '-';
  const s = Math.max(0, Math.floor(sec));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m`;
  if (s < 86400) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86400)}d`;
}

/** How long ago an ISO timestamp was; clock skew between nodes can put it in the future, shown as 0s. */
export function age(iso: string | undefined, now: Date = new Date()): string {
  if (!iso) return '-';
  const t = Date.parse(iso);
  return Number.isNaN(t) ? '-' : humanDuration((now.getTime() - t) / 1000);
}

export function humanMs(ms: number): string {
  return ms < 1000 ? `${Math.round(ms)}ms` : `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)}s`;
}

/** Quotes argv for display so it can be pasted back into a shell. */
export function shellJoin(argv: string[]): string {
  return argv.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`)).join(' ');
}

/** Bytes back into the API's JSON form (docs/api.md "Output encoding"), for `-o json`. */
export function wireOutput(stdout: Uint8Array, stderr: Uint8Array): { stdout: string; stderr: string; encoding: 'utf8' | 'base64' } {
  const strict = new TextDecoder('utf-8', { fatal: true });
  try {
    return { stdout: strict.decode(stdout), stderr: strict.decode(stderr), encoding: 'utf8' };
  } catch {
    return { stdout: Buffer.from(stdout).toString('base64'), stderr: Buffer.from(stderr).toString('base64'), encoding: 'base64' };
  }
}

/** `used/total` with both sides in one formatter, e.g. `3 GiB/16 GiB`. */
export function usedOf(used: number, total: number, fmt: (n: number) => string = String): string {
  return `${fmt(used)}/${fmt(total)}`;
}

/** A share as a whole percent (`12%`), `-` when the whole is unknown or zero. */
export function percent(part: number, whole: number): string {
  return whole > 0 && Number.isFinite(part) ? `${Math.round((part / whole) * 100)}%` : '-';
}

/** CPU counts as users write them: `2`, `0.5`, `1.25`. */
export function humanCpus(n: number): string {
  return Number.isFinite(n) ? String(Math.round(n * 100) / 100) : '-';
}

/** `k=v,k2=v2` sorted by key, `-` for none. */
export function labelList(labels: Record<string, string> | undefined): string {
  const e = Object.entries(labels ?? {}).sort(([a], [b]) => a.localeCompare(b));
  return e.length ? e.map(([k, v]) => `${k}=${v}`).join(',') : '-';
}
