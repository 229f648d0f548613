import { describe, expect, it } from 'vitest';
import { formatReference, normalizeName, normalizeReference, parseReference, registryDomain, registryHost, repositoryPath } from './reference.js';

const DIGEST = `sha256:${'0123456789abcdef'.repeat(4)}`;

describe('image references', () => {
  it.each([
    ['alpine', 'docker.io/library/alpine:latest'],
    ['alpine:3.20', 'docker.io/library/alpine:3.20'],
    ['python:3.12', 'docker.io/library/python:3.12'],
    ['Python:3.12-Slim', 'docker.io/library/python:3.12-Slim'],
    ['user/app', 'docker.io/user/app:latest'],
    ['docker.io/python', 'docker.io/library/python:latest'],
    ['index.docker.io/library/python:3', 'docker.io/library/python:3'],
    ['docker.io/library/python:3.12', 'docker.io/library/python:3.12'],
    ['prism.local/base:bookworm', 'prism.local/base:bookworm'],
    ['localhost/app', 'localhost/app:latest'],
    ['localhost:5000/team/app', 'localhost:5000/team/app:latest'],
    ['127.0.0.1:5000/app:v1', '127.0.0.1:5000/app:v1'],
    ['[::1]:5000/app', '[::1]:5000/app:latest'],
    ['Registry.Example.com:443/a/b_c/d-e:v1', 'registry.example.com:443/a/b_c/d-e:v1'],
    [`alpine@${DIGEST}`, `docker.io/library/alpine@${DIGEST}`],
    [`alpine:3.20@${DIGEST}`, `docker.io/library/alpine@${DIGEST}`],
    [`localhost:5000/app:1@${DIGEST}`, `localhost:5000/app@${DIGEST}`],
    ['a__b/c.d/e--f:_x', 'docker.io/a__b/c.d/e--f:_x'],
  ])('normalises %s to %s', (input, want) => {
    expect(normalizeReference(input)).toBe(want);
    expect(normalizeReference(want)).toBe(want);
  });

  it('parses into name, tag and digest', () => {
    expect(parseReference('localhost:5000/app')).toEqual({ name: 'localhost:5000/app', tag: 'latest' });
    expect(parseReference(`app@${DIGEST}`)).toEqual({ name: 'docker.io/library/app', digest: DIGEST });
    expect(formatReference({ name: 'app' })).toBe('app:latest');
    expect(normalizeName('Python')).toBe('docker.io/library/python');
  });

  it.each([
    ['python:3.12', 'docker.io', 'registry-1.docker.io', 'library/python'],
    ['user/app', 'docker.io', 'registry-1.docker.io', 'user/app'],
    ['prism.local/base:bookworm', 'prism.local', 'prism.local', 'base'],
    ['127.0.0.1:5000/team/app', '127.0.0.1:5000', '127.0.0.1:5000', 'team/app'],
  ])('finds the registry and repository of %s', (input, domain, host, repo) => {
    expect(registryDomain(input)).toBe(domain);
    expect(registryHost(input)).toBe(host);
    expect(registryHost(parseReference(input))).toBe(host);
    expect(repositoryPath(input)).toBe(repo);
    expect(repositoryPath(parseReference(input))).toBe(repo);
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
    ['localhost:5000/', 'name component'],
  ])('rejects %j with a reason', (input, why) => {
    expect(() => parseReference(input)).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT', message: expect.stringContaining(why) }));
  });
});
