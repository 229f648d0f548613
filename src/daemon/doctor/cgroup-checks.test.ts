import { describe, expect, it } from 'vitest';
import type { CgroupHost } from '../../runtime/cgroups/cgroups.js';
import { checkCgroupDriver, checkCgroups } from './cgroup-checks.js';
import { fakeContext, fakeHost } from './fake-host.test-support.js';

const v2 = (o: Partial<CgroupHost> = {}): CgroupHost => ({ version: 2, systemd: false, controllers: ['cpu', 'cpuset', 'io', 'memory', 'pids'], ...o });

describe('cgroups check', () => {
  it('shows the version, the controllers tasks need and the informative ones', async () => {
    expect(await checkCgroups(fakeContext())).toEqual({
      name: 'cgroups', status: 'ok', detail: 'cgroup v1: memory yes, cpu yes, pids yes (informative: cpuset yes, io yes)',
    });
    expect(await checkCgroups(fakeContext({ cgroups: v2({ controllers: ['cpu', 'memory', 'pids'], systemd: true }) }))).toEqual({
      name: 'cgroups', status: 'ok', detail: 'cgroup v2: memory yes, cpu yes, pids yes (informative: cpuset no, io no); systemd enables them in its scopes',
    });
  });

  it("reports the probe's problem: fails when the runtimes asked for all need cgroups, warns for docker", async () => {
    const cgroups = v2({ controllers: ['cpu', 'memory'], problem: 'cgroup v2 at /sys/fs/cgroup does not offer pids to Prism (...)' });
    const failed = await checkCgroups(fakeContext({ cgroups }));
    expect(failed).toMatchObject({ status: 'fail', detail: expect.stringMatching(/pids NO.*does not offer pids/), fix: expect.stringContaining('docs/doctor.md#cgroups') });
    expect(await checkCgroups(fakeContext({ cgroups, flags: { runtime: 'docker' } }))).toMatchObject({ status: 'warn' });
  });
});

describe('cgroup driver check', () => {
  const pid1 = (comm: string, stats = {}) => fakeHost({ files: { '/proc/1/comm': `${comm}\n` }, stats });

  it('is cgroupfs on v1, and on v2 without systemd', async () => {
    expect(await checkCgroupDriver(fakeContext({ sys: pid1('systemd') }))).toMatchObject({ status: 'ok', detail: expect.stringMatching(/^cgroupfs.*cgroup v1/) });
    expect(await checkCgroupDriver(fakeContext({ sys: pid1('tini'), cgroups: v2() }))).toMatchObject({ status: 'ok', detail: expect.stringContaining('PID 1 (tini) is not systemd') });
  });

  it("is systemd scopes on v2 with systemd, which needs systemd's private socket", async () => {
    const cgroups = v2({ systemd: true });
    const withSocket = pid1('systemd', { '/run/systemd/private': { kind: 'socket', mtimeMs: 0 } });
    expect(await checkCgroupDriver(fakeContext({ sys: withSocket, cgroups }))).toMatchObject({ status: 'ok', detail: expect.stringContaining('systemd scopes') });
    const without = await checkCgroupDriver(fakeContext({ sys: pid1('systemd'), cgroups, flags: { runtime: 'oci' } }));
    expect(without).toMatchObject({ status: 'fail', detail: expect.stringContaining('/run/systemd/private is missing') });
    expect(await checkCgroupDriver(fakeContext({ sys: pid1('systemd'), cgroups, flags: { runtime: 'auto' } }))).toMatchObject({ status: 'warn' });
  });
});
