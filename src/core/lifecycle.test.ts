import { describe, expect, it } from 'vitest';
import { SANDBOX_STATUSES, TRANSITIONS, canTransition } from './lifecycle.js';

describe('the lifecycle table', () => {
  it('names every status, only known statuses, and lets every status be deleted', () => {
    expect(Object.keys(TRANSITIONS).sort()).toEqual([...SANDBOX_STATUSES].sort());
    for (const [from, tos] of Object.entries(TRANSITIONS)) {
      for (const to of tos) expect(SANDBOX_STATUSES).toContain(to);
      expect(canTransition(from as never, 'deleting'), from).toBe(true);
    }
  });

  it('reaches running from pending, and paused only through running', () => {
    const reach = (start: string) => {
      const seen = new Set([start]);
      for (let frontier = [start]; frontier.length; ) frontier = frontier.flatMap((s) => TRANSITIONS[s as never]).filter((s) => !seen.has(s) && seen.add(s));
      return seen;
    };
    expect(reach('pending')).toContain('running');
    expect(SANDBOX_STATUSES.filter((s) => TRANSITIONS[s].includes('pausing'))).toEqual(['running']);
    expect(canTransition('stopped', 'running')).toBe(false); // a start goes through starting
    expect(canTransition('failed', 'running')).toBe(false);
  });
});
