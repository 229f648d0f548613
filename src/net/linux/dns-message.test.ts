import { describe, expect, it } from 'vitest';
import { answerA, buildQuery, errorResponse, parseAnswers, parseQuery } from './dns-message.js';

describe('DNS messages', () => {
  it('reads the question and the A answers with the smallest TTL', () => {
    const q = buildQuery(0x1234, 'Allowed.Test');
    const parsed = parseQuery(q)!;
    expect(parsed).toMatchObject({ id: 0x1234, name: 'allowed.test', type: 1 });
    const a = answerA(q, parsed, [0xc6336402, 0xc6336403], 42);
    expect(parseQuery(a)).toBeUndefined(); // a response is not a query
    expect(parseAnswers(a)).toEqual({ ips: [0xc6336402, 0xc6336403], ttl: 42 });
  });

  it('refuses with the question echoed and no answers', () => {
    const q = buildQuery(7, 'other.test');
    const r = errorResponse(q, parseQuery(q)!, 5);
    expect(r.readUInt16BE(0)).toBe(7);
    expect(r.readUInt16BE(2) & 0x800f).toBe(0x8005);
    expect(parseAnswers(r)).toEqual({ ips: [], ttl: 0 });
  });

  it('survives garbage and compression loops', () => {
    expect(parseQuery(Buffer.alloc(5))).toBeUndefined();
    const loop = Buffer.from([0, 1, 0x01, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1]);
    expect(parseQuery(loop)).toBeUndefined();
    const truncated = answerA(buildQuery(1, 'a.b'), parseQuery(buildQuery(1, 'a.b'))!, [1], 1).subarray(0, 30);
    expect(parseAnswers(truncated)).toBeUndefined();
  });
});
