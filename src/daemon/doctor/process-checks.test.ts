import { describe, expect, it } from 'vitest';
import { fakeContext, fakeHost } from './fake-host.test-support.js';
import { checkNode, checkRoot } from './process-checks.js';

describe('root check', () => {
  it('is ok as root', async () => {
    expect(await checkRoot(fakeContext())).toMatchObject({ status: 'ok' });
  });

  it('fails without root when the runtime asked for needs it (oci, microvm, auto), warns for docker, and says how', async () => {
    const sys = fakeHost({ uid: () => 1000 });
    for (const runtime of ['oci', 'microvm', 'auto']) {
      expect(await checkRoot(fakeContext({ sys, flags: { runtime } }))).toMatchObject({ status: 'fail', detail: expect.stringContaining('uid 1000'), fix: expect.stringContaining('root') });
    }
    expect(await checkRoot(fakeContext({ sys, flags: { runtime: 'docker' } }))).toMatchObject({ status: 'warn' });
  });
});

describe('node check', () => {
  const pkg = (node: string) => ({ '/opt/prism/package.json': JSON.stringify({ engines: { node } }) });

  it('compares the running Node.js with package.json engines', async () => {
    expect(await checkNode(fakeContext({ sys: fakeHost({ files: pkg('>=20.19'), nodeVersion: '20.19.0' }) }))).toMatchObject({ status: 'ok', detail: 'Node.js 20.19.0 (Prism needs >=20.19)' });
    expect(await checkNode(fakeContext({ sys: fakeHost({ files: pkg('>=20.19'), nodeVersion: '22.1.0' }) }))).toMatchObject({ status: 'ok' });
    expect(await checkNode(fakeContext({ sys: fakeHost({ files: pkg('>=20.19'), nodeVersion: '20.18.3' }) })))
      .toMatchObject({ status: 'fail', detail: expect.stringContaining('20.18.3 is older'), fix: expect.stringContaining('Node.js 20.19 or later') });
  });

  it('warns when it cannot tell', async () => {
    expect(await checkNode(fakeContext({ sys: fakeHost({ files: pkg('^20 || ^22') }) }))).toMatchObject({ status: 'warn' });
    expect(await checkNode(fakeContext())).toMatchObject({ status: 'warn' });
  });
});
