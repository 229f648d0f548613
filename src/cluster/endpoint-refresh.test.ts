import { afterEach, describe, expect, it, vi } from 'vitest';
import { silentLogger } from '../service/logger.js';
import { EndpointRefresh } from './endpoint-refresh.js';
import type { EtcdMemberInfo } from './members.js';

const member = (name: string, learner = false): EtcdMemberInfo => ({
  id: name, name, peerUrls: [`http://${name}:2380`], clientUrls: learner && name === 'new' ? [] : [`http://${name}:2379`], learner,
});

describe('EndpointRefresh', () => {
  afterEach(() => vi.useRealTimers());

  it("saves the voting members' client URLs, not learners'", async () => {
    const saved: string[][] = [];
    const r = new EndpointRefresh(async () => [member('c'), member('a'), member('b', true), member('new', true)], (e) => saved.push(e), silentLogger);
    await r.now();
    expect(saved).toEqual([['http://a:2379', 'http://c:2379']]);
  });

  it('keeps what it had when the members cannot be listed, and never throws', async () => {
    const saved: string[][] = [];
    const r = new EndpointRefresh(() => Promise.reject(new Error('no quorum')), (e) => saved.push(e), silentLogger);
    await expect(r.now()).resolves.toBeUndefined();
    const empty = new EndpointRefresh(async () => [], (e) => saved.push(e), silentLogger);
    await empty.now();
    expect(saved).toEqual([]);
  });

  it('runs one refresh after another, so a change made during one is seen by the next', async () => {
    let members = [member('a')];
    let release!: () => void;
    const first = new Promise<void>((r) => (release = r));
    let calls = 0;
    const saved: string[][] = [];
    const r = new EndpointRefresh(async () => {
      const now = members;
      if (calls++ === 0) await first;
      return now;
    }, (e) => saved.push(e), silentLogger);
    const one = r.now();
    members = [member('a'), member('b')];
    const two = r.now();
    release();
    await Promise.all([one, two]);
    expect(saved.at(-1)).toEqual(['http://a:2379', 'http://b:2379']);
  });

  it('refreshes every interval until stopped', async () => {
    vi.useFakeTimers();
    const list = vi.fn(async () => [member('a')]);
    const r = new EndpointRefresh(list, () => undefined, silentLogger, 1000);
    r.start();
    await vi.advanceTimersByTimeAsync(3500);
    expect(list).toHaveBeenCalledTimes(3);
    await r.stop();
    await vi.advanceTimersByTimeAsync(5000);
    expect(list).toHaveBeenCalledTimes(3);
  });
});
