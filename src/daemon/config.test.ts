import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { PrismError } from '../core/errors.js';
import { DEFAULT_IMAGE, parseHostPort, resolveConfig } from './config.js';

function code(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    return e instanceof PrismError ? e.code : `not a PrismError: ${String(e)}`;
  }
  return undefined;
}

describe('parseHostPort', () => {
  it('parses host:port, IPv6 in brackets and an http(s):// prefix', () => {
    expect(parseHostPort('127.0.0.1:8008')).toEqual({ host: '127.0.0.1', port: 8008 });
    expect(parseHostPort('0.0.0.0:0')).toEqual({ host: '0.0.0.0', port: 0 });
    expect(parseHostPort('[::1]:8008')).toEqual({ host: '::1', port: 8008 });
    expect(parseHostPort('[::]:65535')).toEqual({ host: '::', port: 65535 });
    expect(parseHostPort('http://example.com:80')).toEqual({ host: 'example.com', port: 80 });
    expect(parseHostPort('https://[::1]:443')).toEqual({ host: '::1', port: 443 });
  });

  it('defaults an empty host to loopback', () => {
    expect(parseHostPort(':9000')).toEqual({ host: '127.0.0.1', port: 9000 });
  });

  it('rejects anything else with INVALID_ARGUMENT', () => {
    for (const bad of ['', 'localhost', '8008', 'host:', 'host:port', 'host:65536', 'host:123456', '::1:8008', '[::1]', 'ftp://h:1']) {
      expect(code(() => parseHostPort(bad)), bad).toBe('INVALID_ARGUMENT');
    }
  });
});

