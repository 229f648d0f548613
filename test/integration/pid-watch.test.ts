/**
 * PidWatcher (src/runtime/pid-watch.ts) with the real `prism-init pidwatch` helper: process exits as
 * events through pidfds, and what happens when the helper itself goes.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { PidWatcher, type WatchEnd } from '../../src/runtime/pid-watch.js';
import { REPO_ROOT } from './prismd-harness.js';

const init = join(REPO_ROOT, 'guest/init/prism-init');
const skip = existsSync(init) ? undefined : 'guest/init not built (npm run build)';

const until = async (what: string, ok: () => boolean) => {
  for (const deadline = Date.now() + 10_000; !ok(); ) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
};

describe.skipIf(skip !== undefined)('PidWatcher', () => {
  const watchers: PidWatcher[] = [];
  const children: Array<ReturnType<typeof spawn>> = [];
  afterEach(() => {
    for (const w of watchers.splice(0)) w.close();
    for (const c of children.splice(0)) c.kill('SIGKILL');
  });
  const sleeper = () => {
    const c = spawn('sleep', ['60'], { stdio: 'ignore' });
    children.push(c);
    return c;
  };

  it('reports an exit once, an already-gone process at once, and nothing for an unwatched one', async () => {
    const w = new PidWatcher(init);
    watchers.push(w);
    const ends: Array<[string, WatchEnd]> = [];
    const a = sleeper();
    const b = sleeper();
    expect(w.watch('a', a.pid!, (why) => ends.push(['a', why]))).toBe(true);
    expect(w.watch('b', b.pid!, (why) => ends.push(['b', why]))).toBe(true);
    expect(w.watch('gone', 2 ** 22 + 1, (why) => ends.push(['gone', why]))).toBe(true); // above pid_max
    await until('the gone one', () => ends.length === 1);
    expect(ends).toEqual([['gone', 'exited']]);
    w.unwatch('b');
    b.kill('SIGKILL');
    a.kill('SIGKILL');
    await until('a', () => ends.length === 2);
    await new Promise((r) => setTimeout(r, 100));
    expect(ends).toEqual([['gone', 'exited'], ['a', 'exited']]);
    expect(w.watched()).toEqual([]);
  });

  it('refuses keys and pids it cannot pass on', () => {
    const w = new PidWatcher(init);
    watchers.push(w);
    expect(w.watch('has space', 100, () => undefined)).toBe(false);
    expect(w.watch('ok', 1, () => undefined)).toBe(false);
    expect(w.watched()).toEqual([]);
  });

  it('ends every watch as lost when the helper dies, and watches again through a new one', async () => {
    const w = new PidWatcher(init);
    watchers.push(w);
    const ends: WatchEnd[] = [];
    const a = sleeper();
    w.watch('a', a.pid!, (why) => ends.push(why));
    const helper = (w as unknown as { helper: { pid: number } }).helper;
    process.kill(helper.pid, 'SIGKILL');
    await until('lost', () => ends.length === 1);
    expect(ends).toEqual(['lost']);
    w.watch('a', a.pid!, (why) => ends.push(why));
    a.kill('SIGKILL');
    await until('exited', () => ends.length === 2);
    expect(ends).toEqual(['lost', 'exited']);
  });
});
