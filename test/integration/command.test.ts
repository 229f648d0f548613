/**
 * Host commands through `prism-init spawnd` (src/runtime/command.ts, guest/init/spawn-server.c) and
 * through Node's own fork: the same answers either way.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { runCommand, useSpawnServer } from '../../src/runtime/command.js';
import { REPO_ROOT } from './prismd-harness.js';

const init = join(REPO_ROOT, 'guest/init/prism-init');
const skip = existsSync(init) ? undefined : 'guest/init not built (npm run build)';

describe.skipIf(skip !== undefined).each([['spawnd', init], ['forked', undefined]] as const)('runCommand (%s)', (_label, binary) => {
  const dir = mkdtempSync(join(tmpdir(), 'prism-cmd-'));
  afterAll(() => {
    useSpawnServer(undefined);
    rmSync(dir, { recursive: true, force: true });
  });

  it('gives exit code, stdout and stderr byte-exact, and a signal', async () => {
    useSpawnServer(binary);
    const r = await runCommand('sh', ['-c', 'printf "o\\0ut"; printf err >&2; exit 3']);
    expect(r).toMatchObject({ code: 3, signal: null, timedOut: false });
    expect(r.stdout).toEqual(Buffer.from('o\0ut'));
    expect(r.stderr.toString()).toBe('err');
    expect(await runCommand('sh', ['-c', 'kill -TERM $$'])).toMatchObject({ code: null, signal: 'SIGTERM' });
  });

  it('answers 127 with a message for a command that does not exist', async () => {
    useSpawnServer(binary);
    const r = await runCommand('/nonexistent/prism-cmd', ['x']);
    expect(r.code).toBe(127);
    expect(r.stderr.toString()).toMatch(/cannot run \/nonexistent\/prism-cmd/);
  });

  it('kills a command past its timeout', async () => {
    useSpawnServer(binary);
    expect(await runCommand('sleep', ['30'], { timeoutMs: 200 })).toMatchObject({ code: null, signal: 'SIGKILL', timedOut: true });
  });

  it('answers at exit even when a child it left keeps stdout open, and writes stderr to a file', async () => {
    useSpawnServer(binary);
    const errFile = join(dir, `err-${_label}`);
    const t0 = Date.now();
    const r = await runCommand('sh', ['-c', 'sleep 20 & echo started >&2; exit 0'], { discardStdout: true, stderrFile: errFile });
    expect(r.code).toBe(0);
    expect(Date.now() - t0).toBeLessThan(15_000); // not when the sleep ends
    expect(readFileSync(errFile, 'utf8')).toBe('started\n');
  });

  it('keeps 64 concurrent commands apart', async () => {
    useSpawnServer(binary);
    const rs = await Promise.all(Array.from({ length: 64 }, (_, i) => runCommand('sh', ['-c', `echo ${i}; exit ${i % 7}`])));
    rs.forEach((r, i) => expect([r.stdout.toString(), r.code]).toEqual([`${i}\n`, i % 7]));
  });
});
