import { describe, expect, it } from 'vitest';
import { volumesFromFlags } from './volume-commands.js';

describe('prismctl sandbox create --volume', () => {
  it('maps NAME:/path[:ro|:rw] onto the API volumes field', () => {
    expect(volumesFromFlags(undefined)).toBeUndefined();
    expect(volumesFromFlags(['data:/data', 'ref:/srv/ref:ro', 'w:/w:rw'])).toEqual([
      { name: 'data', mountPath: '/data' },
      { name: 'ref', mountPath: '/srv/ref', readOnly: true },
      { name: 'w', mountPath: '/w' },
    ]);
  });
  it.each(['data', 'data:rel', 'data:/x:rx', ':/x', 'a:/b:ro:extra'])('refuses %s', (f) => {
    expect(() => volumesFromFlags([f])).toThrow(/NAME:\/path/);
  });
});