describe('resolveConfig', () => {
  it('turns direct creates on by default, off with --direct-create off or PRISM_DIRECT_CREATE=off, and refuses other values', () => {
    expect(resolveConfig({ dataDir: '/tmp/p' }, {}).directCreate).toBe(true);
    expect(resolveConfig({ dataDir: '/tmp/p', directCreate: 'off' }, {}).directCreate).toBe(false);
    expect(resolveConfig({ dataDir: '/tmp/p' }, { PRISM_DIRECT_CREATE: 'off' }).directCreate).toBe(false);
    expect(resolveConfig({ dataDir: '/tmp/p', directCreate: 'on' }, { PRISM_DIRECT_CREATE: 'off' }).directCreate).toBe(true);
    for (const bad of ['yes', '0', '']) expect(code(() => resolveConfig({ dataDir: '/tmp/p', directCreate: bad }, {})), bad).toBe('INVALID_ARGUMENT');
  });

  it('takes overcommit factors from flags or the environment, between 1 and 1000', () => {
    expect(resolveConfig({ dataDir: '/tmp/p' }, {}).capacity).toEqual({});
    expect(resolveConfig({ dataDir: '/tmp/p', cpuOvercommit: '64' }, { PRISM_MEMORY_OVERCOMMIT: '1.5' }).capacity).toEqual({ cpuOvercommit: 64, memoryOvercommit: 1.5 });
    for (const bad of ['0', '0.5', '-2', 'x', '1001']) {
      expect(code(() => resolveConfig({ dataDir: '/tmp/p', memoryOvercommit: bad }, {})), bad).toBe('INVALID_ARGUMENT');
    }
  });

  it('applies defaults (with an explicit data dir)', () => {
    const cfg = resolveConfig({ dataDir: '/tmp/prism-x' }, {});
    expect(cfg.name).toBeUndefined();
    expect(cfg.logFile).toBeUndefined();
    expect(cfg).toMatchObject({
      apiHost: '127.0.0.1',
      apiPort: 8008,
      dataDir: '/tmp/prism-x',
      imagesDir: '/tmp/prism-x/images',
      runtime: 'auto',
      logLevel: 'info',
      defaultImage: DEFAULT_IMAGE,
    });
  });

  it('falls back to PRISM_* environment variables', () => {
    const cfg = resolveConfig(
      {},
      {
        PRISM_API: '[::1]:9001',
        PRISM_DATA_DIR: '/srv/prism',
        PRISM_IMAGES_DIR: 'rel/images',
        PRISM_NAME: 'node-1',
        PRISM_RUNTIME: 'oci',
        PRISM_LOG_LEVEL: 'debug',
        PRISM_LOG_FILE: 'prism.log',
        PRISM_DEFAULT_IMAGE: 'alpine:3',
      },
    );
    expect(cfg).toMatchObject({
      apiHost: '::1',
      apiPort: 9001,
      dataDir: '/srv/prism',
      imagesDir: resolve('rel/images'),
      name: 'node-1',
      runtime: 'oci',
      logLevel: 'debug',
      logFile: resolve('prism.log'),
      defaultImage: 'alpine:3',
    });
  });

  it('prefers flags over the environment', () => {
    const cfg = resolveConfig(
      { api: '0.0.0.0:1', dataDir: '/a', runtime: 'microvm', logLevel: 'warn', name: 'flag' },
      { PRISM_API: '127.0.0.1:2', PRISM_DATA_DIR: '/b', PRISM_RUNTIME: 'oci', PRISM_LOG_LEVEL: 'error', PRISM_NAME: 'env' },
    );
    expect(cfg).toMatchObject({ apiHost: '0.0.0.0', apiPort: 1, dataDir: '/a', imagesDir: '/a/images', runtime: 'microvm', logLevel: 'warn', name: 'flag' });
  });

  it('restores microVMs from template snapshots unless turned off by flag or PRISM_MICROVM_SNAPSHOTS=0', () => {
    expect(resolveConfig({ dataDir: '/a' }, {}).microvmSnapshots).toBe(true);
    expect(resolveConfig({ dataDir: '/a' }, { PRISM_MICROVM_SNAPSHOTS: '0' }).microvmSnapshots).toBe(false);
    expect(resolveConfig({ dataDir: '/a', microvmSnapshots: false }, { PRISM_MICROVM_SNAPSHOTS: '1' }).microvmSnapshots).toBe(false);
    expect(resolveConfig({ dataDir: '/a', microvmSnapshots: true }, { PRISM_MICROVM_SNAPSHOTS: '0' }).microvmSnapshots).toBe(true);
  });

  it('reads the warm pool size from --warm-pool or PRISM_WARM_POOL, default 0', () => {
    expect(resolveConfig({ dataDir: '/a' }, {}).warmPool).toBe(0);
    expect(resolveConfig({ dataDir: '/a' }, { PRISM_WARM_POOL: '2' }).warmPool).toBe(2);
    expect(resolveConfig({ dataDir: '/a', warmPool: '3' }, { PRISM_WARM_POOL: '2' }).warmPool).toBe(3);
    for (const bad of ['-1', 'two', '1.5', '65', '']) expect(code(() => resolveConfig({ dataDir: '/a', warmPool: bad }, {}))).toBe('INVALID_ARGUMENT');
  });

  it('runs microVMs on QEMU unless --vmm / PRISM_VMM asks for Firecracker', () => {
    expect(resolveConfig({ dataDir: '/a' }, {}).vmm).toBe('qemu');
    expect(resolveConfig({ dataDir: '/a' }, { PRISM_VMM: 'firecracker' }).vmm).toBe('firecracker');
    expect(resolveConfig({ dataDir: '/a', vmm: 'qemu' }, { PRISM_VMM: 'firecracker' }).vmm).toBe('qemu');
    expect(code(() => resolveConfig({ dataDir: '/a', vmm: 'cloud-hypervisor' }, {}))).toBe('INVALID_ARGUMENT');
  });

  it('takes --firecracker-bin or PRISM_FIRECRACKER_BIN as an absolute path with --vmm firecracker, and refuses it otherwise', () => {
    const fc = { PRISM_VMM: 'firecracker' };
    expect(resolveConfig({ dataDir: '/a' }, fc).firecrackerBin).toBeUndefined();
    expect(resolveConfig({ dataDir: '/a' }, { ...fc, PRISM_FIRECRACKER_BIN: '/opt/fc' }).firecrackerBin).toBe('/opt/fc');
    expect(resolveConfig({ dataDir: '/a', firecrackerBin: 'fc' }, { ...fc, PRISM_FIRECRACKER_BIN: '/opt/fc' }).firecrackerBin).toBe(resolve('fc'));
    // It once selected Firecracker by itself: left set, it must not silently mean QEMU now.
    expect(code(() => resolveConfig({ dataDir: '/a' }, { PRISM_FIRECRACKER_BIN: '/opt/fc' }))).toBe('INVALID_ARGUMENT');
  });

  it('rejects an unknown runtime, log level or address', () => {
    expect(code(() => resolveConfig({ dataDir: '/a', runtime: 'kvm' }, {}))).toBe('INVALID_ARGUMENT');
    expect(code(() => resolveConfig({ dataDir: '/a' }, { PRISM_RUNTIME: 'OCI' }))).toBe('INVALID_ARGUMENT');
    expect(code(() => resolveConfig({ dataDir: '/a', logLevel: 'verbose' }, {}))).toBe('INVALID_ARGUMENT');
    expect(code(() => resolveConfig({ dataDir: '/a' }, { PRISM_LOG_LEVEL: 'loud' }))).toBe('INVALID_ARGUMENT');
    expect(code(() => resolveConfig({ dataDir: '/a' }, { PRISM_API: 'nope' }))).toBe('INVALID_ARGUMENT');
  });
});
