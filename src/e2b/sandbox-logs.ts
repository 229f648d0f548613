import type { ExecRecord } from '../core/types.js';

/**
 * E2B's sandbox logs (`GET /sandboxes/:id/logs`, `GET /v2/sandboxes/:id/logs`) from what Prism
 * records: every finished command of the sandbox (Prism's exec records, which E2B commands and
 * background processes also leave) as a start entry and an end entry. A command still running has
 * no record yet, so it shows once it ends; Prism keeps the newest records per sandbox only.
 */

export const LOG_LEVELS = ['debug', 'info', 'warn', 'error'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export interface LogEntry {
  timestamp: string;
  level: LogLevel;
  message: string;
  fields: Record<string, string>;
}

/** A command line as a shell would read it back (quoted only where needed). */
function commandLine(cmd: string[]): string {
  return cmd.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`)).join(' ');
}

function ending(r: ExecRecord): { level: LogLevel; message: string } {
  if (r.oomKilled) return { level: 'error', message: 'killed: out of memory' };
  if (r.timedOut) return { level: 'warn', message: 'killed: timed out' };
  if (r.diskFull) return { level: 'warn', message: `exited with code ${r.exitCode}: the writable layer is full` };
  if (r.signal) return { level: 'warn', message: `killed by ${r.signal}` };
  return { level: r.exitCode === 0 ? 'info' : 'warn', message: `exited with code ${r.exitCode}` };
}

/** The entries of a sandbox's exec records, oldest first. */
export function execLogEntries(records: ExecRecord[]): LogEntry[] {
  const out: Array<LogEntry & { at: number }> = [];
  for (const r of records) {
    const at = Date.parse(r.startedAt);
    if (!Number.isFinite(at)) continue;
    const fields = { execId: r.id, command: commandLine(r.cmd) };
    out.push({ at, timestamp: new Date(at).toISOString(), level: 'info', message: `started: ${fields.command}`, fields: { ...fields, event: 'start' } });
    const end = ending(r);
    const endAt = at + Math.round(r.durationMs);
    out.push({ at: endAt, timestamp: new Date(endAt).toISOString(), ...end, fields: { ...fields, event: 'end', exitCode: String(r.exitCode) } });
  }
  return out.sort((a, b) => a.at - b.at).map(({ at: _at, ...e }) => e);
}

export interface LogQuery {
  /** ms since the epoch: entries at or after it (forward) or at or before it (backward). */
  cursor?: number;
  direction?: 'forward' | 'backward';
  /** Minimum level. */
  level?: LogLevel;
  limit: number;
  /** Case-sensitive substring of the message. */
  search?: string;
}

/** Filters and pages entries as E2B's v2 logs endpoint does; backward returns the newest first. */
export function queryLogs(entries: LogEntry[], q: LogQuery): LogEntry[] {
  const min = LOG_LEVELS.indexOf(q.level ?? 'debug');
  const backward = q.direction === 'backward';
  const kept = entries.filter((e) => {
    const at = Date.parse(e.timestamp);
    if (q.cursor !== undefined && (backward ? at > q.cursor : at < q.cursor)) return false;
    if (LOG_LEVELS.indexOf(e.level) < min) return false;
    return q.search === undefined || e.message.includes(q.search);
  });
  return (backward ? kept.reverse() : kept).slice(0, q.limit);
}
