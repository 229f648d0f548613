import { describe, expect, it } from 'vitest';
import type { Sandbox } from '../core/types.js';
import type { RuntimeDriver, TaskHandle } from '../runtime/driver.js';
import type { WatchEnd } from '../runtime/pid-watch.js';
import { silentLogger } from './logger.js';
import { TaskWatchdog, type WatchedTasks } from './task-watchdog.js';

const NODE = 'n1';
const sb = (id: string, status: Sandbox['status'] = 'running', node = NODE) => ({ id, status, node }) as Sandbox;
const handle = (id: string): TaskHandle => ({ id, runtime: 'oci', spec: { id } as TaskHandle['spec'], data: {} });

/** A driver whose tasks are alive unless listed dead; watchable or not. */
function fakeDriver(opts: { watch: boolean | 'unwatchable' }) {
  const dead = new Set<string>();
  const watches = new Map<string, (why: WatchEnd) => void>();
  const calls = { seemsAlive: 0, unwatch: [] as string[] };
  const driver = {
    seemsAlive: async (h: TaskHandle) => (calls.seemsAlive++, !dead.has(h.id)),
    ...(opts.watch
      ? {
          watchExit: async (h: TaskHandle, onEnd: (why: WatchEnd) => void) => {
            if (opts.watch === 'unwatchable') return false;
            watches.set(h.id, onEnd);
            return true;
          },
          unwatchExit: (h: TaskHandle) => (watches.delete(h.id), calls.unwatch.push(h.id)),
        }
      : {}),
  } as unknown as RuntimeDriver;
  const kill = (id: string) => {
    dead.add(id);
    const fn = watches.get(id);
    watches.delete(id);
    fn?.('exited');
  };
  return { driver, dead, watches, calls, kill };
}

function setup(records: Sandbox[], d: ReturnType<typeof fakeDriver>) {
  const listeners = new Set<(id: string, s: Sandbox | undefined) => void>();
  const checked: string[] = [];
  let lists = 0;
  const tasks: WatchedTasks = {
    nodeId: NODE,
    handleOf: async (id) => handle(id),
    driverOf: () => d.driver,
    checkTask: async (id) => (checked.push(id), !d.dead.has(id)),
  };
  const feed = { listSandboxes: async () => (lists++, records), onChange: (fn: (id: string, s: Sandbox | undefined) => void) => (listeners.add(fn), () => listeners.delete(fn)) };
  const change = (id: string, s: Sandbox | undefined) => listeners.forEach((fn) => fn(id, s));
  const w = new TaskWatchdog(feed, tasks, silentLogger, { intervalMs: 3_600_000, sweepEvery: 3 });
  const round = () => (w as unknown as { tick(): Promise<void> }).tick();
  return { w, checked, change, round, lists: () => lists };
}

describe('TaskWatchdog', () => {
  it('watches running tasks of this node and checks one only when its watch ends', async () => {
    const d = fakeDriver({ watch: true });
    const s = setup([sb('a'), sb('b'), sb('c', 'stopped'), sb('x', 'running', 'other')], d);
    await s.w.start();
    expect(s.w.watching().sort()).toEqual(['a', 'b']);
    const polled = d.calls.seemsAlive;
    await s.round(); // a round is free for watched tasks
    expect(d.calls.seemsAlive).toBe(polled);
    expect(s.checked).toEqual([]);
    d.kill('a');
    await new Promise((r) => setImmediate(r));
    expect(s.checked).toEqual(['a']);
    expect(s.w.watching()).toEqual(['b']);
    s.w.stop();
    expect(d.watches.size).toBe(0);
  });

  it('stops watching a task whose record leaves running, and watches one as soon as it becomes running', async () => {
    const d = fakeDriver({ watch: true });
    const s = setup([sb('a')], d);
    await s.w.start();
    s.change('a', sb('a', 'stopping'));
    expect(d.calls.unwatch).toEqual(['a']);
    d.kill('a'); // the stop's own exit: no check
    await new Promise((r) => setImmediate(r));
    expect(s.checked).toEqual([]);
    s.change('n', sb('n'));
    await new Promise((r) => setImmediate(r)); // watched at once, not at the next round
    expect(s.w.watching()).toEqual(['n']);
    s.w.stop();
  });

  it('polls tasks of drivers that cannot watch, each round', async () => {
    for (const watch of [false, 'unwatchable'] as const) {
      const d = fakeDriver({ watch });
      const s = setup([sb('a'), sb('b')], d);
      await s.w.start();
      expect(s.w.watching()).toEqual([]);
      d.dead.add('b');
      await s.round();
      expect(s.checked).toEqual(['b']);
      await s.round();
      expect(s.checked).toEqual(['b', 'b']); // every round
      s.w.stop();
    }
  });

  it('re-lists and checks watched tasks too every sweepEvery rounds (a missed event)', async () => {
    const d = fakeDriver({ watch: true });
    const s = setup([sb('a')], d);
    await s.w.start(); // round 1
    d.dead.add('a'); // died without its watch firing
    await s.round(); // round 2: nothing
    expect(s.checked).toEqual([]);
    await s.round(); // round 3: sweep
    expect(s.checked).toEqual(['a']);
    expect(s.lists()).toBe(2);
    s.w.stop();
  });
});
