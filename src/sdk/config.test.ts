import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { connectionFromEnv } from './config.js';
import { Prism } from './index.js';

describe('connectionFromEnv', () => {
  const dir = mkdtempSync(join(tmpdir(), 'prism-sdk-cfg-'));
  const cfg = join(dir, 'config.json');
  writeFileSync(cfg, JSON.stringify({ url: 'http://10.0.0.9:8008', token: 'saved-token' }));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('prefers given values, then PRISM_* variables, then the saved login', () => {
    expect(connectionFromEnv({ PRISM_CONFIG: cfg })).toEqual({ url: 'http://10.0.0.9:8008', token: 'saved-token' });
    expect(connectionFromEnv({ PRISM_CONFIG: cfg, PRISM_TOKEN: 't2' })).toEqual({ url: 'http://10.0.0.9:8008', token: 't2' });
    expect(connectionFromEnv({ PRISM_CONFIG: cfg }, { api: 'h:1', token: 'x' })).toEqual({ url: 'h:1', token: 'x' });
  });

  it('never sends the saved token to another address', () => {
    expect(connectionFromEnv({ PRISM_CONFIG: cfg, PRISM_API: 'other:8008' })).toEqual({ url: 'other:8008' });
  });

  it('defaults to the local daemon and says which CA file it cannot read', () => {
    expect(connectionFromEnv({ PRISM_CONFIG: join(dir, 'none.json') })).toEqual({ url: '127.0.0.1:8008' });
    expect(() => connectionFromEnv({ PRISM_CONFIG: cfg, PRISM_CA: join(dir, 'missing.pem') })).toThrow(/missing\.pem/);
  });

  it('Prism.fromEnv builds a client on that connection', () => {
    expect(Prism.fromEnv({ PRISM_CONFIG: cfg }).url).toBe('http://10.0.0.9:8008');
  });
});
