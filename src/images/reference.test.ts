import { describe, expect, it } from 'vitest';
import { formatReference, normalizeReference, parseReference } from './reference.js';

const DIGEST = `sha256:${'0123456789abcdef'.repeat(4)}`;

describe('image references', () => {
  it.each([
    ['alpine', 'alpine:latest'],
    ['alpine:3.20', 'alpine:3.20'],
    ['Python:3.12-Slim', 'python:3.12-Slim'],
    ['prism.local/base:bookworm', 'prism.local/base:bookworm'],
    ['localhost:5000/team/app', 'localhost:5000/team/app:latest'],
    ['Registry.Example.com:443/a/b_c/d-e:v1', 'registry.example.com:443/a/b_c/d-e:v1'],
    [`alpine@${DIGEST}`, `alpine@${DIGEST}`],
    [`alpine:3.20@${DIGEST}`, `alpine@${DIGEST}`],
    ['a__b/c.d/e--f:_x', 'a__b/c.d/e--f:_x'],
  ])('normalises %s to %s', (input, want) => {
    expect(normalizeReference(input)).toBe(want);
  });

  it('parses into name, tag and digest', () => {
    expect(parseReference('localhost:5000/app')).toEqual({ name: 'localhost:5000/app', tag: 'latest' });
    expect(parseReference(`app@${DIGEST}`)).toEqual({ name: 'app', digest: DIGEST });
    expect(formatReference({ name: 'app' })).toBe('app:latest');
  });

  it.each([
    ['', 'empty'],
    [' alpine', 'spaces'],
    ['alpine:', 'tag'],
    ['alpine:.bad', 'tag'],
    [`alpine:${'x'.repeat(129)}`, 'tag'],
    ['alpine@sha256:abc', 'digest'],
    [`alpine@sha512:${'a'.repeat(128)}`, 'digest'],
    ['-alpine', 'name component'],
    ['a//b', 'name component'],
    ['a/b/', 'name component'],
    ['a..b', 'name component'],
    ['ex_ample.com/app', 'registry host'],
    [`${'a'.repeat(256)}`, 'longer than 255'],
    ['a b', 'name component'],
  ])('rejects %j with a reason', (input, why) => {
    expect(() => parseReference(input)).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT', message: expect.stringContaining(why) }));
  });
});
