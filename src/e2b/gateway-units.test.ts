import { describe, expect, it } from 'vitest';
import { ConnectError, END_STREAM, connectTimeoutMs, envelope, parseStreamRequest, toConnectError } from './connect-protocol.js';
import { parseMetadataFilter } from './control-routes.js';
import { permissionsText, resolvePath } from './envd-filesystem.js';
import { endEvent } from './envd-process.js';
import { fileSignature } from './envd-routes.js';
import { PrismError } from '../core/errors.js';
import type { ExecRecord, ProcessInfo } from '../core/types.js';
import { execLogEntries, queryLogs } from './sandbox-logs.js';
import { metricView } from './sandbox-view.js';

const base: ProcessInfo = { id: 'ex-1', sandboxId: 's', cmd: ['x'], status: 'exited', startedAt: '', stdinOpen: false, stdoutBytes: 0, stderrBytes: 0 };

describe('Connect envelopes', () => {
  it('frame a JSON message with flags and a big-endian length, and read one back', () => {
    const e = envelope(0, { process: { pid: 42 } });
    expect(e.readUInt8(0)).toBe(0);
    expect(e.readUInt32BE(1)).toBe(e.length - 5);
    expect(parseStreamRequest(e)).toEqual({ process: { pid: 42 } });
    expect(envelope(END_STREAM, {}).toString('hex')).toBe('02000000027b7d');
  });

  it('refuse short, incomplete, compressed and non-JSON requests as invalid_argument or unimplemented', () => {
    const codeOf = (b: Buffer) => {
      try {
        parseStreamRequest(b);
        return 'ok';
      } catch (e) {
        return (e as ConnectError).code;
      }
    };
    expect(codeOf(Buffer.from([0, 0]))).toBe('invalid_argument');
    expect(codeOf(Buffer.from([0, 0, 0, 0, 9, 0x7b]))).toBe('invalid_argument');
    const zipped = envelope(0, {});
    zipped.writeUInt8(1, 0);
    expect(codeOf(zipped)).toBe('unimplemented');
    expect(codeOf(Buffer.concat([Buffer.from([0, 0, 0, 0, 3]), Buffer.from('{x}')]))).toBe('invalid_argument');
  });

  it('map Prism codes to Connect codes and hide unexpected errors', () => {
    expect(toConnectError(new PrismError('NOT_FOUND', 'gone'))).toMatchObject({ code: 'not_found', message: 'gone' });
    expect(toConnectError(new PrismError('UNIMPLEMENTED', 'later')).code).toBe('unimplemented');
    expect(toConnectError(new Error('secret detail'))).toMatchObject({ code: 'internal', message: 'internal error' });
  });

  it('read Connect-Timeout-Ms; 0 and absent mean none, garbage is refused', () => {
    expect(connectTimeoutMs('60000')).toBe(60000);
    expect(connectTimeoutMs('0')).toBeUndefined();
    expect(connectTimeoutMs(undefined)).toBeUndefined();
    expect(() => connectTimeoutMs('-1')).toThrow(ConnectError);
  });
});

describe('envd conventions', () => {
  it('end events: exit code omitted when 0, -1 and Go text for a signal', () => {
    expect(endEvent({ ...base, exitCode: 0 })).toEqual({ exited: true, status: 'exit status 0' });
    expect(endEvent({ ...base, exitCode: 3 })).toEqual({ exitCode: 3, exited: true, status: 'exit status 3', error: 'exit status 3' });
    expect(endEvent({ ...base, exitCode: 137, signal: 'SIGKILL' })).toEqual({ exitCode: -1, exited: false, status: 'signal: killed', error: 'signal: killed' });
  });

  it('paths: absolute kept (normalised), relative and ~ against home', () => {
    expect(resolvePath('/a/../b', '/home/u')).toBe('/b');
    expect(resolvePath('x/y', '/home/u')).toBe('/home/u/x/y');
    expect(resolvePath('~/x', '/home/u')).toBe('/home/u/x');
    expect(resolvePath('', '/home/u')).toBe('/home/u');
  });

  it('permissions as Go prints a FileMode', () => {
    expect(permissionsText('file', 0o644)).toBe('-rw-r--r--');
    expect(permissionsText('dir', 0o755)).toBe('drwxr-xr-x');
    expect(permissionsText('symlink', 0o777)).toBe('Lrwxrwxrwx');
  });

  it('signs file URLs as the SDK does: v1_ + unpadded base64 of sha256(path:op:user:token[:exp])', () => {
    // Vectors from coreutils: printf '<text>' | sha256sum | xxd -r -p | base64 | tr -d =
    expect(fileSignature('/a', 'read', '', 'tok')).toBe('v1_2/gNbgFPxFSqkheS/SD0NHlzA121E/nxkOtc/ovxeoI');
    expect(fileSignature('/home/user/x.txt', 'write', 'root', 'abc', 1700000000)).toBe('v1_QuP+ghY1f719OjjPWK2qbRX7U7XHVdS1PFiLa9Rsf6Q');
    expect(fileSignature('/a', 'read', '', 'tok')).not.toBe(fileSignature('/a', 'write', '', 'tok'));
    expect(fileSignature('/a', 'read', '', 'tok', 10)).not.toBe(fileSignature('/a', 'read', '', 'tok'));
    expect(fileSignature('/a', 'read', '', 'tok')).toMatch(/^v1_[A-Za-z0-9+/]{43}$/);
  });
});

