import { describe, expect, it } from 'vitest';
import { networkFromFlags } from './sandbox-commands.js';

describe('prismctl sandbox create --network/--allow/--deny', () => {
  it('maps flags onto the API network field', () => {
    expect(networkFromFlags({})).toBeUndefined();
    expect(networkFromFlags({ network: 'all' })).toEqual({ egress: 'all' });
    expect(networkFromFlags({ allow: ['pypi.org', '1.2.3.0/24'], deny: ['1.2.3.4'] })).toEqual({ egress: { allow: ['pypi.org', '1.2.3.0/24'], deny: ['1.2.3.4'] } });
    expect(networkFromFlags({ network: 'list' })).toEqual({ egress: { allow: [], deny: [] } });
    expect(() => networkFromFlags({ network: 'all', allow: ['x.org'] })).toThrow(/do not go with --network all/);
  });
});
