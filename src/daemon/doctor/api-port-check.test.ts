import { describe, expect, it } from 'vitest';
import { checkApiPort } from './api-port-check.js';
import { fakeContext, fakeHost } from './fake-host.test-support.js';

describe('api port check', () => {
  it('is ok when the port is free, or port 0', async () => {
    expect(await checkApiPort(fakeContext())).toEqual({ name: 'api port', status: 'ok', detail: '127.0.0.1:8008 is free' });
    expect(await checkApiPort(fakeContext({ flags: { api: '127.0.0.1:0' } }))).toMatchObject({ status: 'ok' });
  });

  it("is ok when a prismd's health endpoint answers on it", async () => {
    let asked = '';
    const sys = fakeHost({ tryListen: async () => 'EADDRINUSE', health: async (url) => ((asked = url), { node: 'node-1', version: '0.1.0' }) });
    expect(await checkApiPort(fakeContext({ sys, flags: { api: '0.0.0.0:8008', auth: 'token' } }))).toMatchObject({ status: 'ok', detail: '0.0.0.0:8008 is served by a running prismd (node node-1, version 0.1.0)' });
    expect(asked).toBe('http://127.0.0.1:8008/api/v1/health');
  });

  it('fails when something else holds it, or it cannot be bound', async () => {
    const taken = fakeHost({ tryListen: async () => 'EADDRINUSE' });
    expect(await checkApiPort(fakeContext({ sys: taken }))).toMatchObject({ status: 'fail', detail: expect.stringContaining('is in use'), fix: expect.stringContaining('--api') });
    const low = fakeHost({ tryListen: async () => 'EACCES' });
    expect(await checkApiPort(fakeContext({ sys: low, flags: { api: '127.0.0.1:80' } }))).toMatchObject({ status: 'fail', detail: expect.stringContaining('permission denied') });
  });
});
