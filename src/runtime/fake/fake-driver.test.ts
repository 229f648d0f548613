import { describe, expect, it } from 'vitest';
import { PrismError, type ErrorCode } from '../../core/errors.js';
import type { ExecOptions, RuntimeDriver, TaskHandle, TaskProcess, TaskSpec } from '../driver.js';
import { FakeDriver } from './fake-driver.js';

// test/conformance/driver-suite.ts drives tasks through /bin/sh scripts, which the fake does not
// interpret, so the fake's own contract-relevant behaviour is checked here instead.

const spec = (id: string): TaskSpec => ({
  id,
  hostname: id,
  layers: [],
  env: { PATH: '/bin' },
  workdir: '/work',
  cpus: 1,
  memoryMb: 64,
  pidsLimit: 16,
  diskMb: 256,
  maxOpenFiles: 1024,
});

async function run(driver: RuntimeDriver, h: TaskHandle, argv: string[], extra: Partial<ExecOptions> = {}, input?: string) {
  const proc = await driver.exec(h, { argv, env: h.spec.env, cwd: h.spec.workdir, stdin: input !== undefined, ...extra });
  if (input !== undefined) proc.stdin!.end(input);
  return collect(proc);
}

async function collect(proc: TaskProcess) {
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  proc.stdout.on('data', (b: Buffer) => out.push(b));
  proc.stderr.on('data', (b: Buffer) => err.push(b));
  const r = await proc.result;
  return { ...r, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() };
}

async function expectCode(p: Promise<unknown>, code: ErrorCode): Promise<void> {
  const err = await p.then(() => undefined, (e: unknown) => e);
  expect(err).toBeInstanceOf(PrismError);
  expect((err as PrismError).code).toBe(code);
}

describe('FakeDriver', () => {
  it('runs the built-in commands deterministically', async () => {
    const d = new FakeDriver();
    const h = await d.create(spec('sb-1'));
    expect(await run(d, h, ['echo', 'hello', 'world'])).toMatchObject({ exitCode: 0, stdout: 'hello world\n', stderr: '' });
    expect(await run(d, h, ['exit', '3'])).toMatchObject({ exitCode: 3 });
    expect(await run(d, h, ['cat'], {}, 'piped')).toMatchObject({ exitCode: 0, stdout: 'piped' });
    expect(await run(d, h, ['pwd'])).toMatchObject({ stdout: '/work\n' });
    expect(await run(d, h, ['env'], { env: { B: '2', A: '1' } })).toMatchObject({ stdout: 'A=1\nB=2\n' });
    expect((await run(d, h, ['bytes', 'ff00'])).stdout).toBe(Buffer.from([0xff, 0]).toString());
    const missing = await run(d, h, ['ls']);
    expect(missing.exitCode).toBe(127);
    expect(missing.stderr).toContain('not found');
  });

  it('kill() ends a sleeping command with 128+signal', async () => {
    const d = new FakeDriver();
    const h = await d.create(spec('sb-1'));
    const proc = await d.exec(h, { argv: ['sleep', '60000'], env: {}, cwd: '/', stdin: false });
    const t0 = Date.now();
    setTimeout(() => proc.kill(), 20);
    expect(await collect(proc)).toMatchObject({ exitCode: 137, signal: 'SIGKILL' });
    expect(Date.now() - t0).toBeLessThan(5000);
  });

  it('keeps files across stop/start, refuses exec while stopped, stop and destroy are idempotent', async () => {
    const d = new FakeDriver({ name: 'microvm' });
    expect(d.name).toBe('microvm');
    const h = await d.create(spec('sb-1'));
    expect(h.runtime).toBe('microvm');
    await run(d, h, ['write', 'notes.txt', 'kept', 'here']);
    const sleeper = await d.exec(h, { argv: ['sleep', '60000'], env: {}, cwd: '/', stdin: false });
    await d.stop(h);
    await d.stop(h);
    expect(await collect(sleeper)).toMatchObject({ signal: 'SIGKILL' });
    expect(await d.inspect(h)).toBe('stopped');
    await expectCode(d.exec(h, { argv: ['echo'], env: {}, cwd: '/', stdin: false }), 'FAILED_PRECONDITION');
    await d.start(h);
    await d.start(h);
    expect(await run(d, h, ['read', '/work/notes.txt'])).toMatchObject({ exitCode: 0, stdout: 'kept here' });
    await d.destroy(h);
    await d.destroy(h);
    expect(await d.listTasks()).toEqual([]);
    expect(await d.recover(h)).toBe('gone');
    await expectCode(d.start(h), 'NOT_FOUND');
  });

  it('injects failures: failNextCreate once, setRecoverState, vanish', async () => {
    const d = new FakeDriver();
    d.failNextCreate(new PrismError('RESOURCE_EXHAUSTED', 'no room'));
    await expectCode(d.create(spec('sb-1')), 'RESOURCE_EXHAUSTED');
    expect(await d.listTasks()).toEqual([]);
    const a = await d.create(spec('sb-1'));
    const b = await d.create(spec('sb-2'));
    await expectCode(d.create(spec('sb-2')), 'ALREADY_EXISTS');
    await run(d, a, ['write', '/f', 'x']);
    d.setRecoverState(a.id, 'stopped');
    expect(await d.recover(a)).toBe('stopped');
    expect(d.files(a.id).get('/f')?.toString()).toBe('x');
    d.vanish(b.id);
    expect(await d.recover(b)).toBe('gone');
    expect(await d.listTasks()).toEqual([a.id]);
  });
});
