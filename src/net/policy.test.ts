import { describe, expect, it } from 'vitest';
import { domainAllowed, formatCidr, needsNetwork, parseCidr, resolvePolicy } from './policy.js';

describe('egress policy parsing', () => {
  it('splits CIDRs and domain names and refuses what is neither', () => {
    const p = resolvePolicy({ allow: ['1.2.3.4', '10.0.0.0/8', 'Example.COM.', '*.pypi.org'], deny: ['10.1.0.0/16'] });
    expect(p.mode).toBe('list');
    expect(p.allowCidrs.map(formatCidr)).toEqual(['1.2.3.4/32', '10.0.0.0/8']);
    expect(p.allowDomains).toEqual(['example.com', '*.pypi.org']);
    expect(p.denyCidrs.map(formatCidr)).toEqual(['10.1.0.0/16']);
    for (const bad of ['10.0.0.1/8', '300.1.1.1', '1.2.3.4/33', '::1', 'exa mple.com', '-bad.com', '']) {
      expect(() => resolvePolicy({ allow: [bad], deny: [] }), bad).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
    }
    expect(() => resolvePolicy({ allow: [], deny: ['example.com'] })).toThrow(/deny takes addresses only/);
    expect(() => resolvePolicy({ allow: Array(257).fill('1.1.1.1'), deny: [] })).toThrow(/at most 256/);
  });

  it('matches names exactly, or subdomains for *. patterns', () => {
    expect(domainAllowed('example.com', ['example.com'])).toBe(true);
    expect(domainAllowed('EXAMPLE.com.', ['example.com'])).toBe(true);
    expect(domainAllowed('evil-example.com', ['example.com'])).toBe(false);
    expect(domainAllowed('a.example.com', ['example.com'])).toBe(false);
    expect(domainAllowed('a.b.pypi.org', ['*.pypi.org'])).toBe(true);
    expect(domainAllowed('pypi.org', ['*.pypi.org'])).toBe(false);
    expect(domainAllowed('evilpypi.org', ['*.pypi.org'])).toBe(false);
  });

  it('parses CIDRs strictly', () => {
    expect(parseCidr('0.0.0.0/0')).toEqual({ addr: 0, prefix: 0 });
    expect(parseCidr('1.2.3.4/24')).toBeUndefined();
    expect(parseCidr('1.2.3.4/1/2')).toBeUndefined();
  });

  it('only egress beyond none or exposed ports need a network', () => {
    expect(needsNetwork('none', [])).toBe(false);
    expect(needsNetwork(undefined, undefined)).toBe(false);
    expect(needsNetwork('none', [80])).toBe(true);
    expect(needsNetwork({ allow: [], deny: [] }, [])).toBe(true);
  });
});
