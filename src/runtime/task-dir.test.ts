import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { PrismError } from '../core/errors.js';
import { claimTaskDir, createOrTeardown } from './task-dir.js';

const dirs: string[] = [];
afterEach(async () => {
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});

describe('claimTaskDir', () => {
  it('makes the tasks dir when missing, and a second claim of one id is ALREADY_EXISTS', async () => {
    const root = await mkdtemp(join(tmpdir(), 'prism-taskdir-'));
    dirs.push(root);
    const tasks = join(root, 'tasks');
    await claimTaskDir(tasks, join(tasks, 't1'), 't1');
    const again = await claimTaskDir(tasks, join(tasks, 't1'), 't1').catch((e: unknown) => e);
    expect(again).toBeInstanceOf(PrismError);
    expect(again).toMatchObject({ code: 'ALREADY_EXISTS', message: 'task t1 already exists' });
    expect(await readdir(tasks)).toEqual(['t1']);
  });
});

describe('createOrTeardown', () => {
  it('returns what the create made, and tears nothing down', async () => {
    let torn = 0;
    expect(await createOrTeardown('t', async () => 42, async () => void torn++)).toBe(42);
    expect(torn).toBe(0);
  });

  it('tears down after a failed create and throws its error as a PrismError, keeping its code', async () => {
    let torn = 0;
    const plain = await createOrTeardown('t', async () => { throw new Error('boom'); }, async () => void torn++).catch((e: unknown) => e);
    expect(plain).toMatchObject({ code: 'INTERNAL', message: expect.stringContaining('creating task t') });
    const coded = await createOrTeardown('t', async () => { throw new PrismError('RESOURCE_EXHAUSTED', 'full'); }, async () => void torn++).catch((e: unknown) => e);
    expect(coded).toMatchObject({ code: 'RESOURCE_EXHAUSTED', message: 'full' });
    expect(torn).toBe(2);
  });

  it('logs a failing teardown and still throws the create\'s own error', async () => {
    const logged: object[] = [];
    const err = await createOrTeardown('t9', async () => { throw new PrismError('INVALID_ARGUMENT', 'bad spec'); },
      async () => { throw new Error('umount failed'); }, { error: (o) => void logged.push(o) }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'INVALID_ARGUMENT', message: 'bad spec' });
    expect(logged).toEqual([expect.objectContaining({ task: 't9' })]);
  });
});
