import { describe, expect, it } from 'vitest';
import type { RuntimeProbeInfo } from '../../core/types.js';
import { fakeContext } from './fake-host.test-support.js';
import { checkDefaultRuntime, checkRunc, checkRuntime } from './runtime-checks.js';

const oci: RuntimeProbeInfo = { name: 'oci', usable: true, details: { runc: 'runc version 1.1.5', cgroups: 'v1 (cgroupfs)' } };
const noRunc: RuntimeProbeInfo = { name: 'oci', usable: false, reason: 'runc does not run: cannot run runc: spawn runc ENOENT', details: {} };
const vmTcg: RuntimeProbeInfo = { name: 'microvm', usable: true, details: { vmm: 'qemu', accelerator: 'tcg (kvm unusable: /dev/kvm: ENOENT)' } };
const noEngine: RuntimeProbeInfo = { name: 'docker', usable: false, reason: 'no Docker engine reachable at unix:///var/run/docker.sock (connect ENOENT)' };

describe('runc check', () => {
  it("shows the oci probe's runc version, or why runc does not run", async () => {
    expect(await checkRunc(fakeContext({ runtimes: [oci] }))).toMatchObject({ status: 'ok', detail: 'runc version 1.1.5' });
    expect(await checkRunc(fakeContext({ runtimes: [noRunc], flags: { runtime: 'oci' } }))).toMatchObject({ status: 'fail', detail: noRunc.reason, fix: expect.stringContaining('apt-get install runc') });
    expect(await checkRunc(fakeContext({ runtimes: [noRunc], flags: { runtime: 'microvm' } }))).toMatchObject({ status: 'warn' });
  });
});

describe('runtime checks', () => {
  it("give each driver's probe verdict, failing only for the runtime asked for", async () => {
    expect(await checkRuntime('oci')(fakeContext({ runtimes: [oci] }))).toEqual({ name: 'runtime oci', status: 'ok', detail: 'usable: runc runc version 1.1.5; cgroups v1 (cgroupfs)' });
    expect(await checkRuntime('oci')(fakeContext({ runtimes: [noRunc], flags: { runtime: 'oci' } }))).toMatchObject({ status: 'fail', detail: noRunc.reason });
    expect(await checkRuntime('oci')(fakeContext({ runtimes: [noRunc], flags: { runtime: 'auto' } }))).toMatchObject({ status: 'warn' });
  });

  it('treat a missing Docker engine as information unless docker is asked for or an engine is named', async () => {
    const docker = checkRuntime('docker');
    expect(await docker(fakeContext({ runtimes: [noEngine] }))).toMatchObject({ status: 'ok', detail: expect.stringMatching(/^not used/) });
    expect(await docker(fakeContext({ runtimes: [noEngine], flags: { runtime: 'docker' } }))).toMatchObject({ status: 'fail', fix: expect.stringContaining('--docker-host') });
    expect(await docker(fakeContext({ runtimes: [noEngine], flags: { dockerHost: 'unix:///run/d.sock' } }))).toMatchObject({ status: 'warn' });
    expect(await docker(fakeContext({ runtimes: [noEngine], env: { DOCKER_HOST: 'tcp://e:2375' } }))).toMatchObject({ status: 'warn' });
  });

  it('end with the default runtime prismd would pick, failing when it has none', async () => {
    expect(await checkDefaultRuntime(fakeContext({ runtimes: [oci, vmTcg, noEngine] }))).toEqual({ name: 'default runtime', status: 'ok', detail: 'oci (--runtime auto)' });
    expect(await checkDefaultRuntime(fakeContext({ runtimes: [oci, vmTcg, noEngine], flags: { runtime: 'microvm' } }))).toMatchObject({ status: 'ok', detail: 'microvm (--runtime microvm)' });
    const none = await checkDefaultRuntime(fakeContext({ runtimes: [noRunc, vmTcg, noEngine] }));
    expect(none).toMatchObject({ status: 'fail', detail: expect.stringMatching(/^no usable runtime on this host for --runtime auto \(oci: runc does not run.*; microvm: usable only without KVM/) });
  });
});
