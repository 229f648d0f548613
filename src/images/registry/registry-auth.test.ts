import { describe, expect, it } from 'vitest';
import { basicAuthorization, parseChallenges, parseTokenResponse, pullScope, TokenCache } from './registry-auth.js';

describe('registry authentication', () => {
  it('parses bearer challenges with quoted, comma-containing parameters', () => {
    const header = 'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/python:pull,push"';
    expect(parseChallenges(header)).toEqual([
      { scheme: 'bearer', params: { realm: 'https://auth.docker.io/token', service: 'registry.docker.io', scope: 'repository:library/python:pull,push' } },
    ]);
  });

  it('parses several challenges, unquoted values and escapes', () => {
    expect(parseChallenges('Basic realm="a \\"b\\"", Bearer realm=https://x/token, error=insufficient_scope')).toEqual([
      { scheme: 'basic', params: { realm: 'a "b"' } },
      { scheme: 'bearer', params: { realm: 'https://x/token', error: 'insufficient_scope' } },
    ]);
    expect(parseChallenges('')).toEqual([]);
  });

  it('reads token or access_token, defaulting expiry to 60 s', () => {
    expect(parseTokenResponse({ token: 't', expires_in: 300 }, 'h')).toEqual({ token: 't', expiresIn: 300 });
    expect(parseTokenResponse({ access_token: 'a' }, 'h')).toEqual({ token: 'a', expiresIn: 60 });
    expect(() => parseTokenResponse({}, 'h')).toThrow(expect.objectContaining({ code: 'UNAVAILABLE' }));
  });

  it('caches tokens per host and scope until shortly before they expire', () => {
    const cache = new TokenCache();
    cache.set('h', pullScope('a/b'), { token: 't', expiresIn: 60 }, 0);
    expect(cache.get('h', 'repository:a/b:pull', 49_000)).toBe('t');
    expect(cache.get('h', 'repository:a/c:pull', 1000)).toBeUndefined();
    expect(cache.get('other', 'repository:a/b:pull', 1000)).toBeUndefined();
    expect(cache.get('h', 'repository:a/b:pull', 55_000)).toBeUndefined();
  });

  it('encodes basic credentials', () => {
    expect(basicAuthorization({ username: 'u', password: 'p:w' })).toBe(`Basic ${Buffer.from('u:p:w').toString('base64')}`);
  });
});
