import { describe, expect, it } from 'vitest';
import { parseCidr, resolvePolicy } from '../policy.js';
import { allowResolved, baseRuleset, egressRules, parseTableObjects, sandboxRuleset, sandboxTeardown, type SandboxRuleInput } from './nft-rules.js';

const input = (egress: Parameters<typeof resolvePolicy>[0], dns = false): SandboxRuleInput => ({
  table: 'prism_t', key: 'abcdef012345', hostIf: 'pvabcdef012345', address: '10.203.0.2', gateway: '10.203.0.1', policy: resolvePolicy(egress), dns,
});
const verdicts = (lines: string[]) => lines.map((l) => l.replace(/^add rule inet prism_t o_abcdef012345 /, ''));

describe('nft rule generation', () => {
  it('never lets a sandbox reach loopback, link-local (metadata), multicast or the sandbox pool', () => {
    const base = baseRuleset('prism_t', parseCidr('10.203.0.0/16')!);
    expect(base).toContain('add element inet prism_t never { 0.0.0.0/8, 127.0.0.0/8, 169.254.0.0/16, 224.0.0.0/4, 240.0.0.0/4, 10.203.0.0/16 }');
    expect(base).toContain('add rule inet prism_t forward iifname vmap @from_sb');
    expect(base).toContain('add rule inet prism_t input iifname vmap @in_sb');
    expect(base).toContain('add rule inet prism_t forward oifname @ifs drop');
    expect(base).toContain('ip saddr 10.203.0.0/16 ip daddr != 10.203.0.0/16 masquerade');
    // Base rules are flushed before they are added, so applying the base again does not duplicate them.
    expect(base.indexOf('flush chain inet prism_t forward')).toBeLessThan(base.indexOf('add rule inet prism_t forward'));
  });

  it('none drops everything after the fixed checks', () => {
    expect(verdicts(egressRules(input('none')))).toEqual([
      'meta nfproto ipv6 drop', 'ip saddr != 10.203.0.2 drop', 'ct status dnat drop', 'ip daddr @never drop', 'drop',
    ]);
  });

  it('all accepts anything but the never set and private ranges', () => {
    expect(verdicts(egressRules(input('all'))).slice(-3)).toEqual(['ip daddr @never drop', 'ip daddr @private drop', 'accept']);
  });

  it('a list: never, then deny, then explicit CIDRs, then (not private) resolved names, then drop', () => {
    expect(verdicts(egressRules(input({ allow: ['1.2.3.0/24', 'example.com'], deny: ['1.2.3.4'] }))).slice(3)).toEqual([
      'ip daddr @never drop',
      'ip daddr @deny_abcdef012345 drop',
      'ip daddr @allowc_abcdef012345 accept',
      'ip daddr @private drop',
      'ip daddr @allowd_abcdef012345 accept',
      'drop',
    ]);
    const rs = sandboxRuleset(input({ allow: ['1.2.3.0/24', '10.1.0.0/16', 'example.com'], deny: ['1.2.3.4'] }, true));
    expect(rs).toContain('add element inet prism_t allowc_abcdef012345 { 1.2.3.0/24, 10.1.0.0/16 }');
    expect(rs).toContain('add element inet prism_t deny_abcdef012345 { 1.2.3.4/32 }');
    expect(rs).toContain('add rule inet prism_t i_abcdef012345 ip daddr 10.203.0.1 udp dport 53 accept');
    expect(rs).toContain('add element inet prism_t from_sb { "pvabcdef012345" : jump o_abcdef012345 }');
    expect(rs.indexOf('add rule inet prism_t i_abcdef012345 drop')).toBeGreaterThan(rs.indexOf('udp dport 53'));
  });

  it('the host input chain accepts only replies (and DNS to the gateway when enabled)', () => {
    const rs = sandboxRuleset(input('all', false));
    expect(rs).not.toContain('dport 53');
    expect(rs).toContain('add rule inet prism_t i_abcdef012345 ct state established,related accept');
  });

  it('teardown deletes only what the table holds', () => {
    const json = JSON.stringify({ nftables: [
      { table: { name: 'prism_t' } },
      { map: { name: 'from_sb', elem: [['pvabcdef012345', { jump: { target: 'o_abcdef012345' } }]] } },
      { map: { name: 'in_sb' } },
      { set: { name: 'ifs', elem: ['pvabcdef012345'] } },
      { set: { name: 'allowd_abcdef012345', elem: [{ elem: { val: '1.2.3.4', timeout: 60 } }] } },
      { chain: { name: 'o_abcdef012345' } },
    ] });
    const batch = sandboxTeardown('prism_t', 'abcdef012345', 'pvabcdef012345', parseTableObjects(json));
    expect(batch.trim().split('\n')).toEqual([
      'delete element inet prism_t from_sb { "pvabcdef012345" }',
      'delete element inet prism_t ifs { "pvabcdef012345" }',
      'flush chain inet prism_t o_abcdef012345',
      'delete chain inet prism_t o_abcdef012345',
      'delete set inet prism_t allowd_abcdef012345',
    ]);
    expect(sandboxTeardown('prism_t', 'abcdef012345', 'pvabcdef012345', parseTableObjects('{"nftables":[]}'))).toBe('');
  });

  it('renews the timeout of resolved addresses', () => {
    expect(allowResolved('prism_t', 'k', [0x01020304], 60)).toBe(
      'add element inet prism_t allowd_k { 1.2.3.4 }\ndelete element inet prism_t allowd_k { 1.2.3.4 }\nadd element inet prism_t allowd_k { 1.2.3.4 timeout 60s }\n',
    );
  });
});
