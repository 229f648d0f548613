import { describe, expect, it } from 'vitest';
import { randomString } from './random-pool.js';

describe('randomString', () => {
  it('hands out fresh bytes of the asked length across pool refills, never the same twice', () => {
    const seen = new Set<string>();
    // 24-byte secrets: ~170 per 4 KiB pool, so this crosses many refills.
    for (let i = 0; i < 2000; i++) {
      const s = randomString(24, 'base64url');
      expect(s).toMatch(/^[A-Za-z0-9_-]{32}$/);
      seen.add(s);
    }
    expect(seen.size).toBe(2000);
    expect(randomString(6, 'hex')).toMatch(/^[0-9a-f]{12}$/);
    expect(randomString(4096, 'hex')).toHaveLength(8192);
  });
});
