import { spawnSync } from 'node:child_process';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Prism } from '../../src/sdk/index.js';
import { REPO_ROOT, call, integrationSkipReason, startPrismd, type Prismd } from '../integration/prismd-harness.js';

/** HTTPS with `--tls auto`: a private CA in the data dir; the CLI and SDK verify against it. */
const skip = integrationSkipReason();

describe.skipIf(!!skip)('TLS', () => {
  let d: Prismd;
  beforeAll(async () => {
    d = await startPrismd({ extraArgs: ['--tls', 'auto'] });
  });
  afterAll(async () => {
    await d?.dispose();
  });

  it('serves HTTPS only, with keys readable by root alone', async () => {
    expect(d.url).toMatch(/^https:/);
    expect((await call(d.url, 'GET', '/cluster/info')).status).toBe(200);
    for (const key of ['ca.key', 'node.key']) expect(statSync(join(d.dataDir, 'tls', key)).mode & 0o777).toBe(0o600);
    // Plain HTTP on the same port gets nowhere.
    const plain = await fetch(d.url.replace('https:', 'http:') + '/api/v1/health').then((r) => r.status, () => 'refused');
    expect(plain).not.toBe(200);
  });

  it('the SDK verifies the certificate: refused without the CA, works with it', async () => {
    const ca = readFileSync(join(d.dataDir, 'tls', 'ca.crt'));
    await expect(new Prism({ url: d.url, token: d.token }).clusterInfo()).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    const info = await new Prism({ url: d.url, token: d.token, ca }).clusterInfo();
    expect(info.nodesAlive).toBe(1);
    // A CA that did not sign the node's certificate is refused too.
    const otherCa = spawnSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-subj', '/CN=other', '-keyout', '/dev/null', '-days', '1'], { encoding: 'utf8' }).stdout;
    await expect(new Prism({ url: d.url, token: d.token, ca: otherCa }).clusterInfo()).rejects.toMatchObject({ code: 'UNAVAILABLE' });
  });

  it('prismctl works with --ca and fails clearly without it', () => {
    const ctl = (args: string[]) =>
      spawnSync(process.execPath, [join(REPO_ROOT, 'bin', 'prismctl.js'), '--api', d.url, ...args], {
        encoding: 'utf8',
        env: { ...process.env, PRISM_TOKEN: d.token, PRISM_CONFIG: '/nonexistent/prism.json' },
      });
    const ok = ctl(['--ca', join(d.dataDir, 'tls', 'ca.crt'), 'info']);
    expect(ok.status, ok.stderr).toBe(0);
    expect(ok.stdout).toContain('Leader');
    const bad = ctl(['info']);
    expect(bad.status).toBe(1);
    expect(bad.stderr).toMatch(/certificate/i);
  });

  it('keeps the same CA across a restart', async () => {
    const before = readFileSync(join(d.dataDir, 'tls', 'ca.crt'), 'utf8');
    d = await d.restart();
    expect(readFileSync(join(d.dataDir, 'tls', 'ca.crt'), 'utf8')).toBe(before);
    expect((await call(d.url, 'GET', '/sandboxes')).status).toBe(200);
  });
});
