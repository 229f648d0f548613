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

  it('the official e2b SDK works over HTTPS when Node trusts the CA (NODE_EXTRA_CA_CERTS), and refuses without it', () => {
    // NODE_EXTRA_CA_CERTS is read at process start: the SDK runs in a child, as a user's program would.
    const program = `
      const { Sandbox } = await import('e2b');
      const opts = { apiKey: process.env.E2B_API_KEY, apiUrl: process.env.E2B_API_URL, sandboxUrl: process.env.E2B_SANDBOX_URL, requestTimeoutMs: 60000 };
      try {
        const sbx = await Sandbox.create(opts);
        const r = await sbx.commands.run('echo over-tls');
        await sbx.files.write('/tmp/t.txt', 'tls file');
        console.log(JSON.stringify({ out: r.stdout, file: await sbx.files.read('/tmp/t.txt'), killed: await sbx.kill() }));
      } catch (e) {
        console.log(JSON.stringify({ error: String(e?.cause?.code ?? e?.cause ?? e) }));
      }`;
    const run = (extraCa: boolean) => {
      const env: NodeJS.ProcessEnv = { ...process.env, E2B_API_KEY: d.token, E2B_API_URL: `${d.url}/e2b`, E2B_SANDBOX_URL: `${d.url}/e2b/envd` };
      if (extraCa) env.NODE_EXTRA_CA_CERTS = join(d.dataDir, 'tls', 'ca.crt');
      else delete env.NODE_EXTRA_CA_CERTS;
      const r = spawnSync(process.execPath, ['--input-type=module', '-e', program], { cwd: REPO_ROOT, env, encoding: 'utf8', timeout: 120_000 });
      return JSON.parse(r.stdout.trim().split('\n').at(-1) ?? '{}') as Record<string, unknown>;
    };
    expect(run(true)).toEqual({ out: 'over-tls\n', file: 'tls file', killed: true });
    expect(String(run(false).error)).toMatch(/UNABLE_TO_VERIFY|CERT|certificate/i);
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