describe('the metadata filter of GET /v2/sandboxes', () => {
  it('unescapes the value, splits pairs, unescapes keys and values (what the SDK encodes three times)', () => {
    // The SDK sends metadata=user%3Du%2525201; the framework decodes one layer.
    expect(parseMetadataFilter('user=u%25201')).toEqual({ user: 'u 1' });
    expect(parseMetadataFilter('a%3D1%26b%3D2')).toEqual({ a: '1', b: '2' });
    expect(parseMetadataFilter(undefined)).toBeUndefined();
    expect(() => parseMetadataFilter('novalue')).toThrow(/key=value/);
  });
});

describe('sandbox logs from exec records', () => {
  const rec = (id: string, startedAt: string, durationMs: number, more: Partial<ExecRecord> = {}): ExecRecord => ({
    id, sandboxId: 's', cmd: ['sh', '-c', 'echo hi there'], startedAt, durationMs, exitCode: 0, timedOut: false, oomKilled: false, diskFull: false,
    stdout: '', stderr: '', encoding: 'utf8', truncated: false, ...more,
  });
  const entries = execLogEntries([
    rec('ex-2', '2026-12-06T00:00:01.000Z', 500, { exitCode: 137, oomKilled: true }),
    rec('ex-1', '2026-12-06T00:00:00.000Z', 3000, { exitCode: 3 }),
  ]);

  it('gives each command a start and an end entry, in time order, with levels from how it ended', () => {
    expect(entries.map((e) => [e.timestamp.slice(17, 23), e.level, e.message])).toEqual([
      ['00.000', 'info', "started: sh -c 'echo hi there'"],
      ['01.000', 'info', "started: sh -c 'echo hi there'"],
      ['01.500', 'error', 'killed: out of memory'],
      ['03.000', 'warn', 'exited with code 3'],
    ]);
    expect(entries[3]!.fields).toEqual({ execId: 'ex-1', command: "sh -c 'echo hi there'", event: 'end', exitCode: '3' });
  });

  it('pages by cursor and direction, filters by level and substring', () => {
    const t = (iso: string) => Date.parse(iso);
    expect(queryLogs(entries, { limit: 10, cursor: t('2026-12-06T00:00:01.000Z') }).map((e) => e.message)).toEqual([
      expect.stringMatching(/^started/), 'killed: out of memory', 'exited with code 3',
    ]);
    expect(queryLogs(entries, { limit: 2, direction: 'backward' }).map((e) => e.message)).toEqual(['exited with code 3', 'killed: out of memory']);
    expect(queryLogs(entries, { limit: 10, level: 'warn' }).map((e) => e.level)).toEqual(['error', 'warn']);
    expect(queryLogs(entries, { limit: 10, search: 'memory' })).toHaveLength(1);
  });
});

describe('metrics as E2B SandboxMetric', () => {
  it('adds timestampUnix and rounds a fractional CPU limit up to whole cores', () => {
    const m = metricView({ timestamp: '2026-12-06T00:00:05.000Z', cpuUsedPct: 12.5, cpuCount: 0.5, memUsed: 1, memTotal: 2, memCache: 0, diskUsed: 3, diskTotal: 4, pids: 2 });
    expect(m).toEqual({ timestamp: '2026-12-06T00:00:05.000Z', timestampUnix: 1796515205, cpuUsedPct: 12.5, cpuCount: 1, memUsed: 1, memTotal: 2, memCache: 0, diskUsed: 3, diskTotal: 4 });
  });
});
