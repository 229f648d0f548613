import { EventEmitter } from 'node:events';
import type { ServerResponse } from 'node:http';
import { describe, expect, it } from 'vitest';
import { PrismError } from '../core/errors.js';
import { drained, errorEvent } from './ndjson.js';

// End to end (a reader that stops reading holds the command back) in test/security/hostile-cases.ts.
describe('NDJSON streams', () => {
  it('end a failed stream with the error\'s stable code; INTERNAL for anything else', () => {
    expect(errorEvent(new PrismError('UNAVAILABLE', 'node gone'))).toEqual({ type: 'error', error: { code: 'UNAVAILABLE', message: 'node gone' } });
    expect(errorEvent(new Error('boom'))).toEqual({ type: 'error', error: { code: 'INTERNAL', message: 'boom' } });
  });

  it.each(['drain', 'close'])('drained: done at %s, and leaves no listener behind', async (event) => {
    const res = new EventEmitter();
    let done = false;
    const waiting = drained(res as unknown as ServerResponse).then(() => (done = true));
    await new Promise((r) => setImmediate(r));
    expect(done).toBe(false);
    res.emit(event);
    await waiting;
    expect(res.listenerCount('drain') + res.listenerCount('close')).toBe(0);
  });
});
