import { mkdtempSync, readdirSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { TaskHandle, TaskSpec } from '../runtime/driver.js';
import { SqliteStore } from '../store/sqlite/sqlite-store.js';
import { SandboxRepo } from './sandbox-repo.js';
import { FileTaskHandles, StoreTaskHandles, moveTaskHandles } from './task-handles.js';

const handle = (id: string, extra: Record<string, unknown> = {}): TaskHandle => ({ id, runtime: 'oci', spec: { id } as TaskSpec, data: { taskDir: `/x/${id}`, ...extra } });

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'prism-handles-test-'));
  dirs.push(d);
  return d;
}

describe('FileTaskHandles', () => {
  it('saves, reads, lists and removes handles, one file each, none left half-written', async () => {
    const dir = join(tempDir(), 'handles');
    const files = new FileTaskHandles(dir);
    expect(await files.list()).toEqual([]);
    expect(await files.get('sb-aaaaaaaaaaaa')).toBeUndefined();
    await files.put(handle('sb-aaaaaaaaaaaa'));
    await files.put(handle('sb-bbbbbbbbbbbb'));
    await files.put(handle('sb-aaaaaaaaaaaa', { again: true }));
    expect(await files.get('sb-aaaaaaaaaaaa')).toEqual(handle('sb-aaaaaaaaaaaa', { again: true }));
    expect((await files.list()).map((h) => h.id)).toEqual(['sb-aaaaaaaaaaaa', 'sb-bbbbbbbbbbbb']);
    expect(readdirSync(dir).sort()).toEqual(['sb-aaaaaaaaaaaa.json', 'sb-bbbbbbbbbbbb.json']);
    await files.delete('sb-aaaaaaaaaaaa');
    await files.delete('sb-aaaaaaaaaaaa');
    expect((await files.list()).map((h) => h.id)).toEqual(['sb-bbbbbbbbbbbb']);
  });

  it('skips what is not a handle of its name, and removes the temporary files of a write a crash cut short', async () => {
    const dir = tempDir();
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'sb-cccccccccccc.json'), '{"id":"sb-cccc');
    writeFileSync(join(dir, 'sb-dddddddddddd.json'), JSON.stringify(handle('sb-eeeeeeeeeeee')));
    writeFileSync(join(dir, '.sb-ffffffffffff.1234.tmp'), '{}');
    writeFileSync(join(dir, 'notes.txt'), 'x');
    const errors: unknown[] = [];
    const log = { error: (o: unknown) => errors.push(o), warn: () => undefined, info: () => undefined, debug: () => undefined } as never;
    const files = new FileTaskHandles(dir, log);
    await files.put(handle('sb-gggggggggggg'));
    expect((await files.list()).map((h) => h.id)).toEqual(['sb-gggggggggggg']);
    expect(errors).toHaveLength(2);
    expect(await files.get('sb-cccccccccccc')).toBeUndefined();
    expect(readdirSync(dir).filter((n) => n.endsWith('.tmp'))).toEqual([]);
  });

  it('refuses ids that are not plain file names', async () => {
    const files = new FileTaskHandles(tempDir());
    for (const id of ['../escape', 'a/b', '.hidden', '']) {
      await expect(files.put(handle(id))).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
      await expect(files.get(id)).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    }
  });
});

describe('moveTaskHandles', () => {
  it('moves every handle a node kept in the Store into its files, and only that node\'s', async () => {
    const store = SqliteStore.open(':memory:');
    try {
      const repo = new SandboxRepo(store);
      const mine = new StoreTaskHandles(repo, 'node-a');
      await mine.put(handle('sb-111111111111'));
      await mine.put(handle('sb-222222222222'));
      await new StoreTaskHandles(repo, 'node-b').put(handle('sb-333333333333'));
      const files = new FileTaskHandles(join(tempDir(), 'handles'));
      expect(await moveTaskHandles(mine, files)).toBe(2);
      expect(await mine.list()).toEqual([]);
      expect((await files.list()).map((h) => h.id)).toEqual(['sb-111111111111', 'sb-222222222222']);
      expect((await repo.listHandles('node-b')).map((h) => h.id)).toEqual(['sb-333333333333']);
      expect(await moveTaskHandles(mine, files)).toBe(0);
    } finally {
      store.close();
    }
  });
});
