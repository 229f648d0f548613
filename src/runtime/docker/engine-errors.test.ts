import { describe, expect, it } from 'vitest';
import { pullError } from './engine-errors.js';

/** A rejection as dockerode makes it for a streaming call (no JSON body; the engine's words in the message). */
const rejected = (statusCode: number, words: string) =>
  Object.assign(new Error(`(HTTP code ${statusCode}) ${statusCode === 404 ? 'unexpected' : 'server error'} - ${words} `), { statusCode, json: null });

describe('pullError', () => {
  // What dockerd 20.10 answered here, for pulls from the test registries and an unreachable Docker Hub.
  it.each([
    [404, 'manifest for 127.0.0.1:5000/prism-test/nosuch:1 not found: manifest unknown: manifest unknown', 'NOT_FOUND'],
    [404, "pull access denied for private/app, repository does not exist or may require 'docker login': denied: requested access to the resource is denied", 'NOT_FOUND'],
    [500, 'Head "http://127.0.0.1:5001/v2/prism-test/layers/manifests/1": no basic auth credentials', 'UNAUTHENTICATED'],
    [500, 'Head "https://registry.example/v2/app/manifests/1": unauthorized: authentication required', 'UNAUTHENTICATED'],
    [500, 'Get "http://127.0.0.1:5999/v2/": dial tcp 127.0.0.1:5999: connect: connection refused', 'UNAVAILABLE'],
    [500, 'Get "https://registry-1.docker.io/v2/": dial tcp: lookup registry-1.docker.io on 10.255.255.53:53: no such host', 'UNAVAILABLE'],
    // A repository whose name is a word of another rule: the network failure still wins.
    [500, 'Get "http://10.1.1.1:5000/v2/denied/manifests/1": dial tcp 10.1.1.1:5000: i/o timeout', 'UNAVAILABLE'],
    [500, 'Get "https://10.1.1.1:5000/v2/": http: server gave HTTP response to HTTPS client', 'FAILED_PRECONDITION'],
    [500, 'toomanyrequests: You have reached your pull rate limit.', 'RESOURCE_EXHAUSTED'],
    [400, 'invalid reference format: repository name must be lowercase', 'INVALID_ARGUMENT'],
    [500, 'something the engine never said before', 'INTERNAL'],
  ])('answers %i "%s" with %s, in the engine\'s words, naming the reference', (status, words, code) => {
    const err = pullError(rejected(status, words), 'the/ref:1');
    expect(err.code).toBe(code);
    expect(err.message).toBe(`pulling 'the/ref:1' through the Docker engine: ${words}`);
    expect(err.retryable).toBe(code === 'UNAVAILABLE' || code === 'RESOURCE_EXHAUSTED');
  });

  it('reads an error the engine put in its progress stream after answering 200', () => {
    expect(pullError('unexpected EOF', 'a:1').code).toBe('UNAVAILABLE');
    expect(pullError('unauthorized: incorrect username or password', 'a:1').code).toBe('UNAUTHENTICATED');
    // What dockerd 20.10 says of a zstd layer: not the network's fault.
    expect(pullError('failed to register layer: ApplyLayer exit status 1 stdout:  stderr: unexpected EOF', 'a:1').code).toBe('INVALID_ARGUMENT');
  });

  it('says UNAVAILABLE when the engine itself did not answer', () => {
    const err = pullError(Object.assign(new Error('connect ENOENT /var/run/docker.sock'), { code: 'ENOENT' }), 'a:1');
    expect(err.code).toBe('UNAVAILABLE');
    expect(err.message).toMatch(/the Docker engine is unreachable \(ENOENT\)/);
  });
});
