import { describe, expect, it } from 'vitest';
import { eventLine } from './event-commands.js';

describe('prismctl events lines', () => {
  it('names the sandbox, its node and the reason; a node event names the node', () => {
    const time = '2026-12-07T02:00:00.000Z';
    expect(eventLine({ type: 'lost', sandboxId: 'sb-1', name: 'web', node: 'node-2', revision: 5, time, error: { code: 'NODE_LOST', message: 'gone' } }))
      .toBe(`${time}  lost      web (sb-1) on node-2  NODE_LOST: gone`);
    expect(eventLine({ type: 'node-dead', node: 'node-2', nodeName: 'beta', revision: 4, time })).toBe(`${time}  node-dead node beta (node-2)`);
    expect(eventLine({ type: 'node-dead', node: 'node-2', revision: 4, time })).toBe(`${time}  node-dead node node-2`);
  });
});
